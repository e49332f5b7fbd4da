"""scripts/bench.py: each method timed in its own processes, the CPU recorded."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT


def test_bench_times_each_method_in_its_own_processes_and_records_the_cpu(tmp_path):
    """The benchmark's bookkeeping (no timing is asserted): rounds of one process per method, times pooled,
    median and minimum reported, the CPU's bf16-relevant flags recorded."""
    proc = subprocess.run([sys.executable, "-m", "scripts.bench", "--tiny", "--device", "cpu", "--rounds", "3", "--steps",
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


@pytest.mark.slow  # seven worker processes
def test_bench_serve_pools_rounds_and_counts_n_by_layers_floats_per_resident_adapter(tmp_path):
    """scripts/bench_serve.py's bookkeeping (no timing is asserted): K adapters only where R holds them, times pooled
    over rounds, and the adapter memory FourierFT serving and PEFT LoRA report for R resident adapters."""
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_serve", "--tiny", "--device", "cpu", "--rounds", "2",
                           "--steps", "2", "--warmup", "0", "--n", "50", "--shapes", "roberta_base", "--resident", "1",
                           "8", "--methods", "floor", "ours_mixed", "lora_peft", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(next(tmp_path.glob("serve-*.json")).read_text())
    rows = {(r["method"], r["resident"], r["k"]): r for r in report["rows"]}
    assert set(rows) == {("floor", 0, 1), ("ours_mixed", 1, 1), ("lora_peft", 1, 1), ("ours_mixed", 8, 1),
                         ("ours_mixed", 8, 8), ("lora_peft", 8, 1), ("lora_peft", 8, 8)}
    layers = 2  # the tiny shape's one layer, query and value
    assert rows["ours_mixed", 8, 8]["adapter_bytes"] == 8 * 50 * layers * 4
    assert rows["lora_peft", 8, 8]["adapter_bytes"] == 8 * 8 * (64 + 64) * layers * 4
    for row in report["rows"]:
        assert row["steps"] == 4 and row["ms_min"] <= row["ms"]
    assert rows["floor", 0, 1]["x_floor"] == 1.0


@pytest.mark.slow
def test_bench_serve_http_writes_a_row_per_backend_k_and_concurrency(tmp_path):
    """The HTTP benchmark's bookkeeping on a tiny LLaMA (the real run's SmolLM2 only makes it slower): a row per
    backend, K and concurrency with tokens, latency and time to first token, the in-process ceiling, and the short
    request behind long ones."""
    import os

    from helpers import tiny_llama_folder

    pytest.importorskip("ray.serve")
    base = tiny_llama_folder(tmp_path / "base", context=256)
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_serve_http", "--ks", "2", "--backends", "fourierft",
                           "peft-lora", "--concurrency", "1", "3", "--rounds", "2", "--max-tokens", "4", "--short",
                           "--ceiling", "4", "--base", str(base), "--out", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = list((tmp_path / "out").glob("serve-http-*.json"))
    rows = json.loads(result.read_text())["rows"]
    loads = [r for r in rows if r["kind"] == "load"]
    assert [(r["backend"], r["adapters"], r["concurrency"]) for r in loads] == [
        ("fourierft", 2, 1), ("fourierft", 2, 3), ("peft-lora", 2, 1), ("peft-lora", 2, 3)]
    for row in loads:
        assert row["tokens_per_s"] > 0 and row["p99_s"] >= row["p50_s"] >= row["ttft_p50_s"] > 0
        assert row["requests"] == max(4, 2 * row["concurrency"]) and row["rows_per_step"]
    [ceiling] = [r for r in rows if r["kind"] == "ceiling"]
    assert ceiling["rows"] == 4 and ceiling["tokens_per_s"] > 0
    assert {r["backend"] for r in rows if r["kind"] == "short"} == {"fourierft", "peft-lora"}
    md = (tmp_path / "out" / result.name.replace(".json", ".md")).read_text()
    assert "| fourierft | 2 | 3 |" in md and "Ceiling, K=2: 4 rows" in md and "Short behind long" in md
