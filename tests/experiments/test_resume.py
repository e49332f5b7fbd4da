"""kill -9 at three points of a run (mid-epoch, mid checkpoint save, mid results write), injected by the test harness
(tests/experiments/faults.py): the rerun resumes from the last complete checkpoint (or, killed while writing the
result, finishes from the evaluated run it left) and ends with the same metrics and the same adapter bytes as a run
that was never interrupted."""
import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import GLUE, ROOT

pytestmark = pytest.mark.slow


# 48 examples, batch 8: 6 steps per epoch, 3 epochs, a checkpoint after each
SETTINGS = ["model=tiny_bert", "task=rte", "logger=none", f"data.glue_dir={GLUE}", "trainer.max_train_samples=48",
            "trainer.max_eval_samples=32", "trainer.epochs=3", "trainer.batch_size=8", "trainer.max_length=32",
            "trainer.progress_bar=false", "method.n=16", "trainer.logging_steps=1"]


def train(tmp_path, name, fault=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop("FOURIERFT_FAULT", None)
    if fault:
        env["FOURIERFT_FAULT"] = fault
    return subprocess.run([sys.executable, str(ROOT / "tests" / "experiments" / "faults.py"), *SETTINGS, f"results_dir={tmp_path / name}",
                           f"checkpoint_dir={tmp_path / (name + '-ckpt')}"], cwd=ROOT, env=env, capture_output=True,
                          text=True)


def outcome(results):
    file = next(results.rglob("*seed0.json"))
    result = json.loads(file.read_text())
    adapter = (file.with_suffix("") / "adapter" / "adapter.safetensors").read_bytes()
    return result["epochs"], result["best"], result["last"], adapter, result["wall_time_s"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = train(tmp, "ref")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return outcome(tmp / "ref")


@pytest.mark.parametrize("fault,left_behind,resumes", [
    ("step:9", lambda ckpt, res: any(ckpt.glob("*/checkpoint-6")), "resuming from"),  # mid epoch 2, epoch 1's beside
    ("checkpoint", lambda ckpt, res: any(not (c / "trainer_state.json").exists() for c in ckpt.glob("*/checkpoint-*")),
     "resuming from"),
    ("result", lambda ckpt, res: any(res.rglob(".*.tmp")) and not any(res.rglob("*seed0.json"))
     and any(res.rglob("pending.json")), "finishing only"),
])
def test_killed_run_resumes_to_the_same_result(tmp_path, reference, fault, left_behind, resumes):
    killed = train(tmp_path, "run", fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert left_behind(tmp_path / "run-ckpt", tmp_path / "run")  # the kill happened where it was meant to
    rerun = train(tmp_path, "run")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert resumes in rerun.stdout + rerun.stderr
    epochs, best, last, adapter, wall = outcome(tmp_path / "run")
    assert (epochs, best, last) == reference[:3]
    assert adapter == reference[3]
    assert not any((tmp_path / "run").rglob(".*.tmp")) and not any((tmp_path / "run").rglob("pending.json"))
    assert not any((tmp_path / "run").rglob("*.lock"))  # the lock goes with the run


def test_an_unknown_fault_point_is_refused(tmp_path):
    proc = train(tmp_path, "run", "stepp:3")
    assert proc.returncode != 0 and "unknown FOURIERFT_FAULT='stepp:3'" in proc.stderr


def test_sigterm_removes_the_locks_and_the_rerun_resumes_to_the_same_result(tmp_path, reference):
    stopped = train(tmp_path, "run", "term:9")
    assert stopped.returncode == 143, stopped.stderr[-2000:]  # 128 + SIGTERM, as a shell reports it
    assert "SIGTERM: stopping" in stopped.stdout + stopped.stderr
    assert any((tmp_path / "run-ckpt").glob("*/checkpoint-6"))  # it stopped mid epoch 2, as meant
    assert not any(tmp_path.rglob("*.lock"))  # neither the results lock nor the checkpoint folder's
    rerun = train(tmp_path, "run")
    assert rerun.returncode == 0 and "resuming from" in rerun.stdout + rerun.stderr, rerun.stderr[-2000:]
    assert outcome(tmp_path / "run")[:4] == reference[:4]


@pytest.mark.parametrize("fault,setting,folder", [("full:checkpoint", "checkpoint_dir", "run-ckpt"),
                                                  ("full:result", "results_dir", "run")])
def test_a_full_disk_names_the_folder_and_leaves_nothing_half_written(tmp_path, reference, fault, setting, folder):
    full = train(tmp_path, "run", fault)
    assert full.returncode == 1, full.stderr[-2000:]
    assert f"no space left on the device that holds {setting}={tmp_path / folder} while writing" in full.stderr
    assert f"set {setting} to a folder on another disk" in full.stderr
    checkpoints = list((tmp_path / "run-ckpt").glob("*/checkpoint-*"))
    assert all((c / "trainer_state.json").is_file() for c in checkpoints)  # no half-written checkpoint left
    assert not any(tmp_path.rglob(".*.tmp")) and not any(tmp_path.rglob("*.lock"))
    rerun = train(tmp_path, "run")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert outcome(tmp_path / "run")[:4] == reference[:4]
