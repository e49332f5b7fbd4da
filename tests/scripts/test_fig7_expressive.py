"""scripts/fig7_expressive.py (Figure 7): both adapters train exactly 128 numbers of the one hidden layer; the summary
is what the per-epoch curves say, for a short run here and for the committed results."""
import csv
import subprocess
import sys

import pytest

from helpers import ROOT


def summary_rows(path):
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[0] in ("lora", "fourierft"):
            rows[(cells[0], int(cells[1]))] = cells
    return rows


def check_summary_against_curves(folder):
    curves = {}
    with open(folder / "curves.csv") as f:
        for row in csv.DictReader(f):
            curves.setdefault((row["method"], int(row["seed"])), []).append(float(row["accuracy"]))
    summary = summary_rows(folder / "summary.md")
    assert summary and set(summary) == set(curves)
    for key, curve in curves.items():
        method, seed, lr, tried, inside, final, best, first = summary[key]
        tried = [float(t) for t in tried.split(",")]
        assert float(lr) in tried and (inside == "yes") == (min(tried) < float(lr) < max(tried))
        reached = next((i + 1 for i, a in enumerate(curve) if a == 1.0), None)
        assert float(final) == pytest.approx(100 * curve[-1], abs=0.006)
        assert float(best) == pytest.approx(100 * max(curve), abs=0.006)
        assert first == (str(reached) if reached else "never")


def test_both_adapters_train_128_numbers_of_the_hidden_layer_only():
    from scripts import fig7_expressive as fig7

    for method in ("lora", "fourierft"):
        model = fig7.adapted(method, seed=0)
        trained = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
        assert sum(trained.values()) == 128 and all("hidden" in n for n in trained), (method, trained)


def test_a_short_run_writes_curves_and_a_summary_that_agree(tmp_path):
    subprocess.run([sys.executable, "-m", "scripts.fig7_expressive", "--out", str(tmp_path), "--seeds", "0",
                    "--epochs", "60"], cwd=ROOT, check=True, capture_output=True)
    check_summary_against_curves(tmp_path)
    assert (tmp_path / "fig7_expressive.png").stat().st_size > 5000
    assert sum(1 for _ in open(tmp_path / "data.csv")) == 801  # header + 8 classes x 100 points


def test_the_committed_figure_7_summary_is_what_its_curves_say():
    check_summary_against_curves(ROOT / "results" / "fig7")


def test_zero_epochs_is_refused():
    proc = subprocess.run([sys.executable, "-m", "scripts.fig7_expressive", "--epochs", "0", "--out", "/nonexistent"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--epochs 0" in proc.stderr and "at least one epoch" in proc.stderr


def test_the_lr_search_widens_until_the_best_lies_inside():
    """A best LR at an edge of the grid extends the grid a half-decade that way, until it lies strictly inside (or
    the widening bound is reached and the summary says so)."""
    from scripts import fig7_expressive as fig7

    assert [fig7.half_decade(x, True) for x in (3e-3, 1e-2, 0.3, 1.0)] == pytest.approx([1e-2, 3e-2, 1.0, 3.0])
    assert [fig7.half_decade(x, False) for x in (3e-3, 1e-2, 1.0)] == pytest.approx([1e-3, 3e-3, 0.3])
    peak = 30.0  # final accuracy rises towards LR 30 and falls past it
    runs = []

    def run(lr):
        runs.append(lr)
        return [1.0 - abs(fig7.math.log10(lr / peak)) / 10]

    lr, curves, inside = fig7.bracketed_search(run, (0.03, 0.1, 0.3, 1.0))
    assert lr == pytest.approx(peak) and inside and max(curves) > peak
    lr, curves, inside = fig7.bracketed_search(lambda lr: [min(lr, 1e9)], (0.03, 0.1, 0.3, 1.0))
    assert not inside and len(curves) == 4 + fig7.WIDEN
