"""A newcomer's `make demo`: it trains (the committed results are a reference to compare with, never a reason to
skip), writes outside the tracked tree, and says whether its numbers agree with the reference."""
import json
import subprocess
import sys

import pytest

from experiments.shared import run as run_module
from experiments.shared.run import Run

from conftest import GLUE, ROOT, compose_config

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
    reference = ROOT / "results/demo" / Run(cfg, "glue", "mrpc").result_file.relative_to("runs/demo")
    assert reference.is_file()  # the committed reference holds this very run (same settings, same id)...
    monkeypatch.chdir(tmp_path)  # ...and a fresh clone has nothing under runs/: the runner trains
    assert Run(cfg, "glue", "mrpc").finished() is None


def test_make_demo_trains_into_runs_and_compares_with_the_reference():
    dry = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "results_dir=runs/demo" in dry and "task=sst2,mrpc,stsb" in dry
    assert "scripts/compare_results.py --ours runs/demo --reference results/demo" in dry
    reference = subprocess.run(["make", "-n", "demo", "REFERENCE=1"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "results_dir=results/demo" in reference and "require_clean_tree=true" in reference


def test_reference_results_are_refused_from_uncommitted_code(monkeypatch, fast_config):
    monkeypatch.setattr(run_module, "git_commit", lambda: "0123abc-dirty")
    with pytest.raises(RuntimeError, match="require_clean_tree=true but the code is 0123abc-dirty"):
        Run(fast_config("task=mrpc", "model=tiny_bert", "require_clean_tree=true"), "glue", "mrpc")
    dirty = Run(fast_config("task=mrpc", "model=tiny_bert"), "glue", "mrpc")  # allowed, and recorded as dirty
    assert dirty.write_result(trainable=1, total=1, head_params=0, variant="", adapter_bytes=None)["git_dirty"]


def write_run(folder, task, seed, accuracy, method="fourierft"):
    result = {"family": "glue", "model": "minilm", "task": task, "method": method, "variant": "n=1000",
              "config_id": "abc", "seed": seed, "best": {"metrics": {"accuracy": accuracy}},
              "last": {"metrics": {"accuracy": accuracy - 1}}}
    path = folder / "glue" / "minilm" / task / f"{method}-abc-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def compare(ours, reference):
    proc = subprocess.run([sys.executable, "scripts/compare_results.py", "--ours", str(ours), "--reference",
                           str(reference)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_compare_says_agree_differ_and_missing(tmp_path):
    ours, reference = tmp_path / "ours", tmp_path / "reference"
    write_run(reference, "mrpc", 0, 70.0)
    write_run(reference, "stsb", 0, 60.0)
    write_run(ours, "mrpc", 0, 70.5)   # within 0.1 + 2% of 70
    write_run(ours, "sst2", 0, 80.0)   # no reference
    out = compare(ours, reference)
    assert "| minilm mrpc fourierft n=1000 seed 0 | best.accuracy | 70.5 | 70 | agrees |" in out
    assert "no reference run" in out and "not run here" in out
    assert "all 2 shared metrics agree" in out
    write_run(ours, "mrpc", 0, 65.0)
    out = compare(ours, reference)
    assert "DIFFERS by -5" in out and "2 of 2 shared metrics DIFFER" in out


def test_bench_times_each_method_in_its_own_processes_and_records_the_cpu(tmp_path):
    """The benchmark's bookkeeping (no timing is asserted): rounds of one process per method, times pooled,
    median and minimum reported, the CPU's bf16-relevant flags recorded."""
    proc = subprocess.run([sys.executable, "scripts/bench.py", "--tiny", "--device", "cpu", "--rounds", "3", "--steps",
                           "2", "--warmup", "1", "--shapes", "roberta_base", "--dtypes", "fp32", "--methods", "floor",
                           "ours_auto", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (report_file,) = tmp_path.glob("*.json")
    report = json.loads(report_file.read_text())
    assert report["processes_per_method"] == 3 and "capability" in report["hardware"]
    assert isinstance(report["hardware"]["flags"], list)
    assert [r["method"] for r in report["rows"]] == ["floor", "ours_auto"]
    for row in report["rows"]:
        assert row["steps"] == 6 and row["processes"] == 3 and row["step_ms_min"] <= row["step_ms"]
    assert "median and min over all timed steps" in (tmp_path / report_file.with_suffix(".md").name).read_text()
