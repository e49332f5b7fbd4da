"""Putting FourierFT layers into a model, and taking them out again: apply_fourierft, merge, unmerge, unload, and
save_adapter / load_adapter (the folder's format is fourierft/adapter.py's)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .adapter import AdapterFile, base_name_or_path, read, trained_in_full, write_adapter
from .config import FourierFTConfig
from .entries import sample_entries
from .layer import FourierFTLayer
from .targets import (
    describe_names,
    fused_blocks,
    is_suffix,
    matches_regex_suffix,
    modules_to_save,
    n_for,
    resolve_targets,
)
from .wrapped import SUPPORTED, check_path, layer_shape


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


# adapter folders (fourierft/adapter.py holds the format): what save_adapter gathers, what load_adapter applies
def base_identity(model: nn.Module) -> dict:
    """What an adapter must find again in the model it is loaded into."""
    layers = {name: [layer.d_out, layer.d_in] for name, layer in fourierft_layers(model)}
    return {"class": type(model).__name__, "name_or_path": base_name_or_path(model), "layers": layers}


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Coefficients per layer, entries once per distinct entry set, and modules_to_save / bias params."""
    config: FourierFTConfig = model.fourierft_config
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in fourierft_layers(model):
        tensors[f"coefficients/{name}"] = layer.coefficients.detach().float().cpu().contiguous()
        tensors[f"entries/{name}"] = layer.entries.to(torch.int32).cpu().contiguous()
    params = dict(model.named_parameters())
    for pname in trained_in_full(model, config):
        tensors[f"trained/{pname}"] = params[pname].detach().cpu().contiguous()
    return tensors


def save_adapter(model: nn.Module, path: str | Path) -> int:
    """Write the adapter folder: adapter.safetensors (coefficients, entries once per distinct set, modules_to_save)
    and fourierft_adapter.json (config, base model identity, the weights' sha256).

    Args:
        model: a model prepared with apply_fourierft (not merged).
        path: the folder (created when missing); earlier files there are replaced atomically.

    Returns:
        The adapter's size in bytes.
    """
    if not hasattr(model, "fourierft_config"):
        raise ValueError("save_adapter needs a model prepared with apply_fourierft")
    if any(layer.merged for _, layer in fourierft_layers(model)):
        raise ValueError("unmerge(model) before save_adapter: merged weights hide the trained coefficients")
    return write_adapter(Path(path), adapter_tensors(model), model.fourierft_config, base_identity(model))


def load_adapter(model: nn.Module, path: str | Path, check_base: bool = True) -> nn.Module:
    """Load an adapter folder written by save_adapter.

    Args:
        model: the base model the adapter was trained on. A model already wrapped (or merged) is first unloaded
            without merging, so that the file's alpha, layers and modules_to_save apply, not the model's own.
        path: the adapter folder.
        check_base: compare the base checkpoint's name (config.name_or_path, last path component) with the one
            recorded at save time; False loads into another checkpoint of the same shapes on purpose.

    Returns:
        The model, with the adapter's entries, coefficients and trained modules.

    Raises:
        FileNotFoundError / ValueError: not an adapter folder, corrupted (sha256), or saved for another base model
            (class, module names or shapes differ).
    """
    file = read(model, path, formats=("fourierft",), check_base=check_base)
    if hasattr(model, "fourierft_config"):
        layers = list(fourierft_layers(model))
        if any(layer.merged and layer.base_layer.weight.dtype != torch.float32 for _, layer in layers):
            raise ValueError("this model has merged FourierFT layers in reduced precision, where unmerging is not "
                             "exact: load the adapter into the plain base model instead")
        unload(model, merge_weights=False)
    return adapt(model, file)


def adapt(model: nn.Module, file: AdapterFile) -> nn.Module:
    """Wrap a plain base model with the adapter `file` holds (read and checked by `read`): its
    entries, coefficients and trained tensors."""
    try:
        apply_fourierft(model, file.config, entries=file.entries)
    except ValueError as e:
        edited = "; the file was edited or is corrupted" if file.layers is not None else ""
        raise ValueError(f"{file.source}: {e}{edited}") from None
    layers = dict(fourierft_layers(model))
    found = {name: [layer.d_out, layer.d_in] for name, layer in layers.items()}
    if file.layers is not None and found != file.layers:
        raise ValueError(f"{file.source} targets modules {_describe(file.layers)} but this model's FourierFT layers "
                         f"are {_describe(found)}")
    return copy_trained(model, {name: file.coefficients.get(name) for name in layers}, file.trained, file.source)


def copy_trained(model: nn.Module, coefficients: dict, trained: dict, source: str) -> nn.Module:
    """Copy saved coefficients ({layer name: tensor or None}) and trained parameters ({parameter name: tensor}) into
    a model already wrapped with the matching layers; a missing or misshapen tensor is an error naming `source`."""
    layers = dict(fourierft_layers(model))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, layer in layers.items():
            coef = coefficients.get(name)
            if coef is None or coef.shape != layer.coefficients.shape:
                got = "none" if coef is None else f"shape {tuple(coef.shape)}"
                raise ValueError(f"{source} has no coefficients of {layer.n} for {name!r} (found {got}): the file is "
                                 "incomplete, was edited, or was saved for another base model")
            layer.coefficients.copy_(coef)
        for pname, t in trained.items():
            if pname not in params or params[pname].shape != t.shape:
                raise ValueError(f"{source} holds {pname} {tuple(t.shape)}, which this {type(model).__name__} lacks "
                                 "or shapes differently")
            params[pname].copy_(t)
    return model


def _describe(layers: dict) -> str:
    items = list(layers.items())
    text = ", ".join(f"{n} {s}" for n, s in items[:4])
    return text + (f", ... ({len(items)} in all)" if len(items) > 4 else "") if items else "(none)"
