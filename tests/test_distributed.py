"""Two CPU processes under torchrun (gloo DDP) train one run: rank 0 alone writes the results JSON and the adapter,
the global batch is recorded, and the result matches one process with the same global batch."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import GLUE, ROOT, needs_data

RUN = ["-m", "experiments.train", "task=mrpc", "model=tiny_bert", "logger=none", f"data.glue_dir={GLUE}",
       "trainer.epochs=1", "trainer.max_length=48", "trainer.progress_bar=false", "trainer.max_train_samples=64",
       "trainer.max_eval_samples=64", "trainer.save_strategy=no", "method.n=50",
       # no dropout: each rank would draw its own masks, so the two runs could not match
       "+model.config.hidden_dropout_prob=0.0", "+model.config.attention_probs_dropout_prob=0.0"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def launch(tmp_path, name, processes, batch):
    torchrun = [shutil.which("torchrun") or "torchrun", "--nproc_per_node", str(processes)] if processes > 1 else \
        [sys.executable]
    args = torchrun + RUN + [f"trainer.batch_size={batch}", f"results_dir={tmp_path / name}",
                             f"checkpoint_dir={tmp_path / name}-ckpt"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def outputs(folder):
    results = sorted(folder.glob("glue/tiny_bert/mrpc/*.json"))
    adapters = sorted(folder.glob("glue/tiny_bert/mrpc/*/adapter.safetensors"))
    return results, adapters


@needs_data
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_write_once_and_match_one_process_with_the_same_global_batch(tmp_path):
    two = launch(tmp_path, "two", processes=2, batch=4)
    launch(tmp_path, "one", processes=1, batch=8)
    (result_two,), (adapter_two,) = outputs(tmp_path / "two")  # exactly one of each: rank 0 wrote them
    (result_one,), (adapter_one,) = outputs(tmp_path / "one")
    r2, r1 = json.loads(result_two.read_text()), json.loads(result_one.read_text())
    assert (r2["world_size"], r2["effective_batch_size"]) == (2, 8)
    assert (r1["world_size"], r1["effective_batch_size"]) == (1, 8)
    assert r2["config_id"] != r1["config_id"] or r2["config"]["trainer"] != r1["config"]["trainer"]
    # same global batches in the same order, gradients averaged over the two halves: equal up to float summation
    # order (measured 8e-5 relative after one epoch); stated tolerance 1e-3 on every trained tensor
    a, b = load_file(str(adapter_one)), load_file(str(adapter_two))
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            assert ((a[key] - b[key]).norm() / a[key].norm()).item() < 1e-3, key
    for e1, e2 in zip(r1["epochs"], r2["epochs"]):
        assert abs(e1["accuracy"] - e2["accuracy"]) <= 1.0 and abs(e1["f1"] - e2["f1"]) <= 1.0
    assert (two.stdout + two.stderr).count("fourierft on tiny_bert/mrpc: trainable") == 1  # rank 0 speaks
    # a second launch finds the finished run on every rank and trains nothing
    again = launch(tmp_path, "two", processes=2, batch=4)
    assert (again.stdout + again.stderr).count("already done") == 1 and "train_runtime" not in again.stdout
    assert json.loads(result_two.read_text()) == r2


def test_world_size_enters_the_run_identity(monkeypatch, fast_config):
    from experiments.shared.run import Run

    cfg = fast_config("task=mrpc", "model=tiny_bert")
    single = Run(cfg, "glue", "mrpc")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rank1 = Run(cfg, "glue", "mrpc")
    assert rank1.id != single.id and not rank1.writer
    assert rank1.save_adapter(None, torch.nn.Linear(1, 1)) is None  # only rank 0 saves
    result = rank1.write_result(trainable=1, total=2, head_params=0, variant="", adapter_bytes=None)
    assert result["effective_batch_size"] == 2 * cfg.trainer.batch_size and not rank1.result_file.exists()
