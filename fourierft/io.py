"""Adapter files: fourierft_adapter.json + adapter.safetensors, written atomically, checked on load. The config file's
name is our own: PEFT's loaders read adapter_config.json, and a folder of ours never passes for one of theirs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .config import FourierFTConfig
from .files import atomic_path, write_atomic
from .model import apply_fourierft, fourierft_layers, unload
from .reader import (
    CONFIG_NAME,
    FORMAT,
    LEGACY_CONFIG_NAME,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    VERSION,
    WEIGHTS_NAME,
    AdapterFile,
    base_name_or_path,
    config_file,
    described_sha256,
    file_sha256,
    has_ours,
    is_ours,
    peft_type,
    read,
    trained_in_full,
)


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
    path = Path(path)
    refuse_other_format(path, "fourierft")
    tensors = adapter_tensors(model)
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{len(bad)} tensors hold NaN or inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}):"
                         " training diverged; the adapter was not saved")
    tensors = _dedupe_entries(tensors)
    # weights first, then the config that certifies them: a kill in between leaves a sha256 mismatch, never a
    # config describing weights it was not written with
    with atomic_path(path / WEIGHTS_NAME) as weights_tmp:
        save_file(tensors, str(weights_tmp), metadata={"format": FORMAT})
        digest, size = file_sha256(weights_tmp), weights_tmp.stat().st_size
    meta = {"format": FORMAT, "version": VERSION, "config": model.fourierft_config.to_dict(),
            "base_model": base_identity(model), "sha256": digest, "adapter_bytes": size}
    meta["config_sha256"] = described_sha256(meta)
    write_atomic(path / CONFIG_NAME, json.dumps(meta, indent=2))
    legacy = path / LEGACY_CONFIG_NAME
    if legacy.is_file() and is_ours(legacy):
        legacy.unlink()  # an older save of ours in the same folder: one config file, not two
    return adapter_bytes(path)


def _dedupe_entries(tensors: dict) -> dict:
    """Layers sharing an entry set store it once; the others point at it through 'entries@'."""
    seen: dict[bytes, str] = {}
    out = {}
    for key, t in tensors.items():
        if key.startswith("entries/"):
            digest = hashlib.sha256(t.numpy().tobytes() + str(tuple(t.shape)).encode()).digest()
            if digest in seen:
                # a 0-element int tensor whose key names the layer holding the shared entries
                out[f"entries@{key[len('entries/'):]}@{seen[digest]}"] = torch.zeros(0, dtype=torch.int32)
                continue
            seen[digest] = key[len("entries/"):]
        out[key] = t
    return out


def adapter_bytes(path: str | Path) -> int:
    """The size on disk of the adapter folder `path`: its config file and its weights, in bytes."""
    path = Path(path)
    return sum((path / f).stat().st_size for f in (config_file(path).name, WEIGHTS_NAME))


def refuse_other_format(path: Path, writing: str) -> None:
    """Writing one format into a folder that holds the other would leave two adapters there: refused, named."""
    if writing == "fourierft" and (peft_type(path) or (path / PEFT_WEIGHTS).is_file()):
        raise ValueError(f"{path} holds a PEFT adapter ({PEFT_CONFIG}, {PEFT_WEIGHTS}): save_adapter would put a "
                         "second adapter beside it, and readers would disagree on which the folder holds; save into "
                         "another folder, or remove those files first")
    if writing == "peft" and (has_ours(path) or (path / WEIGHTS_NAME).is_file()):
        raise ValueError(f"{path} holds a fourierft adapter ({CONFIG_NAME}, {WEIGHTS_NAME}): export_peft would put "
                         "a second adapter beside it, and readers would disagree on which the folder holds; export "
                         "into another folder, or remove those files first")


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
    """Wrap a plain base model with the adapter `file` holds (read and checked by fourierft.reader.read): its
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
