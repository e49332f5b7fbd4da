"""Runs `python -m experiments.train` with a kill injected where FOURIERFT_FAULT says (the resume tests' harness;
production code knows nothing of it). SIGKILL, as a crash or an out-of-memory kill would, unless said. Points:
  step:<N>    after optimizer step N
  checkpoint  mid checkpoint save (optimizer written, trainer_state.json not), a complete checkpoint beside it
  result      mid results write (the temporary file written, not yet renamed into place)
  term:<N>    SIGTERM after optimizer step N (what a cluster scheduler sends)
  full:checkpoint  the disk fills up while the second checkpoint's weights are written (safetensors' own error)
  full:result      the disk fills up while the results file is written
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


class SignalAfterStep(TrainerCallback):
    """Sends `signum` to this process when optimizer step `step` ends."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def is_result(path) -> bool:
    """The run's results file (not its pending.json or an adapter's config)."""
    return str(path).endswith(".json") and "seed" in Path(path).name


def install() -> None:
    if POINT.startswith(("step:", "term:")):
        signum = signal.SIGKILL if POINT.startswith("step:") else signal.SIGTERM
        train = Trainer.train

        def train_then_signal(self, *args, **kwargs):
            self.add_callback(SignalAfterStep(int(POINT.split(":")[1]), signum))
            return train(self, *args, **kwargs)

        Trainer.train = train_then_signal
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
            if is_result(dst):
                die()
            return replace(src, dst, *args, **kwargs)

        os.replace = replace_or_die
    elif POINT == "full:checkpoint":
        import transformers.modeling_utils as modeling
        from safetensors import SafetensorError

        save = modeling.safe_save_file

        def save_until_full(tensors, filename, *args, **kwargs):
            if len(list(Path(filename).parents[1].glob("checkpoint-*"))) > 1:
                Path(filename).write_bytes(b"\0" * 64)  # what fitted before the disk was full
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            return save(tensors, filename, *args, **kwargs)

        modeling.safe_save_file = save_until_full
    elif POINT == "full:result":
        import errno

        replace = os.replace

        def replace_or_full(src, dst, *args, **kwargs):
            if is_result(dst):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return replace(src, dst, *args, **kwargs)

        os.replace = replace_or_full
    elif POINT:
        sys.exit(f"unknown FOURIERFT_FAULT={POINT!r}")


if __name__ == "__main__":
    install()
    sys.argv = ["experiments.train", *sys.argv[1:]]
    runpy.run_module("experiments.train", run_name="__main__", alter_sys=True)
