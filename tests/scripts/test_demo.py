"""A newcomer's `make demo`: it trains (the committed results are a reference to compare with, never a reason to
skip), writes outside the tracked tree, and says whether its numbers agree with the reference."""
import json
import subprocess

import pytest

from experiments import runner
from experiments.shared.identity import RunIdentity
from experiments.shared.results import ResultStore

from helpers import GLUE, ROOT, compose_config

DEMOS = ["glue", "e2e", "instruct", "vision"]


@pytest.mark.parametrize("demo", DEMOS)
def test_demos_write_to_the_gitignored_runs_folder(demo):
    cfg = compose_config(f"experiment=demo/{demo}")
    assert cfg.results_dir == "runs/demo"
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/demo/glue/x.json"], cwd=ROOT)
    assert ignored.returncode == 0
    tracked = subprocess.run(["git", "ls-files", "runs"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""


def test_a_fresh_clone_trains_although_the_reference_holds_the_same_run(tmp_path, monkeypatch):
    cfg = compose_config("experiment=demo/glue", "task=mrpc", "method=fourierft", f"data.glue_dir={GLUE}")
    identity = RunIdentity.of(cfg, "glue", "mrpc")
    reference = ROOT / "results/demo" / identity.result_file.relative_to("runs/demo")
    assert reference.is_file()  # the committed reference holds this very run (same settings, same id)...
    monkeypatch.chdir(tmp_path)  # ...and a fresh clone has nothing under runs/: the runner trains
    assert ResultStore(identity).read() is None


def test_make_demo_trains_into_runs_and_compares_with_the_reference():
    dry = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "results_dir=runs/demo" in dry and "task=sst2,mrpc,stsb" in dry
    assert "-m scripts.compare_results --ours runs/demo --reference results/demo" in dry
    reference = subprocess.run(["make", "-n", "demo", "REFERENCE=1"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "results_dir=results/demo" in reference and "require_clean_tree=true" in reference


@pytest.mark.slow
def test_reference_results_are_refused_from_uncommitted_code(monkeypatch, fast_config, tmp_path):
    monkeypatch.setattr(runner, "git_commit", lambda: "0123abc-dirty")
    with pytest.raises(RuntimeError, match="require_clean_tree=true but the code is 0123abc-dirty"):
        runner.run(fast_config("task=mrpc", "model=tiny_bert", "require_clean_tree=true"))
    assert not (tmp_path / "results").exists()
    runner.run(fast_config("task=mrpc", "model=tiny_bert", "method.n=8"))  # allowed, and recorded as dirty
    result = json.loads(next((tmp_path / "results").rglob("*seed0.json")).read_text())
    assert result["git_commit"] == "0123abc-dirty" and result["git_dirty"] is True
