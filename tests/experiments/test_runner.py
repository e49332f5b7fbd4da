"""The runner (experiments/runner.py) and a run's bookkeeping (identity, lock, checkpoints, results): a toy family
defined here runs end to end through `experiments.train` with one YAML and appears in the tables; what Hydra
optimises is the validation metric, never test; locks, leftovers, divergence, overwrite and resumed wall time."""
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml
from datasets import Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from experiments.runner import run
from experiments.shared.checkpoints import Checkpoints
from experiments.shared.family import (
    Family,
    Outcome,
    Prepared,
    Report,
    Selection,
    TaskDefinition,
    best_epoch,
    check_name,
)
from experiments.shared.identity import RunIdentity
from experiments.shared.lock import run_lock
from experiments.shared.results import ResultStore

from helpers import ROOT, compose_config

WORDS = ["good", "bad", "cat", "dog", "sun", "rain", "red", "blue"]


@dataclass(frozen=True)
class ParityTask(TaskDefinition):
    """A toy task: does a four-word sentence hold "good"? Its test labels are flipped on purpose, so that test
    accuracy is 100 minus validation accuracy and a selection on test cannot pass for one on validation."""

    family = "test_runner.Parity"
    train_size: int = 64


class Parity(Family):
    name = "parity"
    report = Report(title="Toy parity, {which} epoch: test accuracy", columns=("best",), table="selected")
    selection = Selection("validation_accuracy")

    def load_data(self):
        rng = random.Random(0)

        def sentences(n):
            return [" ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(n)]

        def split(texts, flip=False):
            return Dataset.from_dict({"text": texts, "label": [int(("good" in t) != flip) for t in texts]})

        validation = sentences(31)  # odd: the two accuracies can never both be 50
        data = DatasetDict(train=split(sentences(self.task.train_size)), validation=split(validation),
                           test=split(validation, flip=True))
        return data, "generated"

    def load_model(self, backbone, data):
        return backbone.load(AutoModelForSequenceClassification, num_labels=2)

    def prepare(self, data, model, tokenizer):
        def tokenize(split):
            return split.map(lambda b: tokenizer(b["text"], truncation=True, max_length=12), batched=True,
                             remove_columns=["text"])

        def accuracy(prediction):
            return {"accuracy": 100.0 * float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

        return Prepared(train=tokenize(data["train"]), collator=DataCollatorWithPadding(tokenizer),
                        eval={s: tokenize(data[s]) for s in ("validation", "test")}, compute_metrics=accuracy,
                        training_args={"eval_strategy": "epoch"}, counts={"train_examples": len(data["train"])})

    def evaluate(self, trained, artifacts):
        epochs = {}
        for record in trained.trainer.state.log_history:
            for split in ("validation", "test"):
                if f"eval_{split}_accuracy" in record:
                    epochs.setdefault(record["epoch"], {"epoch": record["epoch"]})[f"{split}_accuracy"] = \
                        record[f"eval_{split}_accuracy"]
        best = best_epoch(list(epochs.values()), "validation_accuracy")
        return Outcome(best["validation_accuracy"], {
            "main_metric": "test_accuracy", "epochs": list(epochs.values()),
            "best": {"epoch": best["epoch"], "metrics": best}})


@pytest.mark.slow
def test_a_family_defined_in_a_test_runs_through_experiments_train_and_hydra_optimises_validation(tmp_path):
    conf = tmp_path / "conf" / "task"
    conf.mkdir(parents=True)
    (conf / "parity.yaml").write_text(yaml.safe_dump({"name": "parity", "definition": {
        "_target_": "test_runner.ParityTask", "name": "${..name}", "display_name": "Parity (toy)"}}))
    results, sweep = tmp_path / "results", tmp_path / "multirun"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "tests" / "experiments"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "-m", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
         "task=parity", "model=tiny_bert", "sweep=lr_fourierft", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}",
         f"results_dir={results}", f"checkpoint_dir={tmp_path / 'ckpt'}", "method.n=16", "trainer.epochs=2",
         "trainer.batch_size=16", "trainer.save_strategy=no", "trainer.progress_bar=false", "logger=none"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in results.rglob("*seed*.json")]
    assert len(runs) == 2 and {r["family"] for r in runs} == {"parity"}
    for r in runs:
        best = r["best"]["metrics"]
        assert r["selection"] == {"metric": "validation_accuracy", "split": "validation", "mode": "max",
                                  "value": best["validation_accuracy"]}
        assert best["test_accuracy"] == pytest.approx(100 - best["validation_accuracy"])  # flipped test labels
    # what Optuna was given is each run's validation accuracy: its best value is the best of them, never a test score
    best_value = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    chosen = max(runs, key=lambda r: r["selection"]["value"])
    assert best_value == chosen["best"]["metrics"]["validation_accuracy"] != chosen["best"]["metrics"]["test_accuracy"]
    # the tables know nothing of this family, and show it from its results alone
    subprocess.run([sys.executable, "-m", "scripts.tables", "--results", str(results), "--out", str(tmp_path / "t")],
                   cwd=ROOT, check=True, capture_output=True)
    table = (tmp_path / "t" / "parity.md").read_text()
    assert table.startswith("Toy parity, best epoch: test accuracy") and "| Parity (toy) |" in table
    assert f"{chosen['best']['metrics']['test_accuracy']:.1f} [best of 2]" in table  # the cell chosen on validation


def test_a_selection_on_test_is_refused():
    for metric, split in (("test_accuracy", "validation"), ("accuracy", "test")):
        with pytest.raises(ValueError, match="never selected on a test split"):
            Selection(metric, split=split)
    assert Selection("eval_loss", mode="min").objective(0.25) == -0.25  # Hydra maximises: a loss is negated


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", ""])
def test_names_that_become_folders_are_checked(name, tmp_path):
    with pytest.raises(ValueError, match="becomes a folder name"):
        check_name("task.name", name)
    cfg = compose_config("task=image_folder", f"task.name={name}", f"results_dir={tmp_path / 'results'}")
    with pytest.raises(ValueError, match="becomes a folder name"):
        run(cfg)
    assert not any(tmp_path.rglob("*"))  # nothing written, inside results_dir or outside it
    with pytest.raises(ValueError, match="becomes a folder name"):
        check_name("model.name", "a\\b")


@pytest.mark.parametrize("setting", ["results_dir", "checkpoint_dir"])
def test_a_folder_setting_on_a_file_is_named(tmp_path, setting):
    (tmp_path / "notes.txt").write_text("mine")
    for value, says in ((tmp_path / "notes.txt", "is a file"), (tmp_path / "notes.txt" / "runs", "lies under")):
        cfg = compose_config("task=mrpc", "model=tiny_bert", f"{setting}={value}")
        with pytest.raises(ValueError, match=f"{setting}=.* {says}.*choose a folder path"):
            run(cfg)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def identity(tmp_path, *overrides):
    cfg = compose_config("model=tiny_bert", "task=rte", f"results_dir={tmp_path / 'results'}",
                         f"checkpoint_dir={tmp_path / 'ckpt'}", *overrides)
    return RunIdentity.of(cfg, "glue", "rte")


def test_a_second_start_of_the_same_run_is_refused_a_dead_holder_taken_over_and_the_lock_removed(tmp_path):
    lock = identity(tmp_path).result_file.with_suffix(".lock")
    code = ("import sys, time; from pathlib import Path; from experiments.shared.lock import run_lock\n"
            f"with run_lock(Path({str(lock)!r}), 'x'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match=rf"already in progress \(process {holder.pid} on .* holds"):
        with run_lock(lock, "x"):
            pass
    holder.kill()  # a dead holder: the OS drops its lock, the run can be taken over
    holder.wait()
    with run_lock(lock, "x"):
        with run_lock(lock, "x"):  # held by this process already: no self-deadlock
            assert lock.is_file()
        assert lock.is_file()  # the outer block still holds it
    assert not lock.exists()  # removed when the run ends
    with pytest.raises(KeyError), run_lock(lock, "x"):
        raise KeyError("a run that fails")
    assert not lock.exists()  # however it ends


def test_leftover_temporary_files_are_removed(tmp_path):
    store = ResultStore(identity(tmp_path))
    store.file.parent.mkdir(parents=True)
    stale = store.file.parent / f".{store.file.name}.abc123.tmp"
    stale.write_text("{half")
    store.remove_stale_temporaries()
    assert not stale.exists()


def test_a_nan_first_epoch_is_never_best():
    epochs = [{"epoch": 1.0, "pearson": float("nan")}, {"epoch": 2.0, "pearson": 12.0}, {"epoch": 3.0, "pearson": 11.0}]
    assert best_epoch(epochs, "pearson")["epoch"] == 2.0
    assert best_epoch(epochs, "pearson", mode="min")["epoch"] == 3.0
    with pytest.raises(FloatingPointError, match="every evaluation gave pearson=nan"):
        best_epoch(epochs[:1], "pearson")


@pytest.mark.slow
def test_diverging_training_stops_with_a_clear_error(fast_config):
    cfg = fast_config("model=tiny_bert", "task=rte", "method.n=16", "method.lr=1e30", "trainer.max_grad_norm=1e30",
                      "trainer.logging_steps=1", "trainer.max_train_samples=48")
    with pytest.raises(FloatingPointError, match=r"training loss became nan .*method.lr=1e\+30"):
        run(cfg)


@pytest.mark.slow
def test_overwrite_trains_again_instead_of_reloading_checkpoints(fast_config, tmp_path):
    cfg = fast_config("model=tiny_bert", "task=rte", "method.n=16", "trainer.keep_checkpoints=true")
    run(cfg)
    folder = next((tmp_path / "ckpt").iterdir())
    (folder / "marker").write_text("from the first run")
    run(fast_config("model=tiny_bert", "task=rte", "method.n=16", "trainer.keep_checkpoints=true", "overwrite=true"))
    assert not (folder / "marker").exists()  # the old checkpoints were dropped, not resumed from


def test_wall_time_counts_the_segments_before_a_resume(tmp_path):
    checkpoints = Checkpoints(identity(tmp_path).checkpoints)
    checkpoints.elapsed_file.parent.mkdir(parents=True)
    checkpoints.elapsed_file.write_text('{"seconds": 1234.5}')  # what the killed segment recorded at its last save
    checkpoints.read_earlier_time()
    assert 1234.5 <= checkpoints.elapsed() < 1234.5 + 60


def test_secrets_are_redacted_and_nothing_else():
    from experiments.shared.secrets import redact

    config = {"judge": {"api_key": "sk-1", "apikey": "sk-2", "model": "gpt-4", "base_url": "https://x"},
              "model": {"tokenizer": {"package": "minilm"}, "hf_token": "hf_1", "max_tokens": 64},
              "logger": {"access_token": None, "secret": "s", "password": "p", "credentials": "c"}}
    assert redact(config) == {
        "judge": {"api_key": "<redacted>", "apikey": "<redacted>", "model": "gpt-4", "base_url": "https://x"},
        "model": {"tokenizer": {"package": "minilm"}, "hf_token": "<redacted>", "max_tokens": 64},
        "logger": {"access_token": None, "secret": "<redacted>", "password": "<redacted>", "credentials": "<redacted>"}}


def test_two_runs_sharing_a_checkpoint_folder_do_not_both_start(tmp_path):
    from experiments import runner

    cfg = compose_config("model=tiny_bert", "task=rte", "logger=none", f"results_dir={tmp_path / 'a'}",
                         f"checkpoint_dir={tmp_path / 'ckpt'}")
    other = compose_config("model=tiny_bert", "task=rte", "logger=none", f"results_dir={tmp_path / 'b'}",
                           f"checkpoint_dir={tmp_path / 'ckpt'}")
    held = RunIdentity.of(other, "glue", "rte").checkpoints
    code = ("import time; from pathlib import Path; from experiments.shared.lock import run_lock\n"
            f"with run_lock(Path({str(held) + '.lock'!r}), 'x'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # the first run (results_dir a) is training
        with pytest.raises(RuntimeError, match=rf"already in progress \(process {holder.pid} .*it writes .*ckpt"):
            runner.run(cfg)  # the second (results_dir b) would adopt its checkpoints
    finally:
        holder.kill()
        holder.wait()
