"""What every recipe shares: the two-learning-rate Trainer, its arguments, the run's bookkeeping."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .methods import param_groups
from .results import config_id, git_commit

log = logging.getLogger(__name__)


class TwoRateTrainer(Trainer):
    """Trainer with two learning rates: the adapter's (method.lr) and the task head's (method.head_lr)."""

    def __init__(self, *args, method=None, head=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.head = method, list(head or [])

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(param_groups(model or self.model, self.method, self.head))
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


class Run:
    """A run's identity (settings hash), its results file, and its checkpoint folder."""

    def __init__(self, cfg: DictConfig, family: str, task: str):
        comparable = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "method", "trainer")}
        self.cfg, self.family, self.task = cfg, family, task
        self.id = config_id(comparable)
        stem = f"{cfg.method.name}-{self.id}-seed{cfg.seed}"
        self.result_file = Path(cfg.results_dir) / family / cfg.model.name / task / f"{stem}.json"
        self.artifacts = self.result_file.with_suffix("")  # adapter, predictions
        self.checkpoints = Path(cfg.checkpoint_dir) / f"{family}-{cfg.model.name}-{task}-{stem}"
        self.commit = git_commit()  # the code this run started with, even if the tree changes while it runs

    def finished(self):
        """The stored result when this exact run is done and overwrite is off, else None."""
        if self.result_file.exists() and not self.cfg.overwrite:
            log.info("already done: %s (overwrite=true to run again)", self.result_file)
            return json.loads(self.result_file.read_text())
        return None

    def training_args(self, **overrides) -> TrainingArguments:
        cfg, t = self.cfg, self.cfg.trainer
        args = dict(
            output_dir=str(self.checkpoints), num_train_epochs=t.epochs, max_steps=t.max_steps,
            per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
            gradient_accumulation_steps=t.grad_accum, lr_scheduler_type="linear", learning_rate=cfg.method.lr,
            warmup_steps=t.warmup_ratio, max_grad_norm=t.max_grad_norm, save_strategy=t.save_strategy,
            save_total_limit=1, logging_steps=t.logging_steps, seed=cfg.seed, data_seed=cfg.seed,
            report_to=list(cfg.logger.report_to), run_name=f"{cfg.model.name}-{self.task}-{cfg.method.name}-s{cfg.seed}",
            disable_tqdm=not t.progress_bar, dataloader_num_workers=t.num_workers, use_cpu=t.use_cpu,
            **mixed_precision(t.precision))
        args.update(overrides)
        return TrainingArguments(**args)

    def train(self, trainer: Trainer) -> None:
        resume = get_last_checkpoint(str(self.checkpoints)) if self.checkpoints.is_dir() else None
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=resume)

    def cleanup(self) -> None:
        if not self.cfg.trainer.keep_checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)


def write_result(run: Run, *, started: float, trainable: int, total: int, head_params: int,
                 adapter_bytes, **fields) -> dict:
    """The results JSON every recipe writes: identity, cost, and the recipe's own fields (metrics...)."""
    import time

    from .results import environment, peak_memory_mb, write_json_atomic

    cfg = run.cfg
    result = {
        "family": run.family, "task": run.task, "model": cfg.model.name, "method": cfg.method.name,
        "seed": cfg.seed, "config_id": run.id, "trainable_params": trainable, "head_params": head_params,
        "total_params": total, "adapter_bytes": adapter_bytes, **fields,
        "wall_time_s": time.time() - started, "peak_memory": peak_memory_mb(),
        "git_commit": run.commit, **environment(), "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(run.result_file, result)
    run.cleanup()
    return result
