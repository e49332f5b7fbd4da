"""scripts/bench.py: each method timed in its own processes, the CPU recorded."""
import json
import subprocess
import sys

from helpers import ROOT


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
