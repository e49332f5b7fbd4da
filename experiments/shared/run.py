"""A run's bookkeeping: its identity (settings hash), results file, checkpoint folder, and the one results JSON
every recipe writes: what ran (config, commit), what it cost (params, bytes, time, memory), what it scored."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import socket
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer, TrainerCallback, TrainingArguments

from fourierft import atomic_path, write_atomic

from .faults import fault
from .provenance import git_commit
from .trainer import mixed_precision
from .validate import validate

log = logging.getLogger(__name__)


def process_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun / accelerate launch (their RANK and WORLD_SIZE), (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


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
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))
        fault("result")  # tests: a kill while the results file is half written


def last_complete_checkpoint(folder: Path, tidy: bool = True):
    """The newest checkpoint-N whose trainer_state.json (written last by Trainer) is whole; checkpoints a kill
    interrupted are removed (when `tidy`) so that they never shadow a complete one."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]), reverse=True)
    for checkpoint in found:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
            return str(checkpoint)
        except (OSError, json.JSONDecodeError):
            if tidy:
                log.warning("removing %s: a kill interrupted its save", checkpoint)
                shutil.rmtree(checkpoint, ignore_errors=True)
    return None


HELD: dict[Path, object] = {}  # run locks this process holds, by lock file


class RunGuard(TrainerCallback):
    """Stops a diverged run (NaN/inf loss) with a clear error, records the time spent so far at each checkpoint
    (a resumed run's wall time covers every segment), and carries the resume tests' fault point mid-epoch."""

    def __init__(self, run: Run):
        self.run = run

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss} at step {state.global_step} ({self.run.cfg.method.name}, "
                f"method.lr={self.run.cfg.method.lr}): the run diverged; lower method.lr (or method.scaling)")

    def on_step_end(self, args, state, control, **kwargs):
        fault(f"step:{state.global_step}")  # tests: a kill after this optimizer step

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_atomic(self.run.elapsed_file, json.dumps({"seconds": self.run.elapsed()}))


def _clean(commit: str) -> bool:
    return bool(commit) and not commit.endswith("-dirty") and commit != "unknown"


class Run:
    """A run's identity (settings hash), its results file, its checkpoint folder and its lock.

    Under torchrun / accelerate launch every process builds the same Run; rank 0 alone holds the lock, removes
    checkpoints and writes the results JSON and the adapter (`writer`). The process count is part of the identity
    (a per-device batch means another global batch on 2 processes)."""

    def __init__(self, cfg: DictConfig, family: str, task: str):
        validate(cfg)
        comparable = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "method", "trainer")}
        self.rank, self.world_size = process_rank()
        if self.world_size > 1:
            comparable["world_size"] = self.world_size
        self.writer = self.rank == 0
        self.cfg, self.family, self.task = cfg, family, task
        self.id = config_id(comparable)
        stem = f"{cfg.method.name}-{self.id}-seed{cfg.seed}"
        self.result_file = Path(cfg.results_dir) / family / cfg.model.name / task / f"{stem}.json"
        self.artifacts = self.result_file.with_suffix("")  # adapter, predictions
        self.checkpoints = Path(cfg.checkpoint_dir) / f"{family}-{cfg.model.name}-{task}-{stem}"
        self.elapsed_file = self.checkpoints / "elapsed.json"
        self.commit = git_commit()  # the code this run started with, even if the tree changes while it runs
        if cfg.get("require_clean_tree") and not _clean(self.commit):
            raise RuntimeError(f"require_clean_tree=true but the code is {self.commit}: commit your changes first, "
                               "so that these results name the code that made them")
        self.started = time.time()
        self.earlier = 0.0  # seconds spent by the segments before a resume
        self._lock = None

    def finished(self):
        """The stored result when this exact run is done and overwrite is off, else None. Otherwise the run is
        claimed (locked) for this process: a second start of the same run stops with the holder's pid."""
        if self.result_file.exists() and not self.cfg.overwrite:
            log.info("already done: %s (overwrite=true to run again)", self.result_file)
            return json.loads(self.result_file.read_text())
        if not self.writer:
            return None  # rank 0 claims the run and tidies its files; the others train beside it
        self.claim()
        for stale in self.result_file.parent.glob(f".{self.result_file.name}.*.tmp"):
            stale.unlink()  # left by a kill during an earlier results write
        if self.cfg.overwrite:
            shutil.rmtree(self.checkpoints, ignore_errors=True)  # overwrite means train again, not resume
        elif self.elapsed_file.is_file():
            self.earlier = json.loads(self.elapsed_file.read_text())["seconds"]
        return None

    def claim(self) -> None:
        """Hold this run's lock file for the life of the process; refused while another process holds it."""
        lock_file = self.result_file.with_suffix(".lock")
        if lock_file.resolve() in HELD:  # this process holds it already (a run retried in the same process)
            self._lock = HELD[lock_file.resolve()]
            return
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RuntimeError(f"this run is already in progress (process {holder} holds {lock_file}); it writes "
                               f"{self.result_file}. Wait for it, or stop it first.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._lock = HELD[lock_file.resolve()] = handle  # the OS releases it when this process ends, however it ends

    def elapsed(self) -> float:
        return self.earlier + time.time() - self.started

    def training_args(self, method, **overrides) -> TrainingArguments:
        cfg, t = self.cfg, self.cfg.trainer
        args = dict(
            output_dir=str(self.checkpoints), num_train_epochs=t.epochs, max_steps=t.max_steps,
            per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
            gradient_accumulation_steps=t.grad_accum, lr_scheduler_type="linear", learning_rate=method.lr,
            warmup_steps=t.warmup_ratio, max_grad_norm=t.max_grad_norm, save_strategy=t.save_strategy,
            save_total_limit=1, logging_steps=t.logging_steps, seed=cfg.seed, data_seed=cfg.seed,
            report_to=list(cfg.logger.report_to), run_name=f"{cfg.model.name}-{self.task}-{method.name}-s{cfg.seed}",
            disable_tqdm=not t.progress_bar, dataloader_num_workers=t.num_workers,
            # CPU processes under torchrun train as one (gloo DDP) only with use_cpu; else each trains alone
            use_cpu=t.use_cpu or (self.world_size > 1 and not torch.cuda.is_available()),
            logging_nan_inf_filter=False,  # a NaN loss must reach RunGuard, not be averaged away
            ddp_find_unused_parameters=False,  # every trainable parameter is used in each step
            **mixed_precision(t.precision))
        args.update(overrides)
        return TrainingArguments(**args)

    def train(self, trainer: Trainer) -> None:
        """Train, resuming from the last complete checkpoint of an interrupted earlier start."""
        if trainer.args.world_size != self.world_size:
            raise RuntimeError(f"{self.world_size} processes were launched (WORLD_SIZE) but the Trainer sees "
                               f"{trainer.args.world_size}: each would train alone on all the data")
        trainer.add_callback(RunGuard(self))
        trainer.accelerator.wait_for_everyone()  # rank 0 has removed stale checkpoints: every rank resumes alike
        resume = last_complete_checkpoint(self.checkpoints, tidy=self.writer)
        if resume:
            log.info("resuming from %s", resume)
        output = trainer.train(resume_from_checkpoint=resume)
        if not math.isfinite(output.training_loss):
            raise FloatingPointError(f"training loss is {output.training_loss}: the run diverged; lower method.lr")

    def save_adapter(self, method, model, folder=None):
        """What the method trained, saved by rank 0 into the run's artifacts (or `folder`); its bytes, or None
        when this process does not write or saving is off."""
        if not (self.cfg.save_adapter and self.writer):
            return None
        return method.save(model, folder or self.artifacts)

    def write_result(self, *, trainable: int, total: int, head_params: int, variant: str, adapter_bytes,
                     **fields) -> dict:
        """The results JSON: identity, cost, and the recipe's own fields (metrics...); checkpoints go after.
        Written by rank 0 only; every rank gets the dict back."""
        cfg = self.cfg
        result = {
            "family": self.family, "task": self.task, "model": cfg.model.name, "method": cfg.method.name,
            "variant": variant, "seed": cfg.seed, "config_id": self.id, "trainable_params": trainable,
            "head_params": head_params, "total_params": total, "adapter_bytes": adapter_bytes, **fields,
            "world_size": self.world_size,
            "effective_batch_size": cfg.trainer.batch_size * cfg.trainer.grad_accum * self.world_size,
            "wall_time_s": self.elapsed(), "peak_memory": peak_memory_mb(),
            "git_commit": self.commit, "git_dirty": self.commit.endswith("-dirty"), **environment(),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        if not self.writer:
            return result
        write_json_atomic(self.result_file, result)
        if not cfg.trainer.keep_checkpoints:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        return result


def best_epoch(epochs: list[dict], main: str) -> dict:
    """The epoch with the highest finite `main` metric: a NaN epoch (a constant prediction's correlation, a
    diverged model) is never "best"; all NaN is an error."""
    scored = [e for e in epochs if math.isfinite(e[main])]
    if not scored:
        raise FloatingPointError(f"every dev evaluation gave {main}={epochs[-1][main]}: the model diverged or "
                                 "predicts a constant; no result was written")
    return max(scored, key=lambda e: e[main])


def metric_values(entry: dict) -> dict:
    """An epoch record's metrics, without its epoch number."""
    return {k: v for k, v in entry.items() if k != "epoch"}
