"""Every fine-tuning method of the suite, behind one function, counting parameters the same way."""
from __future__ import annotations

from pathlib import Path

from torch import nn

import fourierft as ff

METHODS = ("fourierft", "fourierft_peft", "lora", "vera", "bitfit", "full", "linear_probe")


def apply_method(model: nn.Module, method, target_modules: list, head: list) -> nn.Module:
    """Make only what `method` trains trainable; the task head (modules `head`) always trains."""
    name = method.name
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
    # a method may override the model's targets, e.g. LoRA on every linear layer: method.target_modules=all-linear
    override = method.get("target_modules")
    targets = override if isinstance(override, str) else list(override or target_modules)
    head = list(head)
    if name == "fourierft":
        config = ff.FourierFTConfig(n=method.n, scaling=method.scaling, entry_seed=method.entry_seed,
                                    target_modules=targets, fc=method.fc, bandwidth=method.bandwidth,
                                    init=method.init, modules_to_save=head, path=method.path)
        return ff.apply_fourierft(model, config)
    if name in ("fourierft_peft", "lora", "vera"):
        import peft

        if name == "fourierft_peft":
            config = peft.FourierFTConfig(n_frequency=method.n, scaling=method.scaling, random_loc_seed=method.entry_seed,
                                          target_modules=targets, modules_to_save=head, init_weights=False)
        elif name == "lora":
            config = peft.LoraConfig(r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                                     target_modules=targets, modules_to_save=head)
        else:
            config = peft.VeraConfig(r=method.r, target_modules=targets, modules_to_save=head, vera_dropout=method.dropout)
        return peft.get_peft_model(model, config)
    for pname, p in model.named_parameters():
        in_head = any(pname.startswith(h + ".") for h in head)
        p.requires_grad_(name == "full" or in_head or (name == "bitfit" and pname.endswith("bias")))
    return model


def head_parameter(pname: str, head: list) -> bool:
    """Is this (possibly PEFT-prefixed) parameter part of the task head?"""
    pname = pname.removeprefix("base_model.model.")
    return any(pname.startswith(h + ".") for h in head)


def param_groups(model: nn.Module, method, head: list) -> list[dict]:
    """Adapter (or backbone) parameters at method.lr, the head at method.head_lr."""
    body, top = [], []
    for pname, p in model.named_parameters():
        if p.requires_grad:
            (top if head_parameter(pname, head) else body).append(p)
    groups = [{"params": body, "lr": method.lr, "weight_decay": method.weight_decay},
              {"params": top, "lr": method.head_lr, "weight_decay": method.weight_decay}]
    return [g for g in groups if g["params"]]


def save_trained(model: nn.Module, method, path: Path) -> int:
    """Write what this method trained (adapter + head) and return its size in bytes."""
    path.mkdir(parents=True, exist_ok=True)
    if method.name == "fourierft":
        return ff.save_adapter(model, path)
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(path))
    else:
        from safetensors.torch import save_file

        state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, str(path / "trained.safetensors"))
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
