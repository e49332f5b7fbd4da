"""Adapter files: fourierft_adapter.json + adapter.safetensors, written atomically, checked on load. The config file's
name is our own: PEFT's loaders read adapter_config.json, and a folder of ours never passes for one of theirs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import FourierFTConfig
from .files import atomic_path, write_atomic
from .model import apply_fourierft, fourierft_layers, modules_to_save, unload
from .targets import is_within

FORMAT = "fourierft-adapter"
VERSION = 1
CONFIG_NAME = "fourierft_adapter.json"
LEGACY_CONFIG_NAME = "adapter_config.json"  # what format version 1 called it before; still read
WEIGHTS_NAME = "adapter.safetensors"
PEFT_CONFIG = "adapter_config.json"  # a PEFT folder's files (fourierft.peft_interop reads and writes them)
PEFT_WEIGHTS = "adapter_model.safetensors"


def base_identity(model: nn.Module) -> dict:
    """What an adapter must find again in the model it is loaded into."""
    layers = {name: [layer.d_out, layer.d_in] for name, layer in fourierft_layers(model)}
    return {"class": type(model).__name__, "name_or_path": base_name_or_path(model), "layers": layers}


def base_name_or_path(model: nn.Module):
    """The hub id or folder a Hugging Face model was loaded from (None when unknown)."""
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def trained_in_full(model: nn.Module, config: FourierFTConfig) -> list[str]:
    """The parameters an adapter with `config` trains in full: those of its modules_to_save, and every bias with
    bias="all". An adapter file holds these and nothing else of the base model."""
    extra = set(modules_to_save(model, config))
    return [pname for pname, _ in model.named_parameters()
            if any(is_within(pname.rpartition(".")[0], m) for m in extra)
            or (config.bias == "all" and pname.endswith("bias"))]


def check_declared(model: nn.Module, config: FourierFTConfig, trained: dict, source: str) -> None:
    """Refuse trained tensors for parameters the adapter does not declare (trained_in_full): an edited file could
    otherwise overwrite any weight of the base model."""
    def unwrapped(name: str) -> str:  # a layer's bias as saved from a wrapped model, read into a plain one
        return name.replace(".base_layer.", ".")

    declared = {unwrapped(n) for n in trained_in_full(model, config)}
    undeclared = sorted(k for k in trained if unwrapped(k) not in declared)
    if undeclared:
        raise ValueError(f"{source} holds trained tensors for {', '.join(undeclared[:3])}"
                         f"{', ...' if len(undeclared) > 3 else ''}, outside what the adapter declares it trains "
                         f"(modules_to_save={config.modules_to_save}, bias={config.bias!r}): the file was edited, or "
                         "is not an adapter of this model")


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


def save_adapter(model: nn.Module, path) -> int:
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
        digest, size = _sha256(weights_tmp), weights_tmp.stat().st_size
    meta = {"format": FORMAT, "version": VERSION, "config": model.fourierft_config.to_dict(),
            "base_model": base_identity(model), "sha256": digest, "adapter_bytes": size}
    meta["config_sha256"] = _described_sha256(meta)
    write_atomic(path / CONFIG_NAME, json.dumps(meta, indent=2))
    legacy = path / LEGACY_CONFIG_NAME
    if legacy.is_file() and _is_ours(legacy):
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


def adapter_bytes(path) -> int:
    path = Path(path)
    return sum((path / f).stat().st_size for f in (_config_file(path).name, WEIGHTS_NAME))


def _json_object(file: Path):
    """The JSON object a file holds, or None (unreadable, not JSON, not an object)."""
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_ours(file: Path) -> bool:
    return (_json_object(file) or {}).get("format") == FORMAT


def peft_type(path: Path):
    """The peft_type of a PEFT adapter folder (its adapter_config.json), else None."""
    file = Path(path) / PEFT_CONFIG
    return (_json_object(file) or {}).get("peft_type") if file.is_file() else None


def _has_ours(path: Path) -> bool:
    legacy = path / LEGACY_CONFIG_NAME
    return (path / CONFIG_NAME).is_file() or (legacy.is_file() and _is_ours(legacy))


def folder_format(path) -> str:
    """"fourierft" (save_adapter's files) or "peft" (a PEFT adapter_config.json): which adapter a folder holds. A
    folder with both is refused: each reader would take another of the two adapters."""
    path = Path(path)
    ours, peft = _has_ours(path), peft_type(path)
    if ours and peft:
        raise ValueError(f"{path} holds two adapters, one of fourierft ({CONFIG_NAME}, {WEIGHTS_NAME}) and one of "
                         f"PEFT ({PEFT_CONFIG}, {PEFT_WEIGHTS}): readers would disagree on which it is; move one "
                         "of them to a folder of its own")
    if peft:
        return "peft"
    return "fourierft"


def refuse_other_format(path: Path, writing: str) -> None:
    """Writing one format into a folder that holds the other would leave two adapters there: refused, named."""
    if writing == "fourierft" and (peft_type(path) or (path / PEFT_WEIGHTS).is_file()):
        raise ValueError(f"{path} holds a PEFT adapter ({PEFT_CONFIG}, {PEFT_WEIGHTS}): save_adapter would put a "
                         "second adapter beside it, and readers would disagree on which the folder holds; save into "
                         "another folder, or remove those files first")
    if writing == "peft" and (_has_ours(path) or (path / WEIGHTS_NAME).is_file()):
        raise ValueError(f"{path} holds a fourierft adapter ({CONFIG_NAME}, {WEIGHTS_NAME}): export_peft would put "
                         "a second adapter beside it, and readers would disagree on which the folder holds; export "
                         "into another folder, or remove those files first")


def _config_file(path: Path) -> Path:
    """The folder's config file: ours, else a version-1 adapter_config.json of ours. A PEFT folder, or none at all, is
    an error that says which it is and what to use."""
    if folder_format(path) == "peft":
        kind = peft_type(path)
        if kind == "FOURIERFT":
            raise ValueError(f"{path} holds a PEFT FourierFT adapter ({PEFT_CONFIG}): load it with "
                             "fourierft.import_peft(model, folder)")
        raise ValueError(f"{path} holds a PEFT {kind} adapter ({PEFT_CONFIG}), which fourierft does not read (it "
                         "reads FourierFT adapters: its own, and PEFT's FOURIERFT through fourierft.import_peft); "
                         "load it with PEFT itself: peft.PeftModel.from_pretrained(model, folder)")
    if (path / CONFIG_NAME).is_file():
        return path / CONFIG_NAME
    if (path / LEGACY_CONFIG_NAME).is_file():
        return path / LEGACY_CONFIG_NAME
    raise FileNotFoundError(f"{path} is not a FourierFT adapter folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")


def _described_sha256(meta: dict) -> str:
    """sha256 of what the config file says about the weights (config, base model, weights' digest)."""
    described = {k: meta.get(k) for k in ("format", "version", "config", "base_model", "sha256")}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_adapter(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Parse and verify an adapter folder: (metadata, tensors with shared entries expanded)."""
    path = Path(path)
    cfg_file, weights = _config_file(path), path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{path} is not a FourierFT adapter folder: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        meta = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}); the adapter is corrupted") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        peft = isinstance(meta, dict) and meta.get("peft_type")
        hint = " (a PEFT adapter: use fourierft.import_peft)" if peft else ""
        raise ValueError(f"{cfg_file} is not a {FORMAT} file{hint}")
    missing = [k for k in ("version", "config", "base_model", "sha256") if k not in meta]
    if missing:
        raise ValueError(f"{cfg_file} lacks {', '.join(missing)}: the adapter is corrupted or was not written by "
                         "fourierft.save_adapter")
    version = meta["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        integer = isinstance(version, int) and not isinstance(version, bool)
        kind = "" if integer else f" (a JSON {type(version).__name__})"
        raise ValueError(f"{cfg_file}: adapter format version {version!r}{kind} is not one this library reads (the "
                         f"integers 1 to {VERSION}); a newer fourierft wrote it, or the file was edited")
    base = meta["base_model"]
    if not (isinstance(base, dict) and isinstance(base.get("class"), str) and isinstance(base.get("layers"), dict)):
        raise ValueError(f"{cfg_file}: base_model must record the model class and its layers, got {base!r}")
    if "config_sha256" not in meta:  # every version this library reads writes it: its absence is an edit
        raise ValueError(f"{cfg_file} lacks config_sha256, which save_adapter always writes: the file was edited, and "
                         "an edited alpha, n or entry seed would load silently wrong, so it is refused; save the "
                         "adapter again")
    if meta["config_sha256"] != _described_sha256(meta):
        raise ValueError(f"{cfg_file} was edited after it was saved (its config_sha256 no longer matches): an edited "
                         "alpha, n or entry seed would load silently wrong, so it is refused; save the adapter again")
    digest = _sha256(weights)
    if digest != meta.get("sha256"):
        raise ValueError(f"{weights} is truncated or corrupted: its sha256 {digest[:12]}... does not match "
                         f"the {meta.get('sha256', '')[:12]}... recorded when it was saved")
    raw = load_file(str(weights))
    bad = [k for k, t in raw.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{weights} holds NaN or inf in {', '.join(bad[:3])}: refusing to load a diverged adapter")
    tensors = {}
    for key, t in raw.items():
        if key.startswith("entries@"):
            _, layer, owner = key.split("@")
            tensors[f"entries/{layer}"] = raw[f"entries/{owner}"]
        else:
            tensors[key] = t
    return meta, tensors


def load_adapter(model: nn.Module, path, check_base: bool = True) -> nn.Module:
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
    meta, tensors = read_adapter(path)
    config = FourierFTConfig.from_dict(meta["config"])
    expected = meta["base_model"]
    if type(model).__name__ != expected["class"]:
        raise ValueError(f"adapter {path} was saved for a {expected['class']}, not a {type(model).__name__}")
    recorded, ours = _checkpoint_name(expected.get("name_or_path")), _checkpoint_name(base_name_or_path(model))
    if check_base and recorded and ours and recorded != ours:
        raise ValueError(f"adapter {path} was trained on {expected['name_or_path']!r}, but this model was loaded from "
                         f"{base_name_or_path(model)!r}; load_adapter(..., check_base=False) if that is intended")
    entries = {k[len("entries/"):]: v.long() for k, v in tensors.items() if k.startswith("entries/")}
    if hasattr(model, "fourierft_config"):
        layers = list(fourierft_layers(model))
        if any(layer.merged and layer.base_layer.weight.dtype != torch.float32 for _, layer in layers):
            raise ValueError("this model has merged FourierFT layers in reduced precision, where unmerging is not "
                             "exact: load the adapter into the plain base model instead")
        unload(model, merge_weights=False)
    _check_shapes(model, expected["layers"], path)
    try:
        apply_fourierft(model, config, entries=entries)
    except ValueError as e:
        raise ValueError(f"adapter {path}: {e}; the file was edited or is corrupted") from None
    layers = dict(fourierft_layers(model))
    found = {name: [layer.d_out, layer.d_in] for name, layer in layers.items()}
    if found != expected["layers"]:
        raise ValueError(f"adapter {path} targets modules {_describe(expected['layers'])} but this model's "
                         f"FourierFT layers are {_describe(found)}")
    coefficients = {name: tensors.get(f"coefficients/{name}") for name in layers}
    trained = {key[len("trained/"):]: t for key, t in tensors.items() if key.startswith("trained/")}
    return copy_trained(model, coefficients, trained, f"adapter {path}")


def copy_trained(model: nn.Module, coefficients: dict, trained: dict, source: str) -> nn.Module:
    """Copy saved coefficients ({layer name: tensor or None}) and trained parameters ({parameter name: tensor}) into
    a model already wrapped with the matching layers; a missing or misshapen tensor is an error naming `source`."""
    layers = dict(fourierft_layers(model))
    params = dict(model.named_parameters())
    check_declared(model, model.fourierft_config, trained, source)
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


def _check_shapes(model: nn.Module, layers: dict, path) -> None:
    from .layer import SUPPORTED, layer_shape

    modules = dict(model.named_modules())
    for name, shape in layers.items():
        module = modules.get(name)
        if module is None or not isinstance(module, SUPPORTED) or list(layer_shape(module)) != shape:
            if module is None:
                got = "missing"
            elif isinstance(module, SUPPORTED):
                got = f"{type(module).__name__} {list(layer_shape(module))}"
            else:
                got = type(module).__name__
            raise ValueError(f"adapter {path} expects module {name!r} of shape [d_out, d_in]={shape}, "
                             f"but in this {type(model).__name__} it is {got}: wrong base model?")


def _checkpoint_name(name_or_path) -> str:
    """"FacebookAI/roberta-base" and "/models/roberta-base/" both name roberta-base."""
    return str(name_or_path).rstrip("/").rpartition("/")[2] if name_or_path else ""


def _describe(layers: dict) -> str:
    items = list(layers.items())
    text = ", ".join(f"{n} {s}" for n, s in items[:4])
    return text + (f", ... ({len(items)} in all)" if len(items) > 4 else "") if items else "(none)"
