"""A frozen Linear / Conv1D seen as a (d_out, d_in) matrix: what the training layer (FourierFTLayer) and the served
layer (fourierft.serving) share: the supported types, the shape, the weight as (d_out, d_in) (a view for Conv1D,
dequantized for a 4-bit weight), the plan of an entry set, and the output with a dW added."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BlockPlan, make_plan
from .entries import check_entries
from .plan import Plan

try:  # transformers is optional: only needed to recognise GPT-2's Conv1D
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = None

SUPPORTED = (nn.Linear,) + ((Conv1D,) if Conv1D is not None else ())


def is_quantized(module: nn.Module) -> bool:
    """A layer whose weight is packed (bitsandbytes Linear4bit / Linear8bitLt): its forward works, its weight is not
    a (d_out, d_in) float matrix that dW could be added to."""
    weight = module.weight
    return not weight.is_floating_point() or hasattr(weight, "quant_state") or hasattr(weight, "SCB")


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The (d_out, d_in) float weight a bitsandbytes 4-bit layer computes with now (the only packed format
    dequantized here), also after bitsandbytes has repacked it for its CPU kernel."""
    weight = module.weight
    if hasattr(weight, "quant_state"):
        import bitsandbytes.functional as bnbf

        data, state = weight.data, weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            data, state = _canonical_4bit(data, state)
        return bnbf.dequantize_4bit(data, state)
    raise TypeError(f"cannot dequantize a {type(module).__name__} weight of dtype {weight.dtype} (bitsandbytes 4-bit "
                    "layers only)")


def _canonical_4bit(data: torch.Tensor, state):
    """A 4-bit weight that bitsandbytes' CPU backend repacked on its first forward (with an AVX512-BF16 CPU), back in
    the layout dequantize_4bit reads; the layer itself is left as it is. bitsandbytes' own inverse puts the 4-bit
    codes back in place, but leaves a non-nested absmax transposed (wrong rows when a row spans several blocks) and
    re-quantizes a nested one, so the absmax is taken here as the packed kernel uses it: bf16, one per block."""
    import copy

    import bitsandbytes.functional as bnbf

    packed_absmax = state.absmax
    codes, _ = bnbf._convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
    canonical = bnbf.QuantState(absmax=packed_absmax.t().reshape(-1).float(), shape=state.shape, code=state.code,
                                blocksize=state.blocksize, quant_type=state.quant_type,
                                dtype=getattr(state, "original_dtype", torch.float32))
    return codes, canonical


def check_path(path: str, base_layer: nn.Module) -> None:
    """Refuse the merged path over a packed weight (it adds dW to the weight inside one GEMM)."""
    if path == "merged" and is_quantized(base_layer):
        raise ValueError("path='merged' adds dW to the weight in one GEMM, which a quantized base layer "
                         f"({type(base_layer).__name__}) cannot do; use path='auto', 'dense' or 'spectral'")


def layer_shape(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of a supported layer; Conv1D stores its weight as (d_in, d_out)."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if Conv1D is not None and isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return d_out, d_in
    raise TypeError(f"unsupported module type {type(module).__name__}")


def check_layer_entries(entries: torch.Tensor, d_out: int, d_in: int, blocks: Optional[list] = None) -> None:
    """Entries that fit a d_out x d_in layer's spectrum (each fused part's, with `blocks`), else a ValueError."""
    rows, parts = (blocks[0][1], len(blocks)) if blocks else (d_out, 1)
    check_entries(entries, rows, d_in, parts)


class WrappedLayer(nn.Module):
    """Base of the layers that wrap a frozen `base_layer` (Linear or Conv1D, float or bitsandbytes-packed)."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.d_out, self.d_in = layer_shape(base_layer)
        self.transposed = not isinstance(base_layer, nn.Linear)
        self.quantized = is_quantized(base_layer)

    def weight_view(self) -> torch.Tensor:
        """The frozen weight as (d_out, d_in), a view (no copy) for Conv1D; dequantized (a copy) when quantized."""
        if self.quantized:
            return dequantized_weight(self.base_layer)
        w = self.base_layer.weight
        return w.t() if self.transposed else w

    def plan_for(self, entries: torch.Tensor, blocks: Optional[list] = None, basis: str = "fourier",
                 basis_seed: int = 0) -> Plan:
        """The plan of an entry set on this layer: one spectrum, or a fused projection's parts (`blocks`)."""
        if blocks:
            return BlockPlan(entries, self.d_out, self.d_in, blocks, basis, basis_seed)
        return make_plan(entries, self.d_out, self.d_in, basis, basis_seed)

    def with_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The base layer's output plus delta x (the reference formula; beside a packed weight the only way)."""
        return self.base_layer(x) + F.linear(x, delta.to(x.dtype))

    def through(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x through W + delta in one GEMM (no gradient to either: inference); beside a packed weight, with_delta."""
        if self.quantized:
            return self.with_delta(x, delta)
        w = self.weight_view()
        return F.linear(x.to(w.dtype), w + delta.to(w.dtype), self.base_layer.bias)
