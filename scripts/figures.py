"""The paper's figures from sweep results (conf/sweep/): PNGs plus the numbers behind them as markdown.

- fig1_params_vs_score.png: trainable parameters vs GLUE average, every method (Figure 1)
- fig3_sampling.png: the entry-sampling probability over the centred spectrum for several f_c (Figure 3; a pure
  function of the sampler, no results needed)
- fig4_n_scaling.png: dev score vs adapter parameters, LoRA (r) vs FourierFT (n), per task, mean ± sd over seeds
- fig5_fc.png: dev score vs f_c per task, the uniform draw as a dashed line
- basis.md: the basis ablation table (Table 6)

python scripts/figures.py [--results results/sweeps] [--main results] [--out results/figures]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import _pyplot as _plt  # noqa: E402
from tables import display_name, epoch_scores, fmt, params_plot, read_results, save_png, selected_table  # noqa: E402

from fourierft import frequency_bias  # noqa: E402
from fourierft.files import write_atomic  # noqa: E402


def per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """Best-epoch dev score per configuration: mean and sd over seeds, with its method settings."""
    return (runs.groupby(["model", "method", "variant", "task", "config_id"])
            .agg(score=("score", "mean"), sd=("score", "std"), seeds=("seed", "nunique"),
                 params=("params", "median"), n=("n", "first"), r=("r", "first"), fc=("fc", "first"),
                 basis=("basis", "first"))
            .reset_index())


def sweep_runs(results: Path) -> pd.DataFrame:
    """Best-epoch scores of the swept runs of task-column families (GLUE), with their method settings."""
    raw = [r for r in read_results(results, sweeps=True) if r.report["table"] == "selected"]
    if not raw:
        return pd.DataFrame()
    runs = epoch_scores(raw, "best")
    method_cfg = [r.config["method"] for r in raw]
    runs["n"] = [m.get("n") for m in method_cfg]
    runs["r"] = [m.get("r") for m in method_cfg]
    runs["fc"] = [m.get("fc") for m in method_cfg]
    runs["basis"] = [m.get("basis", "fourier") if m["name"] == "fourierft" else None for m in method_cfg]
    return runs


def task_figure(tasks: list, path: Path, header: list, xlabel: str, draw, log_x: bool = False) -> str:
    """A figure with a panel per task, side by side, each drawn by `draw(ax, task)`, which returns that task's
    markdown rows; saved to `path`. Returns the markdown table (`header` then every task's rows)."""
    fig, axes = _plt().subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    lines = list(header)
    for ax, task in zip(axes[0], tasks):
        lines += draw(ax, task)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(display_name(task))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("dev score (best epoch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    return "\n".join(lines)


def fig3_sampling(out: Path, fcs=(0, 100, 200, 300), size=384, bandwidth=200.0) -> dict:
    """Eq. 5 over a size x size centred spectrum; returns each panel's median radius for the notes."""
    import torch

    plt = _plt()
    fig, axes = plt.subplots(1, len(fcs), figsize=(3.2 * len(fcs), 3.2))
    radius = torch.fft.fftshift(torch.sqrt(torch.fft.fftfreq(size, 1 / size)[:, None] ** 2
                                           + torch.fft.fftfreq(size, 1 / size)[None, :] ** 2))
    medians = {}
    for ax, fc in zip(axes, fcs):
        p = torch.fft.fftshift(frequency_bias(size, size, float(fc), bandwidth))
        p = p / p.sum()
        ax.imshow(p.numpy(), cmap="viridis")
        ax.set_title(f"f_c = {fc}, W = {bandwidth:g}", fontsize=9)
        ax.axis("off")
        order = torch.argsort(radius.flatten())
        cdf = torch.cumsum(p.flatten()[order], 0)
        medians[fc] = float(radius.flatten()[order][torch.searchsorted(cdf, torch.tensor(0.5, dtype=cdf.dtype))])
    fig.suptitle(f"Entry-sampling probability over a {size}x{size} centred spectrum (Eq. 5)", fontsize=10)
    fig.tight_layout()
    save_png(fig, out / "fig3_sampling.png")
    return medians


def fig4_n_scaling(configs: pd.DataFrame, out: Path) -> str:
    rows = configs[(configs.method.isin(["fourierft", "lora"])) & configs.fc.isna()
                   & configs.basis.fillna("fourier").eq("fourier")]
    if rows.empty:
        return ""

    def draw(ax, task):
        lines = []
        for method, key, marker in (("lora", "r", "s"), ("fourierft", "n", "o")):
            curve = rows[(rows.task == task) & (rows.method == method)].sort_values("params")
            if curve.empty:
                continue
            ax.errorbar(curve.params, curve.score, yerr=curve.sd.fillna(0), marker=marker, capsize=3,
                        label=f"{method} ({key})")
            for _, c in curve.iterrows():
                ax.annotate(f"{key}={int(c[key])}", (c.params, c.score), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
                sd = f" ± {fmt(c.sd, 'score')}" if pd.notna(c.sd) else ""
                lines.append(f"| {display_name(task)} | {method} | {key}={int(c[key])} | "
                             f"{fmt(c.params, 'params')} | {int(c.seeds)} | {fmt(c.score, 'score')}{sd} |")
        return lines

    header = ["| task | method | setting | adapter params | seeds | dev score |", "|---|---|---|---|---|---|"]
    return task_figure(sorted(rows.task.unique()), out / "fig4_n_scaling.png", header, "adapter parameters (log)",
                       draw, log_x=True)


def fig5_fc(configs: pd.DataFrame, out: Path) -> str:
    rows = configs[(configs.method == "fourierft") & configs.basis.fillna("fourier").eq("fourier")]
    biased = rows[rows.fc.notna()]
    if biased.empty:
        return ""

    def draw(ax, task):
        lines = []
        for n in sorted(int(n) for n in biased[biased.task == task].n.unique()):
            curve = biased[(biased.task == task) & (biased.n == n)].sort_values("fc")
            ax.errorbar(curve.fc, curve.score, yerr=curve.sd.fillna(0), marker="o", capsize=3, label=f"n={n}")
            uniform = rows[(rows.task == task) & (rows.n == n) & rows.fc.isna()]
            if not uniform.empty:
                ax.axhline(uniform.score.iloc[0], linestyle="--", color="grey", label=f"uniform, n={n}")
                lines.append(f"| {display_name(task)} | {n} | uniform | {int(uniform.seeds.iloc[0])} | "
                             f"{fmt(uniform.score.iloc[0], 'score')} |")
            lines += [f"| {display_name(task)} | {n} | {c.fc:g} | {int(c.seeds)} | {fmt(c.score, 'score')} |"
                      for _, c in curve.iterrows()]
        return lines

    header = ["| task | n | f_c | seeds | dev score |", "|---|---|---|---|---|"]
    return task_figure(sorted(biased.task.unique()), out / "fig5_fc.png", header, "favoured central frequency f_c",
                       draw)


def basis_table(configs: pd.DataFrame) -> str:
    rows = configs[(configs.method == "fourierft") & configs.fc.isna()]
    if rows.basis.fillna("fourier").nunique() < 2:
        return ""
    lines = ["| model | task | n | fourier | random | orthogonal |", "|---|---|---|---|---|---|"]
    for (model, task, n), group in rows.groupby(["model", "task", "n"]):
        by = {b: g.iloc[0] for b, g in group.groupby(group.basis.fillna("fourier"))}
        cells = [f"{fmt(by[b].score, 'score')} ({int(by[b].seeds)} seeds)" if b in by else "-"
                 for b in ("fourier", "random", "orthogonal")]
        lines.append(f"| {model} | {display_name(task)} | {int(n)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fig1(main: Path, out: Path) -> bool:
    runs = [r for r in read_results(main) if r.family == "glue"]
    if not runs:
        return False
    table, _ = selected_table(runs, "best")
    params_plot(table, out / "fig1_params_vs_score.png", "GLUE avg of tasks run (best epoch, median)")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/sweeps"), help="sweep results")
    parser.add_argument("--main", type=Path, default=Path("results"), help="results for Figure 1")
    parser.add_argument("--out", type=Path, default=Path("results/figures"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    notes = ["# Figures and the numbers behind them", ""]
    medians = fig3_sampling(args.out)
    notes += ["## Figure 3: sampling probability", "median radius of a draw (384x384, W=200): "
              + ", ".join(f"f_c={fc}: {m:.0f}" for fc, m in medians.items()), ""]
    if fig1(args.main, args.out):
        notes += ["## Figure 1: parameters vs score", "fig1_params_vs_score.png (the GLUE best-epoch table's rows)",
                  ""]
    runs = sweep_runs(args.results)
    if not runs.empty:
        configs = per_config(runs)
        basis_title = "Table 6: basis ablation (dev score, best epoch, mean over seeds)"
        for title, text in (("Figure 4: score vs parameters", fig4_n_scaling(configs, args.out)),
                            ("Figure 5: score vs f_c", fig5_fc(configs, args.out)),
                            (basis_title, basis_table(configs))):
            if text:
                notes += [f"## {title}", "", text, ""]
    write_atomic(args.out / "figures.md", "\n".join(notes) + "\n")
    print("\n".join(notes))
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
