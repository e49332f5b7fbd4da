"""The Trainer every recipe uses: transformers' Trainer with two learning rates, and its precision settings."""
from __future__ import annotations

import torch
from transformers import Trainer


class TwoRateTrainer(Trainer):
    """Trainer whose AdamW has two groups: the method's parameters (method.lr) and the task head's
    (method.head_lr); `method` is a shared.methods.Method."""

    def __init__(self, *args, method=None, head=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.head = method, list(head or [])

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.method.param_groups(model or self.model, self.head))
        return self.optimizer


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
