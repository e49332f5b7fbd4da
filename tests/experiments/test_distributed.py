"""Two CPU processes under torchrun (gloo DDP) train one run: rank 0 alone writes the results JSON and the adapter,
the global batch is recorded, and the run equals one process with the same global batch where the two could
differ: gradient clipping active on every step, the logged loss and gradient norm compared step by step, and the
trained tensors."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from experiments.shared.identity import RunIdentity, comparable_settings, config_id

from helpers import GLUE, ROOT

RUN = ["-m", "experiments.train", "task=mrpc", "model=tiny_bert", "logger=none", f"data.glue_dir={GLUE}",
       "trainer.epochs=1", "trainer.max_length=48", "trainer.progress_bar=false", "trainer.max_train_samples=64",
       "trainer.max_eval_samples=64", "method.n=50", "trainer.logging_steps=1", "trainer.keep_checkpoints=true",
       "trainer.max_grad_norm=0.05",  # below every step's gradient norm: every step clips
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
    adapters = sorted(folder.glob("glue/tiny_bert/mrpc/*/adapter/adapter.safetensors"))
    return results, adapters


def logged_steps(checkpoints) -> list[dict]:
    """Per optimizer step: the loss and gradient norm the Trainer logged (from the last checkpoint's state)."""
    state = next(checkpoints.glob("*/checkpoint-*/trainer_state.json"))
    return [e for e in json.loads(state.read_text())["log_history"] if "loss" in e]


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
    # the process count is part of the identity: the same settings on two processes are another configuration
    assert r2["config_id"] != r1["config_id"]
    same_batch = {**r2["config"], "trainer": {**r2["config"]["trainer"], "batch_size": 8}}
    assert config_id(comparable_settings(same_batch, world_size=1)) == r1["config_id"]
    assert config_id(comparable_settings(same_batch, world_size=2)) != r1["config_id"]
    # same global batches in the same order, gradients averaged over the two halves: equal up to float summation
    # order (measured 8e-5 relative after one epoch); stated tolerance 1e-3 on every trained tensor
    one, two_ = logged_steps(tmp_path / "one-ckpt"), logged_steps(tmp_path / "two-ckpt")
    assert [e["step"] for e in one] == [e["step"] for e in two_] == list(range(1, 9))
    assert all(e["grad_norm"] > 0.05 for e in one)  # clipping was active on every step
    for e1, e2 in zip(one, two_):  # the loss and gradient the two runs optimise are the same, not N times larger
        assert abs(e2["loss"] - e1["loss"]) <= 1e-4 * abs(e1["loss"]), (e1, e2)
        assert abs(e2["grad_norm"] - e1["grad_norm"]) <= 1e-3 * e1["grad_norm"], (e1, e2)
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
    cfg = fast_config("task=mrpc", "model=tiny_bert")
    single = RunIdentity.of(cfg, "glue", "mrpc")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rank1 = RunIdentity.of(cfg, "glue", "mrpc")
    assert rank1.config_id != single.config_id and single.writer and not rank1.writer


CAUSAL = ["-m", "experiments.train", "task=e2e", "model=tiny_gpt2", "logger=none", "trainer.epochs=1",
          "trainer.max_length=64", "trainer.progress_bar=false", "trainer.max_train_samples=64",
          "trainer.max_eval_samples=16", "method.n=40", "trainer.logging_steps=1", "trainer.keep_checkpoints=true",
          "trainer.max_grad_norm=0.005", "task.max_test_mrs=2", "task.decoding.num_beams=1",
          "task.decoding.max_new_tokens=4",
          "+model.config.resid_pdrop=0.0", "+model.config.embd_pdrop=0.0", "+model.config.attn_pdrop=0.0"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_match_one_on_a_causal_lm_with_padding_and_label_smoothing(tmp_path):
    """E2E on a tiny GPT-2: examples of different lengths (padding, so the two halves of a batch hold different token
    counts), label smoothing 0.1, the loss normalised by the global token count (transformers'
    average_tokens_across_devices, kept on for causal LMs), clipping on every step."""
    for name, processes, batch in (("two", 2, 4), ("one", 1, 8)):
        runner = [shutil.which("torchrun"), "--nproc_per_node", "2"] if processes > 1 else [sys.executable]
        proc = subprocess.run(runner + CAUSAL + [f"trainer.batch_size={batch}", f"results_dir={tmp_path / name}",
                                                  f"checkpoint_dir={tmp_path / name}-ckpt"],
                              cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = logged_steps(tmp_path / "one-ckpt"), logged_steps(tmp_path / "two-ckpt")
    assert [e["step"] for e in one] == [e["step"] for e in two] == list(range(1, 9))
    assert all(e["grad_norm"] > 0.005 for e in one)  # clipping on every step
    for e1, e2 in zip(one, two):
        assert abs(e2["loss"] - e1["loss"]) <= 1e-4 * abs(e1["loss"]), (e1, e2)
        assert abs(e2["grad_norm"] - e1["grad_norm"]) <= 1e-3 * e1["grad_norm"], (e1, e2)
    (a,), (b,) = (list((tmp_path / n).rglob("adapter/adapter.safetensors")) for n in ("one", "two"))
    a, b = load_file(str(a)), load_file(str(b))
    for key in a:
        if a[key].is_floating_point():
            assert ((a[key] - b[key]).norm() / a[key].norm()).item() < 1e-3, key
