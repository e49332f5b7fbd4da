"""The Trainer every family uses: transformers' Trainer with two learning rates, and the TrainingArguments the runner
builds from `conf/trainer`."""
from __future__ import annotations

import torch
from omegaconf import DictConfig
from transformers import Trainer, TrainerCallback, TrainingArguments

import fourierft as ff

from .hf_compat import quantized_adapters_recognised
from .identity import RunIdentity
from .validate import fraction, int_at_least, number_above, optional

# conf/trainer's rules (checked before anything loads)
SETTINGS = {
    "epochs": number_above(0), "batch_size": int_at_least(1), "eval_batch_size": int_at_least(1),
    "grad_accum": int_at_least(1), "max_length": int_at_least(1), "warmup_ratio": fraction(),
    "warmup_steps": optional(int_at_least(1)), "max_grad_norm": optional(number_above(0)),
    "max_steps": ((lambda v: isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v >= 1)),
                  "-1 (use epochs) or an integer >= 1"),
    "max_train_samples": optional(int_at_least(1)), "max_eval_samples": optional(int_at_least(1)),
    "logging_steps": int_at_least(1), "num_workers": int_at_least(0),
}


class TwoRateTrainer(Trainer):
    """Trainer whose AdamW has two groups: the method's parameters (method.lr) and the task head's
    (method.head_lr); `method` is a shared.methods.Method."""

    def __init__(self, *args, method=None, head=None, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        adapted = any(True for _ in ff.fourierft_layers(model))
        with quantized_adapters_recognised(model, adapted):
            super().__init__(*args, **kwargs)
        self.method, self.head = method, list(head or [])

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(self.method.param_groups(model or self.model, self.head))
        return self.optimizer


def training_arguments(cfg: DictConfig, identity: RunIdentity, method, **overrides) -> TrainingArguments:
    """conf/trainer as TrainingArguments, with a family's own values (`overrides`: eval_strategy, ...)."""
    t = cfg.trainer
    args = dict(
        output_dir=str(identity.checkpoints), num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum, lr_scheduler_type="linear", learning_rate=method.lr,
        # transformers reads a warmup below 1 as a ratio and from 1 up as steps; null max_grad_norm: no clipping
        warmup_steps=t.warmup_ratio if t.get("warmup_steps") is None else t.warmup_steps,
        max_grad_norm=0.0 if t.max_grad_norm is None else t.max_grad_norm, save_strategy=t.save_strategy,
        save_total_limit=1, logging_steps=t.logging_steps, seed=cfg.seed, data_seed=cfg.seed,
        report_to=list(cfg.logger.report_to), run_name=identity.run_name,
        disable_tqdm=not t.progress_bar, dataloader_num_workers=t.num_workers,
        # CPU processes under torchrun train as one (gloo DDP) only with use_cpu; else each trains alone
        use_cpu=t.use_cpu or (identity.world_size > 1 and not torch.cuda.is_available()),
        logging_nan_inf_filter=False,  # a NaN loss must reach RunGuard, not be averaged away
        ddp_find_unused_parameters=False,  # every trainable parameter is used in each step
        **mixed_precision(t.precision))
    args.update(overrides)
    return TrainingArguments(**args)


def mixed_precision(setting: str) -> dict:
    """"auto": bf16 where the GPU has it, else fp16 on CUDA, fp32 on CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
        return {}
    if setting not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"trainer.precision={setting!r} is not one of auto, fp32, bf16, fp16")
    return {} if setting == "fp32" else {setting: True}


class RunConfig(TrainerCallback):
    """Puts the composed run config (secrets redacted) into the Weights & Biases run under `fourierft`, beside the
    Trainer's arguments and the model config that transformers' WandbCallback records, so that runs group and filter
    by fourierft.method.name, fourierft.method.n, fourierft.method.scaling, fourierft.task.name, ..."""

    def __init__(self, config: dict):
        self.config = config

    def on_train_begin(self, args, state, control, **kwargs):
        import wandb

        if state.is_world_process_zero and wandb.run is not None:  # WandbCallback, added before, has started it
            wandb.config.update({"fourierft": self.config}, allow_val_change=True)
