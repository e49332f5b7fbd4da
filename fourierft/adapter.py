"""The adapter format, in one place: fourierft's own folders (fourierft_adapter.json + adapter.safetensors, written
atomically, verified by sha256 on every read) and PEFT FourierFT folders (adapter_config.json +
adapter_model.safetensors). `read` parses, verifies and checks a folder against a model into one `AdapterFile`
that load_adapter, import_peft and MixedAdapters each put to use; `write_adapter` writes one (save_adapter
gathers its tensors). Nothing here imports the training layer. A folder holds one
format (`folder_format`). The config file's name is our own: PEFT's loaders read adapter_config.json, and a folder
of ours never passes for one of theirs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import FourierFTConfig
from .entries import sample_entries
from .files import atomic_path, write_atomic
from .targets import find_modules, fused_blocks, is_within, modules_to_save, n_for, resolve_targets
from .wrapped import SUPPORTED, WrappedLayer, check_layer_entries, layer_shape

FORMAT = "fourierft-adapter"
VERSION = 1
CONFIG_NAME = "fourierft_adapter.json"
LEGACY_CONFIG_NAME = "adapter_config.json"  # what format version 1 called it before; still read
WEIGHTS_NAME = "adapter.safetensors"
PEFT_CONFIG = "adapter_config.json"  # a PEFT folder's files (fourierft.peft_interop reads and writes them)
PEFT_WEIGHTS = "adapter_model.safetensors"


PREFIX = "base_model.model."
CLASSIFIER_HEADS = ("classifier", "score")  # the head names PEFT's SEQ_CLS / TOKEN_CLS tasks add to modules_to_save


def json_object(file: Path):
    """The JSON object a file holds, or None (unreadable, not JSON, not an object)."""
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_ours(file: Path) -> bool:
    return (json_object(file) or {}).get("format") == FORMAT


def peft_type(path: Path):
    """The peft_type of a PEFT adapter folder (its adapter_config.json), else None."""
    file = Path(path) / PEFT_CONFIG
    return (json_object(file) or {}).get("peft_type") if file.is_file() else None


def has_ours(path: Path) -> bool:
    legacy = path / LEGACY_CONFIG_NAME
    return (path / CONFIG_NAME).is_file() or (legacy.is_file() and is_ours(legacy))


def folder_format(path) -> str:
    """"fourierft" (save_adapter's files) or "peft" (a PEFT adapter_config.json): which adapter a folder holds. A
    folder with both is refused: each reader would take another of the two adapters."""
    path = Path(path)
    ours, peft = has_ours(path), peft_type(path)
    if ours and peft:
        raise ValueError(f"{path} holds two adapters, one of fourierft ({CONFIG_NAME}, {WEIGHTS_NAME}) and one of "
                         f"PEFT ({PEFT_CONFIG}, {PEFT_WEIGHTS}): readers would disagree on which it is; move one "
                         "of them to a folder of its own")
    if peft:
        return "peft"
    return "fourierft"


def config_file(path: Path) -> Path:
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


def described_sha256(meta: dict) -> str:
    """sha256 of what the config file says about the weights (config, base model, weights' digest)."""
    described = {k: meta.get(k) for k in ("format", "version", "config", "base_model", "sha256")}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def file_sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_adapter(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Parse and verify an adapter folder: (metadata, tensors with shared entries expanded)."""
    path = Path(path)
    cfg_file, weights = config_file(path), path / WEIGHTS_NAME
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
    if meta["config_sha256"] != described_sha256(meta):
        raise ValueError(f"{cfg_file} was edited after it was saved (its config_sha256 no longer matches): an edited "
                         "alpha, n or entry seed would load silently wrong, so it is refused; save the adapter again")
    digest = file_sha256(weights)
    if digest != meta.get("sha256"):
        raise ValueError(f"{weights} is truncated or corrupted: its sha256 {digest[:12]}... does not match "
                         f"the {meta.get('sha256', '')[:12]}... recorded when it was saved")
    raw = load_file(str(weights))
    check_finite(raw, weights)
    tensors = {}
    for key, t in raw.items():
        if key.startswith("entries@"):
            _, layer, owner = key.split("@")
            tensors[f"entries/{layer}"] = raw[f"entries/{owner}"]
        else:
            tensors[key] = t
    return meta, tensors


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
    def plain(name: str) -> str:  # a layer's bias as saved from a wrapped model, read into a plain one
        return name.replace(".base_layer.", ".")

    declared = {plain(n) for n in trained_in_full(model, config)}
    undeclared = sorted(k for k in trained if plain(k) not in declared)
    if undeclared:
        raise ValueError(f"{source} holds trained tensors for {', '.join(undeclared[:3])}"
                         f"{', ...' if len(undeclared) > 3 else ''}, outside what the adapter declares it trains "
                         f"(modules_to_save={config.modules_to_save}, bias={config.bias!r}): the file was edited, or "
                         "is not an adapter of this model")


def check_finite(tensors: dict, source) -> None:
    """Refuse a file whose tensors hold NaN or inf (a diverged adapter)."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{source} holds NaN or inf in {', '.join(bad[:3])}: refusing to load a diverged adapter")


@dataclass
class AdapterFile:
    """An adapter folder as read for one model: its config, per adapted module its entries ((2, n) int64) and
    coefficients, the tensors it trained in full by parameter name, (fourierft's files) the recorded layers, and per
    adapted module its fused parts (None for one spectrum)."""
    config: FourierFTConfig
    entries: dict[str, torch.Tensor]
    coefficients: dict[str, torch.Tensor]
    trained: dict[str, torch.Tensor]
    layers: Optional[dict[str, list]]
    source: str
    blocks: dict[str, Optional[list]] = field(default_factory=dict)


def read(model: nn.Module, path, formats=("fourierft", "peft"), check_base: bool = True) -> AdapterFile:
    """The adapter at `path`, read and checked for `model` (a plain base model, or one whose adapted modules are
    wrapped: a wrapper counts as the module it wraps). `formats`: those the caller takes; the other is refused with
    the reader to use. check_base: compare the recorded checkpoint name with the model's (fourierft's files)."""
    path = Path(path)
    if folder_format(path) == "peft" and "peft" in formats:
        return checked(model, read_peft(model, path))
    if "fourierft" not in formats:
        if has_ours(path):
            raise ValueError(f"{path} holds an adapter of fourierft itself: load it with fourierft.load_adapter")
        raise FileNotFoundError(f"{path} is not a PEFT adapter folder: it needs {PEFT_CONFIG} and {PEFT_WEIGHTS}")
    meta, tensors = read_adapter(path)
    config = FourierFTConfig.from_dict(meta["config"])
    expected = meta["base_model"]
    if type(model).__name__ != expected["class"]:
        raise ValueError(f"adapter {path} was saved for a {expected['class']}, not a {type(model).__name__}")
    recorded, ours = _checkpoint_name(expected.get("name_or_path")), _checkpoint_name(base_name_or_path(model))
    if check_base and recorded and ours and recorded != ours:
        raise ValueError(f"adapter {path} was trained on {expected['name_or_path']!r}, but this model was loaded from "
                         f"{base_name_or_path(model)!r}; load_adapter(..., check_base=False) if that is intended")
    _check_shapes(model, expected["layers"], path)
    parts = {kind: {k[len(kind) + 1:]: v for k, v in tensors.items() if k.startswith(kind + "/")}
             for kind in ("entries", "coefficients", "trained")}
    entries = {name: e.long() for name, e in parts["entries"].items()}
    return checked(model, AdapterFile(config, entries, parts["coefficients"], parts["trained"], expected["layers"],
                                      f"adapter {path}"))


def checked(model: nn.Module, file: AdapterFile) -> AdapterFile:
    """`file` with each module's fused parts, its entries checked against that module's spectrum and its trained
    tensors against what its config declares: an edited file is refused here, before any caller changes the model."""
    for name, entries in file.entries.items():
        try:
            module = unwrapped(model.get_submodule(name))
        except AttributeError:
            raise ValueError(f"{file.source} holds entries for {name!r}, which this {type(model).__name__} lacks: "
                             "the file was edited or is corrupted") from None
        d_out, d_in = layer_shape(module)
        file.blocks[name] = blocks = fused_blocks(name, d_out, d_in, file.config)
        try:
            check_layer_entries(entries, d_out, d_in, blocks)
        except ValueError as e:
            raise ValueError(f"{file.source}, module {name!r}: {e}; the file was edited or is corrupted") from None
    check_declared(model, file.config, file.trained, file.source)
    return file


def base_name_or_path(model: nn.Module):
    """The hub id or folder a Hugging Face model was loaded from (None when unknown)."""
    return getattr(getattr(model, "config", None), "name_or_path", None) or None


def unwrapped(module: nn.Module) -> nn.Module:
    """The frozen layer inside a FourierFT or served layer; any other module as it is."""
    return module.base_layer if isinstance(module, WrappedLayer) else module


def _check_shapes(model: nn.Module, layers: dict, path) -> None:
    modules = dict(model.named_modules())
    for name, shape in layers.items():
        module = modules.get(name)
        module = None if module is None else unwrapped(module)
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


def read_peft(model: nn.Module, path: Path) -> AdapterFile:
    """A PEFT FourierFT folder read for `model`: the entries are what PEFT regenerates from its seed for the model's
    targeted modules."""
    cfg_file, weights = path / PEFT_CONFIG, path / PEFT_WEIGHTS
    if not cfg_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{path} is not a PEFT adapter folder: it needs {PEFT_CONFIG} and {PEFT_WEIGHTS}")
    try:
        peft_config = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise ValueError(f"{cfg_file} is not valid JSON ({e}); the adapter is corrupted") from None
    if not isinstance(peft_config, dict) or peft_config.get("peft_type") != "FOURIERFT":
        kind = peft_config.get("peft_type") if isinstance(peft_config, dict) else None
        raise ValueError(f"{cfg_file} holds a {kind!r} adapter, not FOURIERFT: fourierft reads FourierFT adapters "
                         "only; load it with PEFT itself: peft.PeftModel.from_pretrained(model, folder)")
    options = ("layers_to_transform", "layers_pattern", "exclude_modules")
    unsupported = {k: peft_config.get(k) for k in options if peft_config.get(k)}
    if unsupported:
        raise ValueError(f"PEFT options {unsupported} have no counterpart here; re-target the adapter without them")
    modules = list(dict.fromkeys(peft_config.get("modules_to_save") or []))
    if peft_config.get("task_type") in ("SEQ_CLS", "TOKEN_CLS"):
        # PEFT adds every classifier name it knows ("classifier", "score") to modules_to_save, whichever the model has
        modules = [m for m in modules if m not in CLASSIFIER_HEADS or find_modules(model, [m])]
    config = FourierFTConfig(
        n=peft_config["n_frequency"], scaling=peft_config["scaling"], entry_seed=peft_config["random_loc_seed"],
        target_modules=peft_config["target_modules"], modules_to_save=modules or None,
        bias=peft_config.get("bias", "none"), n_pattern=peft_config.get("n_frequency_pattern") or {},
        init="zeros" if peft_config.get("init_weights") else "normal")
    if config.bias not in ("none", "all"):
        raise ValueError(f"PEFT bias={config.bias!r} is not supported here (accepted: 'none', 'all')")
    tensors = load_file(str(weights))
    check_finite(tensors, weights)
    entries = {}
    for name in resolve_targets(model, config.target_modules):
        module = unwrapped(model.get_submodule(name))
        if isinstance(module, SUPPORTED):
            d_out, d_in = layer_shape(module)
            entries[name] = sample_entries(d_out, d_in, n_for(name, config), config.entry_seed)  # PEFT's rule
    coefficients = {name: tensors.pop(f"{PREFIX}{name}.fourierft_spectrum") for name in entries
                    if f"{PREFIX}{name}.fourierft_spectrum" in tensors}
    trained = {key.removeprefix(PREFIX): t for key, t in tensors.items()}
    return AdapterFile(config, entries, coefficients, trained, None, str(weights))


def write_adapter(path: Path, tensors: dict[str, torch.Tensor], config: FourierFTConfig, base_model: dict) -> int:
    """Write an adapter folder of ours from its tensors (coefficients/, entries/, trained/ by module or parameter
    name), its config and the base model's identity (class, name_or_path, layers); return its size in bytes. A
    folder holding a PEFT adapter, or tensors holding NaN or inf, are refused before anything is written."""
    refuse_other_format(path, "fourierft")
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
    meta = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "base_model": base_model,
            "sha256": digest, "adapter_bytes": size}
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
