"""A fused projection (GPT-2's c_attn: one Conv1D computing q, k and v) rebuilt as one nn.Linear per part, so that
PEFT methods can adapt single parts, as the LoRA paper adapted q and v inside c_attn (its MergedLinear with
enable_lora=[True, False, True]). The rebuilt module's output is the fused module's, part after part."""
from __future__ import annotations

import torch
from torch import nn

from fourierft.targets import is_suffix


class SplitProjection(nn.Module):
    """The parts of a fused projection as separate Linear layers, named by part; forward concatenates them."""

    def __init__(self, fused: nn.Module, parts: list[str]):
        super().__init__()
        weight = fused.weight.detach()
        if type(fused).__name__ == "Conv1D":  # transformers' Conv1D keeps (d_in, d_out)
            weight = weight.t()
        elif not isinstance(fused, nn.Linear):
            raise TypeError(f"{type(fused).__name__} is not a Linear or GPT-2 Conv1D: cannot split it into parts")
        d_out, d_in = weight.shape
        if d_out != len(parts) * d_in:  # the parts of a fused projection are d_in rows each
            raise ValueError(f"a projection of {d_out} outputs from {d_in} inputs is not {len(parts)} parts {parts} "
                             f"of {d_in} rows each: not a fused projection of these parts")
        self.parts = list(parts)
        size = d_out // len(parts)
        bias = getattr(fused, "bias", None)
        for i, part in enumerate(self.parts):
            linear = nn.Linear(d_in, size, bias=bias is not None, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(weight[i * size:(i + 1) * size])
                if bias is not None:
                    linear.bias.copy_(bias.detach()[i * size:(i + 1) * size])
            linear.weight.requires_grad_(fused.weight.requires_grad)
            self.add_module(part, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, part)(x) for part in self.parts], dim=-1)


def split_fused(model: nn.Module, fused: dict[str, list[str]], targets: list[str], adapt: list[str]) -> list[str]:
    """Replace each targeted fused module of `model` by a SplitProjection; return the targets with each fused name
    replaced by its adapted parts (`c_attn` -> `c_attn.q`, `c_attn.v`)."""
    unknown = [p for p in adapt if not any(p in parts for parts in fused.values())]
    if unknown:
        raise ValueError(f"parts {unknown} are not parts of the model's fused projections {fused}")
    for key, parts in fused.items():
        if key not in targets:
            continue
        found = [name for name, _ in model.named_modules() if is_suffix(name, key)]
        if not found:
            raise ValueError(f"no module of the model is named {key!r} (a fused projection of the model's config)")
        for name in found:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, SplitProjection(getattr(parent, child), parts))
    out = []
    for target in targets:
        out += [f"{target}.{p}" for p in fused[target] if p in adapt] if target in fused else [target]
    return out
