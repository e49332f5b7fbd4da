"""Committed sweeps: each composes, runs in parallel through the joblib launcher; Optuna's LR search runs; the SLURM
launcher's settings are all submitit's, and the submitit plugin runs a sweep with its local executor (SLURM itself
cannot run here)."""
import json
import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from helpers import GLUE, ROOT

SWEEPS = sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))


TINY = ["model=tiny_bert", "task=rte", "logger=none", f"data.glue_dir={GLUE}", "trainer.max_train_samples=16",
        "trainer.max_eval_samples=16", "trainer.epochs=1", "trainer.batch_size=8", "trainer.max_length=32",
        "trainer.progress_bar=false"]


def hydra_config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_with_a_preset(sweep):
    cfg = hydra_config(f"sweep={sweep}", "experiment=glue/roberta_base/rte")
    params = cfg.hydra.sweeper.params
    assert params and "method" in params
    assert str(cfg.results_dir).startswith("results/sweeps/")  # never into the main tables
    if sweep.startswith("lr_"):
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"


def test_submitit_accepts_every_slurm_setting_and_renders_the_sbatch_script(tmp_path, monkeypatch):
    """What the plugin hands submitit (its launch(): base settings as they are, the rest prefixed slurm_): submitit
    refuses a parameter sbatch does not know, so a mistyped or outdated key fails here, not on the cluster."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    cfg = hydra_config("hydra/launcher=slurm", "experiment=glue/roberta_base/rte", "hydra.launcher.partition=gpu")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun here
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout")})
    script = executor._executor._make_submission_file_text("python -m experiments.train", "0")
    for line in ("--gpus-per-node=1", "--partition=gpu", "--time=720", "--cpus-per-task=8", "--mem=64GB"):
        assert f"#SBATCH {line}" in script, line


@pytest.mark.slow
def test_a_sweep_runs_through_the_submitit_plugin(tmp_path):
    """The SLURM launcher is the submitit plugin: its local executor runs the same pickled job function here."""
    results = run_sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
                        "method=fourierft", "method.n=16", "seed=0,1")
    assert sorted(r["seed"] for r in results) == [0, 1] and {r["task"] for r in results} == {"rte"}


def run_sweep(tmp_path, *overrides, results="results", ok=True):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "-m", *TINY, *overrides,
                           f"results_dir={tmp_path / results}", f"checkpoint_dir={tmp_path / 'ckpt'}",
                           f"hydra.sweep.dir={tmp_path / 'multirun'}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    assert (proc.returncode == 0) == ok, (proc.stdout + proc.stderr)[-3000:]
    run_sweep.output = proc.stdout + proc.stderr
    return [json.loads(p.read_text()) for p in (tmp_path / results).rglob("*seed*.json")]


@pytest.mark.slow
def test_basis_sweep_runs_in_parallel_with_two_workers(tmp_path):
    results = run_sweep(tmp_path, "sweep=basis", "method.n=16", "seed=0,1", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", results="sweeps/basis")
    assert len(results) == 6  # three bases x two seeds, one result each, none lost to a collision
    assert sorted(r["variant"] for r in results) == sorted(
        ["n=16", "n=16, basis=random", "n=16, basis=orthogonal"] * 2)
    assert not list((tmp_path / "sweeps").rglob("*.tmp"))
    out = tmp_path / "figures"
    subprocess.run([sys.executable, "-m", "scripts.figures", "--results", str(tmp_path / "sweeps"), "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True)
    table = (out / "figures.md").read_text()
    assert "| tiny_bert | RTE | 16 |" in table and "(2 seeds)" in table


@pytest.mark.slow
def test_optuna_lr_search_runs_trials_in_parallel(tmp_path):
    """The README's parallel command: the sweeper asks for 2 trials at a time and the joblib launcher runs them in
    one parallel batch (with hydra.sweeper.n_jobs=1 it gets two batches of one: the test then fails)."""
    results = run_sweep(tmp_path, "sweep=lr_fourierft", "method.n=16", "hydra.sweeper.n_trials=2",
                        "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert len(results) == 2 and len({r["config"]["method"]["lr"] for r in results}) == 2
    for r in results:
        assert 0.005 <= r["config"]["method"]["lr"] <= 0.5
    batches = re.findall(r"Joblib.Parallel\(n_jobs=2.*?is launching (\d+) jobs", run_sweep.output)
    assert batches == ["2"], run_sweep.output[-2000:]


@pytest.mark.slow
def test_a_failed_job_logs_its_error(tmp_path):
    run_sweep(tmp_path, "method.lr=0.1,nan", ok=False)
    failed = [log.read_text() for log in (tmp_path / "multirun").rglob("train.log") if "run failed" in log.read_text()]
    assert len(failed) == 1 and "method.lr=nan" in failed[0]
