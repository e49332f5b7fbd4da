"""Every fine-tuning method of the suite, one class each, counting parameters the same way.

A method config (conf/method/<name>.yaml) names its class with `_target_` and holds its arguments; adding a
method is one class here (or anywhere importable) plus one yaml. The task head (the model's `head` modules)
always trains, at `head_lr`; everything else the method trains runs at `lr`.
"""
from __future__ import annotations

import logging
import statistics
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

import fourierft as ff
from fourierft.targets import is_within

from .validate import fraction, int_at_least, names, nonzero, number_above, number_at_least, optional

log = logging.getLogger(__name__)


def in_head(pname: str, head: list) -> bool:
    """Is this (possibly PEFT-prefixed) parameter part of the task head?"""
    pname = pname.removeprefix("base_model.model.")
    return any(is_within(pname, h) for h in head)


class Method(ABC):
    """Base class: a name, the two learning rates and weight decay; `apply` decides what trains. `settings`: the
    rules of this class's arguments (with its bases'), checked before anything loads. Abstract, as `Family`: a
    method without `apply` fails when it is built, before any data or model loads."""

    settings = {"lr": number_above(0), "head_lr": number_above(0), "weight_decay": number_at_least(0)}

    def __init__(self, name: str, lr: float, head_lr: float, weight_decay: float = 0.0):
        self.name, self.lr, self.head_lr, self.weight_decay = name, lr, head_lr, weight_decay

    @property
    def variant(self) -> str:
        """What separates table rows of one method (sizes); learning rates and alpha stay inside a cell."""
        return ""

    @abstractmethod
    def apply(self, model: nn.Module, backbone) -> nn.Module:
        """Make only what this method trains trainable (the backbone's head included) on the backbone's targets;
        return the model to train."""

    def param_groups(self, model: nn.Module, head: list) -> list[dict]:
        """Method parameters at lr, the head at head_lr."""
        body, top = [], []
        for pname, p in model.named_parameters():
            if p.requires_grad:
                (top if in_head(pname, head) else body).append(p)
        groups = [{"params": body, "lr": self.lr, "weight_decay": self.weight_decay},
                  {"params": top, "lr": self.head_lr, "weight_decay": self.weight_decay}]
        return [g for g in groups if g["params"]]

    def save(self, model: nn.Module, path: Path) -> int:
        """Write what this method trained (adapter + head); return its size in bytes."""
        path.mkdir(parents=True, exist_ok=True)
        if hasattr(model, "peft_config"):
            model.save_pretrained(str(path))
        else:
            from safetensors.torch import save_file

            state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(state, str(path / "trained.safetensors"))
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class FourierFT(Method):
    """This library's FourierFT (fourierft.apply_fourierft)."""

    settings = {"n": int_at_least(1), "scaling": nonzero(), "entry_seed": int_at_least(0),
                "fc": optional(number_at_least(0)), "bandwidth": number_above(0)}

    def __init__(self, name: str, lr: float, head_lr: float, n: int, scaling: float, weight_decay: float = 0.0,
                 entry_seed: int = 2024, fc: Optional[float] = None, bandwidth: float = 200.0, init: str = "normal",
                 path: str = "auto", basis: str = "fourier", basis_seed: int = 0):
        super().__init__(name, lr, head_lr, weight_decay)
        self.config = dict(n=n, scaling=scaling, entry_seed=entry_seed, fc=fc, bandwidth=bandwidth, init=init,
                           path=path, basis=basis, basis_seed=basis_seed)

    @property
    def variant(self) -> str:
        fc, basis = self.config["fc"], self.config["basis"]
        return (f"n={self.config['n']}" + (f", fc={fc}" if fc is not None else "")
                + (f", basis={basis}" if basis != "fourier" else ""))

    def apply(self, model, backbone):
        config = ff.FourierFTConfig(target_modules=backbone.target_modules, modules_to_save=backbone.head,
                                    fused=backbone.fused, **self.config)
        model = ff.apply_fourierft(model, config)
        ratios = init_delta_ratios(model)
        if ratios:
            # alpha's effect shrinks with d_out * d_in (ifft2's normalisation): say how strong it is here
            median = statistics.median(ratios)
            log.info("FourierFT at init: |dW| / |W| median %.3g (min %.3g, max %.3g) over %d layers, alpha=%s",
                     median, min(ratios), max(ratios), len(ratios), config.scaling)
            advice = alpha_advice(median, config.scaling)
            if advice:
                log.warning(advice)
        return model

    def save(self, model, path):
        return ff.save_adapter(model, path)


class PeftMethod(Method):
    """A method from Hugging Face PEFT: subclasses build its config."""

    def __init__(self, name: str, lr: float, head_lr: float, weight_decay: float = 0.0,
                 target_modules: Union[None, str, list] = None):
        super().__init__(name, lr, head_lr, weight_decay)
        # a method may override the model's targets, e.g. LoRA on every linear layer: method.target_modules=all-linear
        self.target_modules = target_modules

    @abstractmethod
    def peft_config(self, targets, head):
        """PEFT's config for this method on `targets`, with the `head` modules saved and trained beside it."""

    def apply(self, model, backbone):
        import peft

        override = self.target_modules
        targets = override if isinstance(override, str) else list(override or backbone.target_modules)
        return peft.get_peft_model(model, self.peft_config(targets, backbone.head))


class FourierFTPeft(PeftMethod):
    """PEFT's FourierFT with the same hyperparameters as ours, to cross-check."""

    settings = {"n": int_at_least(1), "scaling": nonzero(), "entry_seed": int_at_least(0)}

    def __init__(self, name, lr, head_lr, n: int, scaling: float, weight_decay=0.0, entry_seed: int = 2024):
        super().__init__(name, lr, head_lr, weight_decay)
        self.n, self.scaling, self.entry_seed = n, scaling, entry_seed

    @property
    def variant(self) -> str:
        return f"n={self.n}"

    def peft_config(self, targets, head):
        import peft

        return peft.FourierFTConfig(n_frequency=self.n, scaling=self.scaling, random_loc_seed=self.entry_seed,
                                    target_modules=targets, modules_to_save=head, init_weights=False)


class LoRA(PeftMethod):
    """PEFT's LoRA. `fused_parts` (e.g. [q, v]): on a model with fused projections (GPT-2's c_attn), adapt only
    these parts, each with its own A and B, as the LoRA paper's MergedLinear did; null adapts the whole fused
    module (PEFT's way)."""

    settings = {"r": int_at_least(1), "alpha": number_above(0), "dropout": fraction(),
                "fused_parts": optional(names())}

    def __init__(self, name, lr, head_lr, r: int, alpha: float, dropout: float = 0.0, weight_decay=0.0,
                 target_modules=None, fused_parts: Optional[list] = None):
        super().__init__(name, lr, head_lr, weight_decay, target_modules)
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.fused_parts = list(fused_parts) if fused_parts else None

    def apply(self, model, backbone):
        if not self.fused_parts:
            return super().apply(model, backbone)
        if not backbone.fused:
            raise ValueError(f"method.fused_parts={self.fused_parts}: model {backbone.name} has no fused projections "
                             "(model.fused is empty); its q and v are separate modules already, drop the setting")
        if self.target_modules is not None:
            raise ValueError("method.fused_parts adapts parts of the model's fused projections; it cannot be "
                             f"combined with method.target_modules={self.target_modules!r}")
        import peft

        from .split import split_fused

        targets = split_fused(model, backbone.fused, list(backbone.target_modules), self.fused_parts)
        return peft.get_peft_model(model, self.peft_config(targets, backbone.head))

    @property
    def variant(self) -> str:
        return f"r={self.r}"

    def peft_config(self, targets, head):
        import peft

        return peft.LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                               modules_to_save=head)


class VeRA(PeftMethod):
    settings = {"r": int_at_least(1), "dropout": fraction()}

    def __init__(self, name, lr, head_lr, r: int, dropout: float = 0.0, weight_decay=0.0, target_modules=None):
        super().__init__(name, lr, head_lr, weight_decay, target_modules)
        self.r, self.dropout = r, dropout

    @property
    def variant(self) -> str:
        return f"r={self.r}"

    def peft_config(self, targets, head):
        import peft

        return peft.VeraConfig(r=self.r, target_modules=targets, modules_to_save=head, vera_dropout=self.dropout)


class Unfrozen(Method):
    """Methods that train existing parameters: subclasses say which (`trains`)."""

    def trains(self, pname: str) -> bool:
        raise NotImplementedError

    def apply(self, model, backbone):
        for pname, p in model.named_parameters():
            p.requires_grad_(in_head(pname, backbone.head) or self.trains(pname))
        return model


class BitFit(Unfrozen):
    """Every bias and the head train."""

    def trains(self, pname):
        return pname.endswith("bias")


class Full(Unfrozen):
    def trains(self, pname):
        return True


class LinearProbe(Unfrozen):
    """Only the head trains."""

    def trains(self, pname):
        return False


# |dW| / |W| at init that the paper's presets give on their own models, estimated from their alpha and n on the models'
# shapes (|dW| ~ alpha * sqrt(n / (2 d_out d_in)) for N(0, 1) coefficients) and pretrained weights of per-entry std
# 0.02-0.1: about 0.02 (LLaMA-2-7B, RoBERTa-base alpha 29) to 0.4 (ViT-B alpha 300). Beyond these bounds a run is
# in territory no preset has tried; the vision demo measured chance-level training at 1.1 and at 4.
ALPHA_RANGE = (0.005, 0.5)


def alpha_advice(median_ratio: float, alpha: float) -> str:
    """A warning naming the alpha that brings the median |dW| / |W| at init into ALPHA_RANGE, or "" inside it."""
    low, high = ALPHA_RANGE
    if median_ratio <= 0 or low <= median_ratio <= high:  # zero: coefficients start at zero, nothing to judge
        return ""
    target = high / 2 if median_ratio > high else low * 2  # inside the range, with room for rounding
    suggested = float(f"{alpha * target / median_ratio:.2g}")
    side = "above" if median_ratio > high else "below"
    return (f"FourierFT alpha={alpha:g} gives |dW| / |W| = {median_ratio:.3g} at init (median over layers), {side} "
            "the "
            f"range the paper's presets start from on their own models (about {low:g}-{high:g}): training may "
            f"{'stay at chance' if side == 'above' else 'barely move the model'}. method.scaling={suggested:g} brings "
            f"it to {target:g} (alpha's effect scales with 1 / sqrt(d_out * d_in), so a preset's alpha does not carry "
            "over to a model of another width)")


@torch.no_grad()
def init_delta_ratios(model: nn.Module) -> list[float]:
    """Frobenius |dW| / |W| of each FourierFT layer (0 where dW starts at zero)."""
    return [(layer.delta_weight().norm() / layer.weight_view().float().norm().clamp_min(1e-30)).item()
            for _, layer in ff.fourierft_layers(model)]


@dataclass(frozen=True)
class Counts:
    """What a method made trainable: trainable and total parameters, the head's share, the method's variant."""

    trainable: int
    total: int
    head: int
    variant: str


def adapt(model: nn.Module, method: Method, backbone) -> tuple[nn.Module, Counts]:
    """Apply `method` to `model` on the backbone's targets and head; (model, parameter counts)."""
    model = method.apply(model, backbone)
    trainable, total = ff.trainable_parameters(model)
    head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and in_head(n, backbone.head))
    return model, Counts(trainable, total, head, method.variant)
