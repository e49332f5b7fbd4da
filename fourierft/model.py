"""Putting FourierFT layers into a model, and taking them out again."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
from torch import nn

from .config import FourierFTConfig
from .entries import sample_entries
from .layer import FourierFTLayer
from .targets import describe_names, find_modules, is_suffix, matches_regex_suffix, resolve_targets
from .wrapped import SUPPORTED, check_path, layer_shape


def n_for(name: str, config: FourierFTConfig) -> int:
    """The n of module `name`: its n_pattern entry (keys as PEFT's n_frequency_pattern), else config.n."""
    for key, n in config.n_pattern.items():
        if matches_regex_suffix(name, key):
            return n
    return config.n


def fused_blocks(name: str, d_out: int, d_in: int, config: FourierFTConfig) -> Optional[list[tuple[int, int]]]:
    """(first row, rows) of each adapted part when `name` is a fused projection in config.fused, else None. The
    parts of a fused projection (q, k, v of GPT-2's c_attn or timm's qkv) are d_in rows each: a module that is not
    fused (d_out = d_in), or a split into the wrong number of parts (two for a three-way projection, which would
    adapt q plus half of k), is refused."""
    parts = next((v for k, v in config.fused.items() if is_suffix(name, k)), None)
    if parts is None:
        return None
    if d_out != len(parts) * d_in:
        count = d_out // d_in
        fits = (f"{count} part{'s' * (count != 1)} of {d_in} rows" if d_out % d_in == 0
                else "no whole number of d_in-row parts")
        raise ValueError(f"config.fused gives {name!r} the {len(parts)} parts {parts}, but its {d_out} output rows "
                         f"hold {fits} (d_in={d_in}): "
                         + ("it is not a fused projection; remove it from config.fused" if d_out == d_in else
                            "name one part per d_in rows, in their order (GPT-2's c_attn: [q, k, v])"))
    size = d_out // len(parts)
    return [(i * size, size) for i, part in enumerate(parts) if part in config.fused_targets]


def apply_fourierft(model: nn.Module, config: FourierFTConfig,
                    entries: Optional[dict[str, torch.Tensor]] = None) -> nn.Module:
    """Freeze `model`, wrap each targeted module in a FourierFTLayer, and leave modules_to_save trainable.

    Layers of one shape (and n) share one entry draw, as in the paper.

    Args:
        model: any torch model whose targets are torch.nn.Linear or transformers' Conv1D (GPT-2).
        config: the adapter's hyperparameters (FourierFTConfig).
        entries: {module name: (2, n) int tensor} to use instead of drawing (what load_adapter passes).

    Returns:
        The same model, modified in place, with `model.fourierft_config` set.

    Raises:
        ValueError: the model already has FourierFT layers, nothing matches target_modules or modules_to_save,
            or n does not fit a layer. TypeError: a target is neither Linear nor Conv1D.
    """
    if any(isinstance(m, FourierFTLayer) for m in model.modules()):
        raise ValueError("this model already has FourierFT layers; unload() it first")
    targets = resolve_targets(model, config.target_modules)
    unused = [key for key in config.n_pattern if not any(matches_regex_suffix(name, key) for name in targets)]
    if unused:
        raise ValueError(f"n_pattern keys {unused} match none of the adapted modules: {describe_names(targets)}")
    if config.fused and not any(is_suffix(name, key) for key in config.fused for name in targets):
        # one config may name the fused projections of several architectures; naming none of this one's is a typo
        raise ValueError(f"fused keys {sorted(config.fused)} match none of the adapted modules (misspelt, or not in "
                         f"target_modules): {describe_names(targets)}")
    for name in targets:
        module = model.get_submodule(name)
        if not isinstance(module, SUPPORTED):
            raise TypeError(f"module {name!r} is a {type(module).__name__}; FourierFT supports "
                            f"torch.nn.Linear and transformers' Conv1D. Narrow target_modules.")
    for p in model.parameters():
        p.requires_grad_(False)
    drawn: dict[tuple, torch.Tensor] = {}  # layers (or parts) of one shape and n share their entries

    def draw(d_out: int, d_in: int, n: int, name: str) -> torch.Tensor:
        if (d_out, d_in, n) not in drawn:
            if n > d_out * d_in:
                raise ValueError(f"n={n} exceeds the {d_out}x{d_in}={d_out * d_in} spectrum of {name!r}")
            drawn[d_out, d_in, n] = sample_entries(d_out, d_in, n, config.entry_seed, config.fc, config.bandwidth)
        return drawn[d_out, d_in, n]

    for name in targets:
        module = model.get_submodule(name)
        d_out, d_in = layer_shape(module)
        n = n_for(name, config)
        blocks = fused_blocks(name, d_out, d_in, config)
        if entries is not None and name in entries:
            layer_entries = entries[name]
        elif blocks:
            layer_entries = torch.cat([draw(size, d_in, n, name) for _, size in blocks], dim=1)
        else:
            layer_entries = draw(d_out, d_in, n, name)
        try:
            layer = FourierFTLayer(module, layer_entries, config.scaling, config.init, config.path, blocks=blocks,
                                   basis=config.basis, basis_seed=config.basis_seed)
        except ValueError as e:
            raise ValueError(f"module {name!r}: {e}") from None
        set_module(model, name, layer)
    for name in modules_to_save(model, config):
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    if config.bias == "all":
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.requires_grad_(True)
    model.fourierft_config = config
    return model


def modules_to_save(model: nn.Module, config: FourierFTConfig) -> list[str]:
    """Names of the modules config.modules_to_save selects (suffixes); each key must match something."""
    names = []
    for key in config.modules_to_save or []:
        hits = find_modules(model, [key])
        if not hits:
            raise ValueError(f"modules_to_save entry {key!r} matches no module of {type(model).__name__}")
        names += hits
    return names


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fourierft_layers(model: nn.Module) -> Iterator[tuple[str, FourierFTLayer]]:
    """(module name, FourierFTLayer) for every FourierFT layer of `model`, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, FourierFTLayer):
            yield name, module


def merge(model: nn.Module, dequantize: bool = False) -> nn.Module:
    """Add every dW into its frozen weight (inference at base speed); undo with unmerge. Quantized base layers are
    refused unless `dequantize` (they become float Linears holding dequantize(W) + dW)."""
    for _, layer in fourierft_layers(model):
        layer.merge(dequantize)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Subtract every merged dW from its frozen weight again (training or saving can go on)."""
    for _, layer in fourierft_layers(model):
        layer.unmerge()
    return model


def unload(model: nn.Module, merge_weights: bool = True, dequantize: bool = False) -> nn.Module:
    """Return the plain base model (dW merged in unless merge_weights=False), without wrappers; merging into a
    quantized base needs `dequantize` (see merge)."""
    for name, layer in list(fourierft_layers(model)):
        if merge_weights:
            layer.merge(dequantize)
        else:
            layer.unmerge()
        set_module(model, name, layer.base_layer)
    if hasattr(model, "fourierft_config"):
        del model.fourierft_config
    return model


def set_path(model: nn.Module, path: str) -> nn.Module:
    """Force every layer onto one compute path ("auto", "dense", "merged", "spectral")."""
    from .config import PATHS

    if path not in PATHS:
        raise ValueError(f"path={path!r} is not one of {PATHS}")
    layers = list(fourierft_layers(model))
    for _, layer in layers:  # every layer checked before any changes
        check_path(path, layer.base_layer)
    for _, layer in layers:
        layer.path = path
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts as PEFT counts them; FourierFT entries are buffers, not parameters. A
    bitsandbytes 4-bit weight stores two values per byte of its storage type, so it counts 2 x (bytes per storage
    element) per stored element, not one."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(_logical_size(p) for p in model.parameters())
    return trainable, total


def _logical_size(p: torch.Tensor) -> int:
    if type(p).__name__ == "Params4bit":
        return p.numel() * 2 * p.element_size()
    return p.numel()


def summary(model: nn.Module) -> str:
    """One line: trainable and total parameter counts and the trainable share, as PEFT prints it."""
    trainable, total = trainable_parameters(model)
    share = 100 * trainable / max(total, 1)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {share:.4f}"
