"""The entry point: unknown presets and choices list what exists, command-line mistakes stop before anything runs."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from experiments.shared.tasks import load_task

from helpers import ROOT, compose_config


def test_a_mistyped_preset_is_hydras_missing_config_and_the_presets_are_listed():
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=glue/roberta_base/mrcp"],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "Could not find 'experiment/glue/roberta_base/mrcp'" in proc.stderr
    listed = subprocess.run([sys.executable, "-c", "from experiments.presets import main; main(['list'])"], cwd=ROOT,
                            capture_output=True, text=True)
    assert "glue/roberta_base/mrpc" in listed.stdout.splitlines()


@pytest.mark.parametrize("override,match", [
    ("task=mnlii", "Could not find 'task/mnlii'"), ("model=gpt5", "Could not find 'model/gpt5'"),
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

    with pytest.raises(ValueError, match="unknown task 'qqqp'; known: alpaca, cars"):
        load_task("qqqp")
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
    (["task.name=café"], r"task.name=café: Hydra reads a value with non-ASCII characters only when it is quoted: "
                         r"write task.name='café' \(in a shell, \"task.name='café'\"\)"),
])
def test_command_line_mistakes_stop_before_anything_runs(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *args, f"results_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())


def test_an_f_c_grid_the_model_cannot_run_is_refused_before_any_job(tmp_path):
    """Every point named is one where the sampler itself fails on the model's layers, and no other is named."""
    import fourierft as ff
    from experiments.shared.grid import grid_values, impossible_points

    argv = ["sweep=fc", "model=tiny_bert", "task=rte", "method.n=200"]
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "-m", *argv, f"results_dir={tmp_path}",
                           f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "these grid points cannot run on model tiny_bert" in proc.stderr
    assert not any(tmp_path.iterdir())  # no job started
    named = {line.split()[0] for line in proc.stderr.splitlines() if line.strip().startswith("method.fc=")}
    cfg = compose_config("model=tiny_bert", "task=rte", "method.n=200")
    values = grid_values(yaml.safe_load((ROOT / "conf" / "sweep" / "fc.yaml").read_text())["hydra"]["sweeper"]["params"],
                         argv)
    assert {p.split()[0] for p in impossible_points(cfg, values)} == named
    d = cfg.model.config.hidden_size
    for fc in values["method.fc"]:
        try:
            ff.sample_entries(d, d, 200, 2024, fc=fc, bandwidth=200.0)
            fails = False
        except ValueError:
            fails = True
        assert fails == (f"method.fc={fc}" in named), fc
    assert "method.fc=0" not in named and named  # some points run, some cannot


def train_in(folder, *args, **env):
    """experiments.train run from `folder` (Hydra's outputs/ and multirun/ are relative to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=folder, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env})


@pytest.mark.parametrize("multirun", [False, True])
def test_no_config_value_puts_a_folder_outside_outputs(tmp_path, multirun):
    here = tmp_path / "a" / "b" / "c" / "d"
    proc = train_in(here, *(["-m"] if multirun else []), "task.name=../../../../../../escaped_task", "seed=0",
                    "method.name=../x", "model=tiny_bert", "logger=none", f"results_dir={here / 'results'}")
    assert proc.returncode != 0 and "task.name='../../../../../../escaped_task' becomes a folder name" in proc.stderr
    made = [p for p in tmp_path.rglob("*") if p.is_file()]
    root = here / ("multirun" if multirun else "outputs")
    assert made and all(root in p.parents for p in made), made  # Hydra's own files, all inside its folder
    assert any(p.name == "config.yaml" for p in made)


def test_a_key_written_into_a_config_file_stops_the_run_before_hydra_writes_it(tmp_path):
    extra = tmp_path / "conf" / "judge"
    extra.mkdir(parents=True)
    (extra / "leaky.yaml").write_text((ROOT / "conf" / "judge" / "openai.yaml").read_text().replace(
        "${oc.env:OPENAI_API_KEY,null}", "sk-written-into-a-file"))
    proc = train_in(tmp_path / "run", f"--config-dir={tmp_path / 'conf'}", "judge=leaky", "logger=none")
    assert proc.returncode != 0
    assert "judge.api_key holds a key written into a config file, which Hydra would copy into" in proc.stderr
    assert not (tmp_path / "run" / "outputs").exists()  # refused before Hydra made the run folder


def test_a_link_out_of_the_results_folder_is_named_as_a_link(tmp_path):
    from experiments.shared.identity import within

    (tmp_path / "results").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "results" / "glue").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=f"{tmp_path / 'results' / 'glue'} is a symbolic link to "
                                         f"{tmp_path / 'elsewhere'}, outside {tmp_path / 'results'}"):
        within(tmp_path / "results", tmp_path / "results" / "glue" / "m" / "rte" / "run.json")
    with pytest.raises(ValueError, match="would lie outside .*not a plain folder name"):
        within(tmp_path / "results", tmp_path / "results" / ".." / "escaped.json")
