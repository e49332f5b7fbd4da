"""A run's checkpoint folder: resuming from the last complete checkpoint, the time spent by earlier segments, and
the callback that stops a diverged run and records time at every save."""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Optional

from transformers import Trainer, TrainerCallback

from fourierft.files import write_atomic

from .disk import no_space, out_of_space

log = logging.getLogger(__name__)


class Checkpoints:
    """Trainer checkpoints of one run under `folder`. `tidy`: this process removes what a kill left half-written
    (rank 0 only under several processes)."""

    def __init__(self, folder: Path, tidy: bool = True, checkpoint_dir=None):
        self.folder, self.tidy = Path(folder), tidy
        self.checkpoint_dir = checkpoint_dir if checkpoint_dir is not None else self.folder.parent  # the setting
        self.elapsed_file = self.folder / "elapsed.json"
        self.started = time.time()
        self.earlier = 0.0  # seconds spent by the segments before a resume

    def read_earlier_time(self) -> None:
        if self.elapsed_file.is_file():
            self.earlier = json.loads(self.elapsed_file.read_text())["seconds"]

    def elapsed(self) -> float:
        return self.earlier + time.time() - self.started

    def record_time(self) -> None:
        write_atomic(self.elapsed_file, json.dumps({"seconds": self.elapsed()}))

    def remove(self) -> None:
        """Drop the folder (rank 0): after the result is written, or to train again from scratch (overwrite)."""
        if self.tidy:
            shutil.rmtree(self.folder, ignore_errors=True)

    def last_complete(self) -> Optional[str]:
        """The newest checkpoint-N whose trainer_state.json (written last by Trainer) is whole; checkpoints a kill
        interrupted are removed (when `tidy`) so that they never shadow a complete one."""
        if not self.folder.is_dir():
            return None
        found = sorted((p for p in self.folder.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                       key=lambda p: int(p.name[11:]), reverse=True)
        for checkpoint in found:
            try:
                json.loads((checkpoint / "trainer_state.json").read_text())
                return str(checkpoint)
            except (OSError, json.JSONDecodeError):
                if self.tidy:
                    log.warning("removing %s: a kill interrupted its save", checkpoint)
                    shutil.rmtree(checkpoint, ignore_errors=True)
        return None

    def train(self, trainer: Trainer, world_size: int, lr: float) -> None:
        """Train, resuming from the last complete checkpoint of an interrupted earlier start."""
        if trainer.args.world_size != world_size:
            raise RuntimeError(f"{world_size} processes were launched (WORLD_SIZE) but the Trainer sees "
                               f"{trainer.args.world_size}: each would train alone on all the data")
        trainer.add_callback(RunGuard(self, lr))
        trainer.accelerator.wait_for_everyone()  # rank 0 has removed stale checkpoints: every rank resumes alike
        resume = self.last_complete()
        if resume:
            log.info("resuming from %s", resume)
        try:
            output = trainer.train(resume_from_checkpoint=resume)
        except Exception as e:
            if not out_of_space(e):
                raise
            self.last_complete()  # removes the checkpoint the full disk cut short (rank 0)
            raise no_space("checkpoint_dir", self.checkpoint_dir, f"a checkpoint into {self.folder}",
                           "The half-written checkpoint was removed; a rerun resumes from the last complete one "
                           "(trainer.save_strategy=no saves none)") from e
        if not math.isfinite(output.training_loss):
            raise FloatingPointError(f"training loss is {output.training_loss}: the run diverged; lower method.lr")


class RunGuard(TrainerCallback):
    """Stops a diverged run (NaN/inf loss) with a clear error, and records the time spent so far at each checkpoint
    (a resumed run's wall time covers every segment)."""

    def __init__(self, checkpoints: Checkpoints, lr: float):
        self.checkpoints, self.lr = checkpoints, lr

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {state.global_step} (method.lr={self.lr}): "
                                     "the run diverged; lower method.lr (or method.scaling)")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.checkpoints.record_time()
