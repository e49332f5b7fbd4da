"""make demo-serve: the committed demo adapters served in one mixed batch, every row equal to its adapter alone."""
import subprocess
import sys

import pytest

from helpers import GLUE, ROOT


@pytest.mark.slow
def test_serve_demo_rows_equal_each_adapter_alone():
    proc = subprocess.run([sys.executable, "-m", "scripts.serve_demo", "--results", "results/demo", "--glue-dir",
                           str(GLUE), "--rows", "12"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("equals the adapter alone") == 12 and "DIFFERS" not in proc.stdout
    assert "all rows equal their adapter alone" in proc.stdout and "rows/s" in proc.stdout


@pytest.mark.slow
def test_http_serve_demo_answers_equal_each_adapter_alone():
    pytest.importorskip("ray.serve")
    proc = subprocess.run([sys.executable, "-m", "scripts.serve_http_demo", "--results", "results/demo", "--requests",
                           "10", "--max-tokens", "6"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "10 of 10 answers equal their adapter alone's greedy generate" in proc.stdout
    assert proc.stdout.count("ok  ") == 10 and "DIFF" not in proc.stdout
