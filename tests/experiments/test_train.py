"""The entry point: unknown presets and choices list what exists, command-line mistakes stop before anything runs."""
import os
import re
import subprocess
import sys

import pytest

from experiments.shared.tasks import load_task

from helpers import ROOT


def test_mistyped_preset_lists_the_available_ones():
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=glue/roberta_base/mrcp"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "unknown experiment preset 'glue/roberta_base/mrcp'; available:" in proc.stderr
    assert "glue/roberta_base/mrpc" in proc.stderr


@pytest.mark.parametrize("override,match", [
    ("task=mnli", "Could not find 'task/mnli'"), ("model=gpt5", "Could not find 'model/gpt5'"),
    ("method=adapterdrop", "Could not find 'method/adapterdrop'")])
def test_unknown_choices_list_the_options(tmp_path, override, match):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", override, "logger=none"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert match in proc.stderr and "Available options" in proc.stderr


def test_unknown_values_in_code_paths():
    from transformers import AutoModelForSequenceClassification

    from experiments.shared import sources
    from experiments.shared.backbones import HubModel

    with pytest.raises(ValueError, match="unknown task 'mnli'; known: alpaca, cars"):
        load_task("mnli")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sources.hub_reachable.cache_clear()
    try:
        roberta = HubModel("roberta_base", "FacebookAI/roberta-base", ["query"], ["classifier"], offline_default="minilm")
        with pytest.raises(RuntimeError, match="offline default model=minilm"):
            roberta.load(AutoModelForSequenceClassification, num_labels=2)
    finally:
        del os.environ["HF_HUB_OFFLINE"]
        sources.hub_reachable.cache_clear()


@pytest.mark.parametrize("args,message", [
    (["sweep=basis"], "sweep=basis runs several jobs: add -m"),
    (["-m", "sweep=lr_fourierft", "hydra.sweeper.n_trials=0"], r"hydra.sweeper.n_trials=0 \(accepted: an integer >= 1\)"),
    (["-m", "sweep=fc", "method=lora"],
     r"sweep=fc sweeps method=fourierft's settings \(method.bandwidth, method.fc\); it cannot run method=lora"),
    (["-m", "sweep=basis", "method=lora"], r"sweep=basis sweeps method=fourierft's settings \(\+method.basis\)"),
])
def test_command_line_mistakes_stop_before_anything_runs(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *args, f"results_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())
