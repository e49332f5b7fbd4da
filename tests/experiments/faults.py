"""Runs `python -m experiments.train` with a kill injected where FOURIERFT_FAULT says (the resume tests' harness;
production code knows nothing of it). SIGKILL, as a crash or an out-of-memory kill would. Points:
  step:<N>    after optimizer step N
  checkpoint  mid checkpoint save (optimizer written, trainer_state.json not), a complete checkpoint beside it
  result      mid results write (the temporary file written, not yet renamed into place)
usage: python tests/experiments/faults.py <experiments.train arguments>"""
import os
import runpy
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerCallback

POINT = os.environ.get("FOURIERFT_FAULT", "")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            die()


def install() -> None:
    if POINT.startswith("step:"):
        train = Trainer.train

        def train_then_die(self, *args, **kwargs):
            self.add_callback(KillAfterStep(int(POINT.split(":")[1])))
            return train(self, *args, **kwargs)

        Trainer.train = train_then_die
    elif POINT == "checkpoint":
        save = Trainer._save_optimizer_and_scheduler

        def save_then_die(self, output_dir):
            save(self, output_dir)
            if len(list(Path(output_dir).parent.glob("checkpoint-*"))) > 1:
                die()

        Trainer._save_optimizer_and_scheduler = save_then_die
    elif POINT == "result":
        replace = os.replace

        def replace_or_die(src, dst, *args, **kwargs):
            if str(dst).endswith(".json") and "seed" in Path(dst).name:
                die()
            return replace(src, dst, *args, **kwargs)

        os.replace = replace_or_die
    elif POINT:
        sys.exit(f"unknown FOURIERFT_FAULT={POINT!r}")


if __name__ == "__main__":
    install()
    sys.argv = ["experiments.train", *sys.argv[1:]]
    runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
