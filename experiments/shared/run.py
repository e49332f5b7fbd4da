"""A run's bookkeeping: its identity (settings hash), results file, checkpoint folder, and the one results JSON
every recipe writes: what ran (config, commit), what it cost (params, bytes, time, memory), what it scored."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from fourierft import write_atomic

from .trainer import mixed_precision

log = logging.getLogger(__name__)


def git_commit() -> str:
    """HEAD of the checkout the code runs from, "-dirty" when tracked files differ from it."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_id(parts: dict) -> str:
    """Short stable hash of the settings that make runs comparable (everything but the seed)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def peak_memory_mb() -> dict:
    peak = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def environment() -> dict:
    import transformers

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {"versions": versions, "device": device}


def write_json_atomic(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


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
        self.started = time.time()

    def finished(self):
        """The stored result when this exact run is done and overwrite is off, else None."""
        if self.result_file.exists() and not self.cfg.overwrite:
            log.info("already done: %s (overwrite=true to run again)", self.result_file)
            return json.loads(self.result_file.read_text())
        return None

    def training_args(self, method, **overrides) -> TrainingArguments:
        cfg, t = self.cfg, self.cfg.trainer
        args = dict(
            output_dir=str(self.checkpoints), num_train_epochs=t.epochs, max_steps=t.max_steps,
            per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
            gradient_accumulation_steps=t.grad_accum, lr_scheduler_type="linear", learning_rate=method.lr,
            warmup_steps=t.warmup_ratio, max_grad_norm=t.max_grad_norm, save_strategy=t.save_strategy,
            save_total_limit=1, logging_steps=t.logging_steps, seed=cfg.seed, data_seed=cfg.seed,
            report_to=list(cfg.logger.report_to), run_name=f"{cfg.model.name}-{self.task}-{method.name}-s{cfg.seed}",
            disable_tqdm=not t.progress_bar, dataloader_num_workers=t.num_workers, use_cpu=t.use_cpu,
            **mixed_precision(t.precision))
        args.update(overrides)
        return TrainingArguments(**args)

    def train(self, trainer: Trainer) -> None:
        resume = get_last_checkpoint(str(self.checkpoints)) if self.checkpoints.is_dir() else None
        if resume:
            log.info("resuming from %s", resume)
        trainer.train(resume_from_checkpoint=resume)

    def write_result(self, *, trainable: int, total: int, head_params: int, variant: str, adapter_bytes,
                     **fields) -> dict:
        """The results JSON: identity, cost, and the recipe's own fields (metrics...); checkpoints go after."""
        cfg = self.cfg
        result = {
            "family": self.family, "task": self.task, "model": cfg.model.name, "method": cfg.method.name,
            "variant": variant, "seed": cfg.seed, "config_id": self.id, "trainable_params": trainable,
            "head_params": head_params, "total_params": total, "adapter_bytes": adapter_bytes, **fields,
            "wall_time_s": time.time() - self.started, "peak_memory": peak_memory_mb(),
            "git_commit": self.commit, **environment(), "config": OmegaConf.to_container(cfg, resolve=True),
        }
        write_json_atomic(self.result_file, result)
        if not cfg.trainer.keep_checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        return result
