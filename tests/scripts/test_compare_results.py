"""scripts/compare_results.py: your runs against a reference, agree / differ / missing."""
import json
import subprocess
import sys

from helpers import ROOT, glue_result


def write_run(folder, task, seed, accuracy, method="fourierft"):
    result = glue_result(task, model="minilm", method=method, variant="n=1000", config_id="abc", seed=seed,
                         best=accuracy, last=accuracy - 1)
    path = folder / "glue" / "minilm" / task / f"{method}-abc-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def compare(ours, reference):
    proc = subprocess.run([sys.executable, "-m", "scripts.compare_results", "--ours", str(ours), "--reference",
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
