"""Exchanging adapters with Hugging Face PEFT's FourierFT (peft_type FOURIERFT)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .adapter import CLASSIFIER_HEADS, PEFT_CONFIG, PEFT_WEIGHTS, PREFIX, base_name_or_path, read, refuse_other_format
from .config import FourierFTConfig
from .entries import sample_entries
from .files import atomic_path, write_atomic
from .model import adapt, adapter_tensors, fourierft_layers
from .targets import find_modules, is_within

# PEFT's task types by the transformers head class name's ending (AutoPeftModel needs one to pick the class)
TASK_TYPES = (("ForCausalLM", "CAUSAL_LM"), ("ForSequenceClassification", "SEQ_CLS"),
              ("ForConditionalGeneration", "SEQ_2_SEQ_LM"), ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
              ("ForTokenClassification", "TOKEN_CLS"), ("ForQuestionAnswering", "QUESTION_ANS"))


def task_type(model: nn.Module):
    """PEFT's task_type for this model's class ("CAUSAL_LM", "SEQ_CLS", ...), or None (a bare backbone)."""
    name = type(model).__name__
    return next((task for ending, task in TASK_TYPES if name.endswith(ending)), None)


def export_peft(model: nn.Module, path) -> None:
    """Write a folder that peft.PeftModel.from_pretrained(base, path) loads with the same outputs."""
    config: FourierFTConfig = model.fourierft_config
    if config.fc is not None:
        raise ValueError("PEFT's FourierFT has no frequency bias: an adapter drawn with fc="
                         f"{config.fc} cannot be exported (PEFT would regenerate uniform entries)")
    if config.basis != "fourier":
        raise ValueError(f"PEFT's FourierFT has only the Fourier basis: an adapter with basis={config.basis!r} (the "
                         "basis ablation) cannot be exported; save it with fourierft.save_adapter")
    layers = dict(fourierft_layers(model))
    fused = [name for name, layer in layers.items() if layer.blocks]
    if fused:
        raise ValueError(f"PEFT has no layout for separate spectra over parts of a fused projection ({fused[0]!r}, "
                         f"config.fused={config.fused}): PEFT's FourierFT adapts a fused module as one matrix, so "
                         "this adapter cannot be exported; save it with fourierft.save_adapter")
    if any(layer.merged for layer in layers.values()):
        raise ValueError("unmerge(model) before export_peft")
    n_pattern = {}
    for name, layer in layers.items():
        expected = sample_entries(layer.d_out, layer.d_in, layer.n, config.entry_seed).to(layer.entries.device)
        if not torch.equal(expected, layer.entries):
            raise ValueError(f"the entries of {name!r} are not what PEFT regenerates from seed {config.entry_seed} "
                             "(they were drawn or loaded differently); PEFT stores no entries, so it cannot load them")
        if layer.n != config.n:
            # full-name anchored key: PEFT matches n_frequency_pattern keys as name suffixes
            n_pattern[name] = layer.n
    targets = config.target_modules
    if targets is None:
        targets = sorted({n.rpartition(".")[2] for n in layers})
    task = task_type(model)
    modules = list(config.modules_to_save or [])
    heads = [h for h in CLASSIFIER_HEADS if task in ("SEQ_CLS", "TOKEN_CLS") and find_modules(model, [h])]
    # PEFT's classifier tasks add the head to modules_to_save and expect its weights in the file: ship the head as it
    # is (frozen here, so PEFT's output stays ours) rather than a file PEFT cannot load
    modules += [h for h in heads if h not in modules]
    peft_config = {
        "peft_type": "FOURIERFT", "task_type": task, "base_model_name_or_path": base_name_or_path(model),
        "n_frequency": config.n, "scaling": config.scaling, "random_loc_seed": config.entry_seed,
        "target_modules": targets, "modules_to_save": modules or None, "bias": config.bias,
        "n_frequency_pattern": n_pattern, "init_weights": config.init == "zeros",
        "fan_in_fan_out": any(layer.transposed for layer in layers.values()), "inference_mode": True,
        "layers_to_transform": None, "layers_pattern": None, "exclude_modules": None, "revision": None,
    }
    tensors = {}
    for key, t in adapter_tensors(model).items():
        kind, _, name = key.partition("/")
        if kind == "coefficients":
            tensors[f"{PREFIX}{name}.fourierft_spectrum"] = t
        elif kind == "trained":
            tensors[f"{PREFIX}{name}"] = t
    for pname, p in model.named_parameters():
        if any(is_within(pname, m) for h in heads for m in find_modules(model, [h])):
            tensors.setdefault(f"{PREFIX}{pname}", p.detach().cpu().contiguous())
    _write_atomically(Path(path), peft_config, tensors)


def _write_atomically(path: Path, config: dict, tensors: dict) -> None:
    refuse_other_format(path, "peft")
    with atomic_path(path / PEFT_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_atomic(path / PEFT_CONFIG, json.dumps(config, indent=2))


def import_peft(model: nn.Module, path) -> nn.Module:
    """Wrap a plain base model with a PEFT FourierFT adapter folder (saved by PEFT or export_peft)."""
    return adapt(model, read(model, path, formats=("peft",)))


