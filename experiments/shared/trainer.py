"""The Trainer every recipe uses: transformers' Trainer with two learning rates, and its precision settings."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import Trainer

import fourierft as ff

from .faults import fault


class TwoRateTrainer(Trainer):
    """Trainer whose AdamW has two groups: the method's parameters (method.lr) and the task head's
    (method.head_lr); `method` is a shared.methods.Method."""

    def __init__(self, *args, method=None, head=None, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        with adapters_recognised(model):
            super().__init__(*args, **kwargs)
        self.method, self.head = method, list(head or [])

    def _save_optimizer_and_scheduler(self, output_dir):
        super()._save_optimizer_and_scheduler(output_dir)
        if len(list(Path(output_dir).parent.glob("checkpoint-*"))) > 1:
            fault("checkpoint")  # tests: killed before trainer_state.json, a complete checkpoint beside it

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.method.param_groups(model or self.model, self.head))
        return self.optimizer


@contextlib.contextmanager
def adapters_recognised(model):
    """Trainer refuses a quantized model unless PEFT adapters are attached (`_hf_peft_config_loaded`); FourierFT
    layers over a 4-bit base are such adapters (they never touch the packed weights), so the flag is raised while
    Trainer checks, and lowered again so that saving stays a plain save."""
    adapted = getattr(model, "is_quantized", False) and any(True for _ in ff.fourierft_layers(model))
    if not adapted or getattr(model, "_hf_peft_config_loaded", False):
        yield
        return
    model._hf_peft_config_loaded = True
    try:
        yield
    finally:
        model._hf_peft_config_loaded = False


def subsample(dataset, limit, seed):
    """A seeded random subset of `limit` examples (all of them when limit is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def mixed_precision(setting: str) -> dict:
    """"auto": bf16 where the GPU has it, else fp16 on CUDA, fp32 on CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
        return {}
    if setting not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"trainer.precision={setting!r} is not one of auto, fp32, bf16, fp16")
    return {} if setting == "fp32" else {setting: True}
