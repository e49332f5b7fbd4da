"""The hyperparameter tables (conf/tables/) as Hydra serves them: a row's cells reach the run, a mistyped method is
refused, `--cfg job` prints the run's values."""
import subprocess
import sys

import pytest

from experiments.presets import read_tables

from helpers import ROOT


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_levels_merge_and_models_multiply_rows(tmp_path):
    write(tmp_path, "fam/base.yaml", """
groups: {model: m0}
values: {trainer: {epochs: 3, batch_size: 8}}
lora: {method: {r: 4, lr: 0.1}}
models: [m1, m2]
rows:
  t1: {groups: {task: t1}, values: {trainer: {epochs: 5}}, lora: {method: {lr: 0.2}}}
  t2: {groups: {task: t2}, fourierft: {method: {n: 7}}}
""")
    found = read_tables(tmp_path)
    assert sorted(found) == ["fam/base/m1/t1", "fam/base/m1/t2", "fam/base/m2/t1", "fam/base/m2/t2"]
    defaults, values, per_method, table = found["fam/base/m2/t1"]
    assert table == tmp_path / "fam" / "base.yaml"
    assert defaults == [{"override /model": "m2"}, {"override /task": "t1"}]  # the model list beats the table's model
    assert values == {"trainer": {"epochs": 5, "batch_size": 8}}
    assert per_method == {"lora": {"method": {"r": 4, "lr": 0.2}}}
    assert found["fam/base/m1/t2"][2] == {"lora": {"method": {"r": 4, "lr": 0.1}}, "fourierft": {"method": {"n": 7}}}


@pytest.mark.parametrize("where, text", [
    ("row t1", "rows:\n  t1: {lroa: {method: {r: 4}}}\n"),
    ("the table", "fourier: {method: {n: 4}}\nrows:\n  t1: {}\n"),
])
def test_a_mistyped_method_is_refused_with_the_file(tmp_path, where, text):
    write(tmp_path, "x.yaml", text)
    with pytest.raises(ValueError, match=rf"x.yaml: {where} has (lroa|fourier), which is not a method \(bitfit, "):
        read_tables(tmp_path)


def test_a_table_without_rows_is_refused(tmp_path):
    write(tmp_path, "x.yaml", "values: {trainer: {epochs: 1}}\n")
    with pytest.raises(ValueError, match="x.yaml has no rows"):
        read_tables(tmp_path)


def test_cfg_job_prints_the_run_values():
    out = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=glue/roberta_base/cola",
                          "method=lora", "--cfg", "job"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    method, trainer = out.split("\nmethod:\n")[1], out.split("\ntrainer:\n")[1]
    assert "  lr: 0.0004\n" in method and "  head_lr: 0.0004\n" in method and "  r: 8\n" in method
    assert "  epochs: 80\n" in trainer and "  batch_size: 32\n" in trainer and "  max_length: 512\n" in trainer


def run_config_id(*overrides):
    from omegaconf import OmegaConf

    from experiments.shared.identity import comparable_settings, config_id

    from helpers import compose_config

    return config_id(comparable_settings(OmegaConf.to_container(compose_config(*overrides), resolve=True)))


@pytest.mark.parametrize("preset, method", [("glue/roberta_base/mrpc", "lora"), ("vision/vit_large/dtd", "fourierft"),
                                            ("instruct/llama2_7b", "fourierft"), ("demo/e2e", "lora")])
def test_a_preset_written_as_an_experiment_file_composes_to_the_same_run(tmp_path, preset, method):
    """fourierft-presets cp: the file it writes, found on Hydra's search path as a user's experiment file, composes
    to the preset's config id for that method (and not to another method's)."""
    from experiments.presets import main

    written = tmp_path / "conf" / "experiment" / "mine.yaml"
    assert main(["cp", preset, str(written), "--method", method]) == 0
    assert written.read_text().startswith("# @package _global_\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    assert run_config_id(search, "experiment=mine") == run_config_id(f"experiment={preset}", f"method={method}")
    other = "full" if method != "full" else "lora"
    assert run_config_id(search, "experiment=mine") != run_config_id(f"experiment={preset}", f"method={other}")
    with pytest.raises(SystemExit, match="exists: --force replaces it"):
        main(["cp", preset, str(written)])
    with pytest.raises(SystemExit, match="unknown preset 'glue/roberta_base/mrcp'"):
        main(["show", "glue/roberta_base/mrcp"])


@pytest.mark.slow
def test_a_plain_experiment_file_runs_and_its_result_says_what_composed_it(tmp_path):
    """conf/experiment/example.yaml is written the way lightning-hydra-template writes one (`# @package _global_`,
    defaults overrides); the run's result names the experiment and the groups it chose."""
    import json
    import os

    from helpers import FAST

    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", "experiment=example", "model=tiny_bert", *FAST,
         f"results_dir={tmp_path / 'results'}", f"checkpoint_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next((tmp_path / "results").rglob("*seed*.json")).read_text())
    assert result["composed_from"]["experiment"] == "example"
    assert (result["composed_from"]["task"], result["composed_from"]["method"]) == ("rte", "fourierft")
    assert result["config"]["method"]["n"] == 200 and result["task"] == "rte"
