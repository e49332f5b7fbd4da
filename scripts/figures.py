"""The paper's figures from sweep results (conf/sweep/): PNGs plus the numbers behind them as markdown. Each figure
reads only its own sweeps' folder under --results (the folder its sweep configs write to):

- fig1_params_vs_score.png (fig1_instruct/, fig1_vit/): the paper's Figure 1, two panels: instruction tuning
  (MT-Bench score; paper: LLaMA-2-7B, LoRA r = 32/64/128 vs FourierFT n = 1000/2000) and ViT (test accuracy;
  paper: ViT-B on DTD, LoRA r = 8/16/32 vs n = 3000/10000), score vs trainable parameters without the head
- fig3_sampling.png: the entry-sampling probability over the centred spectrum for several f_c (Figure 3; a pure
  function of the sampler, no results needed)
- fig4_n_scaling.png (fig4/): dev score vs adapter parameters, LoRA (r) vs FourierFT (n), per task; each point is
  the configuration (learning rates) with the best mean dev score among those run for it, as the paper tuned per
  point (`make figure4` runs an Optuna search per point)
- fig5_fc.png (fc/): dev score vs f_c per task, the sweep's own uniform run (f_c null) as a dashed line
- fig6_training.png (fig6/): dev accuracy, F1 and training loss per epoch of LoRA r = 1 and FourierFT n = 1536 on
  MRPC (Figure 6; the same trainable parameter count), mean over seeds
- basis.md (basis/): the basis ablation table (Table 6)

The GLUE parameters-vs-score plot of the main results is scripts/tables.py's glue_params_vs_score.png.

python -m scripts.figures [--results results/sweeps] [--out results/figures]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from fourierft import frequency_bias
from fourierft.files import write_atomic
from scripts.tables import display_name, epoch_scores, fmt, read_results, save_png
from scripts.tables import pyplot as _plt

FOLDERS = {"fig1": ("fig1_instruct", "fig1_vit"), "fig4": "fig4", "fig5": "fc", "fig6": "fig6", "basis": "basis"}


FIG4_TASKS = ("mrpc", "cola", "rte", "stsb", "sst2", "qqp")  # the paper's panels, in its order
FIG5_TASKS = ("rte", "mrpc", "stsb", "cola")


def paper_order(tasks, order) -> list:
    """The tasks in the paper's panel order, any others after them."""
    return [t for t in order if t in set(tasks)] + sorted(set(tasks) - set(order))


def per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """Best-epoch dev score per configuration: mean and sd over seeds, with its method settings."""
    return (runs.groupby(["model", "method", "variant", "task", "config_id"])
            .agg(score=("score", "mean"), sd=("score", "std"), select=("select", "mean"), seeds=("seed", "nunique"),
                 params=("params", "median"), n=("n", "first"), r=("r", "first"), fc=("fc", "first"),
                 basis=("basis", "first"))
            .reset_index())


def best_per_point(configs: pd.DataFrame, keys: list) -> pd.DataFrame:
    """One row per `keys`: the configuration with the best mean selection metric (dev, never test) among those
    run for it, with `tried` = how many were run."""
    if configs.empty:
        return configs
    rows = []
    for _, group in configs.groupby(keys, dropna=False):
        select = group["select"]
        best = group.loc[select.idxmax()] if select.notna().any() else group.iloc[0]
        rows.append(best.copy())
        rows[-1]["tried"] = group["config_id"].nunique()
    return pd.DataFrame(rows).reset_index(drop=True)


def sweep_runs(results: Path) -> pd.DataFrame:
    """Best-epoch scores of the runs under `results` (one figure's sweeps) of task-column families (GLUE), with
    their method settings."""
    if not results.is_dir():
        return pd.DataFrame()
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


def fig3_sampling(out: Path, fcs=(0, 100, 200, 350, 480), size=768, bandwidth=200.0) -> dict:
    """Figure 3 as the paper drew it: Eq. 5's p(u, v) over a 768 x 768 centred spectrum for f_c = 0, 100, 200, 350
    and 480, W = 200, every panel on one 0-1 colour scale (p itself, whose peak is 1 at D = f_c; not normalised per
    panel). Returns each panel's median sampling radius (of p normalised to a distribution) for the notes."""
    import torch

    plt = _plt()
    fig, axes = plt.subplots(1, len(fcs), figsize=(3.0 * len(fcs) + 0.8, 3.2), squeeze=False)
    radius = torch.fft.fftshift(torch.sqrt(torch.fft.fftfreq(size, 1 / size)[:, None] ** 2
                                           + torch.fft.fftfreq(size, 1 / size)[None, :] ** 2))
    medians, image = {}, None
    for ax, fc in zip(axes[0], fcs):
        p = torch.fft.fftshift(frequency_bias(size, size, float(fc), bandwidth)).double()
        image = ax.imshow(p.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"$f_c$ = {fc}", fontsize=10)
        ax.axis("off")
        p = p / p.sum()
        order = torch.argsort(radius.flatten())
        cdf = torch.cumsum(p.flatten()[order], 0)
        medians[fc] = float(radius.flatten()[order][torch.searchsorted(cdf, torch.tensor(0.5, dtype=cdf.dtype))])
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.02, ticks=[0, 0.5, 1])
    fig.suptitle(f"Entry sampling probability, {size} x {size} spectrum, W = {bandwidth:g} (Eq. 5)", fontsize=10)
    save_png(fig, out / "fig3_sampling.png")
    return medians


def per_layer(rows: pd.DataFrame) -> pd.Series:
    """Trainable parameters per adapted layer, Figure 4's x (as ln): n for FourierFT; for LoRA its parameters over
    the number of layers adapted, which the FourierFT runs of the same model give (their parameters over n)."""
    fourier = rows[rows.method == "fourierft"]
    layers = (fourier.params / fourier.n).groupby(fourier.model).median()
    return (rows.params / rows.model.map(layers)).where(rows.method == "lora", rows.n)


def fig4_n_scaling(configs: pd.DataFrame, out: Path) -> str:
    """Figure 4 as the paper drew it: per task, dev score against ln(trainable parameters per layer), LoRA (r)
    against FourierFT (n), each point the best of its tuned configurations."""
    import numpy as np

    rows = configs[(configs.method.isin(["fourierft", "lora"])) & configs.fc.isna()
                   & configs.basis.fillna("fourier").eq("fourier")]
    if rows.empty:
        return ""
    rows = best_per_point(rows, ["task", "method", "variant"])
    rows = rows.assign(per_layer=per_layer(rows))
    rows = rows.assign(ln_per_layer=np.log(rows.per_layer))

    def draw(ax, task):
        lines = []
        for method, key, marker in (("lora", "r", "s"), ("fourierft", "n", "o")):
            curve = rows[(rows.task == task) & (rows.method == method)].dropna(subset=["ln_per_layer"])
            curve = curve.sort_values("ln_per_layer")
            if curve.empty:
                continue
            ax.errorbar(curve.ln_per_layer, curve.score, yerr=curve.sd.fillna(0), marker=marker, capsize=3,
                        label={"lora": "LoRA", "fourierft": "FourierFT"}[method])
            for _, c in curve.iterrows():
                ax.annotate(f"{key}={int(c[key])}", (c.ln_per_layer, c.score), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
                sd = f" ± {fmt(c.sd, 'score')}" if pd.notna(c.sd) else ""
                lines.append(f"| {display_name(task)} | {method} | {key}={int(c[key])} | {int(c.per_layer)} | "
                             f"{c.ln_per_layer:.2f} | {int(c.tried)} | {int(c.seeds)} | "
                             f"{fmt(c.score, 'score')}{sd} |")
        return lines

    header = ["| task | method | setting | params per layer | ln | configurations tried (best dev shown) | seeds | "
              "dev score |", "|---|---|---|---|---|---|---|---|"]
    text = task_figure(paper_order(rows.task.unique(), FIG4_TASKS), out / "fig4_n_scaling.png", header,
                       "ln # trainable parameters (per layer)", draw)
    uncounted = sorted(set(rows[rows.per_layer.isna()].model))
    if uncounted:  # said, never a curve that silently goes missing
        text += (f"\n\nLoRA points of {', '.join(uncounted)} are not drawn: their layers are counted from a FourierFT "
                 "run of the same model (its parameters over n), and there is none in fig4/.")
    return text


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
                ax.axhline(uniform.score.iloc[0], linestyle="--", color="grey", label=f"No bias, n={n}")
                lines.append(f"| {display_name(task)} | {n} | uniform | {int(uniform.seeds.iloc[0])} | "
                             f"{fmt(uniform.score.iloc[0], 'score')} |")
            lines += [f"| {display_name(task)} | {n} | {c.fc:g} | {int(c.seeds)} | {fmt(c.score, 'score')} |"
                      for _, c in curve.iterrows()]
        return lines

    header = ["| task | n | f_c | seeds | dev score |", "|---|---|---|---|---|"]
    return task_figure(paper_order(biased.task.unique(), FIG5_TASKS), out / "fig5_fc.png", header,
                       "favoured central frequency f_c", draw)


def epoch_curves(runs: list) -> pd.DataFrame:
    """Per run and epoch: dev accuracy and F1 (x100), and the mean of the training losses logged in that epoch."""
    rows = []
    for r in runs:
        losses = r.outcome.get("train_loss") or []
        previous = 0.0
        for e in r.outcome["epochs"]:
            logged = [x["loss"] for x in losses if previous < x["epoch"] <= e["epoch"]]
            rows.append({"method": r.method, "variant": r.variant, "seed": r.seed, "epoch": e["epoch"],
                         "accuracy": e.get("accuracy"), "f1": e.get("f1"),
                         "train_loss": sum(logged) / len(logged) if logged else float("nan")})
            previous = e["epoch"]
    return pd.DataFrame(rows)


def fig6_training(results: Path, out: Path) -> str:
    """Figure 6: per epoch, dev accuracy, F1 and training loss, one line per configuration (mean over seeds)."""
    runs = [r for r in read_results(results, sweeps=True) if r.report["table"] == "selected"] \
        if results.is_dir() else []
    if not runs:
        return ""
    curves = epoch_curves(runs).groupby(["method", "variant", "epoch"]).agg(
        accuracy=("accuracy", "mean"), f1=("f1", "mean"), train_loss=("train_loss", "mean"),
        seeds=("seed", "nunique")).reset_index()
    fig, axes = _plt().subplots(1, 3, figsize=(13, 3.4))
    for (method, variant), curve in curves.groupby(["method", "variant"]):
        for ax, column in zip(axes, ("accuracy", "f1", "train_loss")):
            ax.plot(curve.epoch, curve[column], label=f"{method} ({variant})")
    for ax, label in zip(axes, ("Accuracy", "F1 Score", "Training Loss")):
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out / "fig6_training.png")
    lines = ["| method | variant | epoch | seeds | accuracy | F1 | training loss |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {c.method} | {c.variant} | {c.epoch:g} | {int(c.seeds)} | {fmt(c.accuracy, 'score')} | "
              f"{fmt(c.f1, 'score')} | {c.train_loss:.4f} |" for c in curves.itertuples()]
    return "\n".join(lines)


def basis_table(configs: pd.DataFrame) -> str:
    """Our runs per basis beside the paper's Table 6 (paper/basis.yaml) where it has the model and task."""
    import yaml

    rows = configs[(configs.method == "fourierft") & configs.fc.isna()]
    if rows.basis.fillna("fourier").nunique() < 2:
        return ""
    table6 = yaml.safe_load((Path(__file__).resolve().parents[1] / "paper" / "basis.yaml").read_text())
    theirs = {(r["model"], r["task"]): r["scores"] for r in table6["rows"]}
    lines = ["| model | task | n | fourier | random | orthogonal | paper (fourier / random / orthogonal) |",
             "|---|---|---|---|---|---|---|"]
    for (model, task, n), group in rows.groupby(["model", "task", "n"]):
        by = {b: g.iloc[0] for b, g in group.groupby(group.basis.fillna("fourier"))}
        cells = [f"{fmt(by[b].score, 'score')} ({int(by[b].seeds)} seeds)" if b in by else "-"
                 for b in ("fourier", "random", "orthogonal")]
        paper_cell = " / ".join(f"{v:.1f}" for v in theirs[(model, task)]) if (model, task) in theirs else "-"
        lines.append(f"| {model} | {display_name(task)} | {int(n)} | " + " | ".join(cells) + f" | {paper_cell} |")
    return "\n".join(lines)


def point_scores(folder: Path) -> pd.DataFrame:
    """Per configuration of the runs under `folder`: the family's reported score (test accuracy at the best
    validation epoch; the judge score), mean over seeds, trainable parameters without the head, and the selection
    metric that picks among configurations of one point."""
    rows = []
    for r in read_results(folder, sweeps=True) if folder.is_dir() else []:
        main = r.outcome["main_metric"]
        metrics = r.outcome["best"]["metrics"] if "best" in r.outcome else r.outcome["metrics"]
        value = r.selection.get("value")
        sign = -1 if r.selection["mode"] == "min" else 1
        rows.append({"model": r.model, "task": r.task, "family": r.family, "method": r.method, "variant": r.variant,
                     "config_id": r.config_id, "seed": r.seed, "params": r.trainable_params - r.head_params,
                     "score": metrics.get(main), "metric": main,
                     "select": float("nan") if value is None else sign * value})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return (frame.groupby(["family", "model", "task", "method", "variant", "config_id", "metric"])
            .agg(score=("score", "mean"), sd=("score", "std"), select=("select", "mean"), seeds=("seed", "nunique"),
                 params=("params", "median")).reset_index())


# the paper's points of Figure 1 that its tables state (Table 4: LLaMA-2-7B; Table 5: ViT-B on DTD), drawn only
# beside runs of the same model and task
FIG1_PAPER = {("llama2_7b", "alpaca"): [("lora r=64", 33_500_000, 5.20), ("fourierft n=1000", 64_000, 5.18)],
              ("vit_base", "dtd"): [("lora r=16", 581_000, 74.95), ("fourierft n=3000", 72_000, 75.09),
                                    ("fourierft n=10000", 239_000, 77.30), ("full", 85_800_000, 77.68)]}
STYLE = {"full": {"color": "black", "label": "full fine-tuning"}}  # the paper's black circles


def fig1(results: Path, out: Path) -> str:
    panels = [(name, best_per_point(point_scores(results / name), ["model", "task", "method", "variant"]))
              for name in FOLDERS["fig1"]]
    panels = [(name, rows) for name, rows in panels if not rows.empty]
    if not panels:
        return ""
    fig, axes = _plt().subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    lines = ["| panel | model | task | method | setting | params (no head) | configurations tried | seeds | score |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ax, (name, rows) in zip(axes[0], panels):
        for (model, method), curve in rows.groupby(["model", "method"]):
            curve = curve.sort_values("params")
            style = STYLE.get(method, {})
            ax.errorbar(curve.params, curve.score, yerr=curve.sd.fillna(0), marker="o", capsize=3,
                        color=style.get("color"), label=f"{style.get('label', method)} ({model})")
            for _, c in curve.iterrows():
                ax.annotate(c.variant, (c.params, c.score), fontsize=7, xytext=(3, 3), textcoords="offset points")
                lines.append(f"| {name} | {model} | {display_name(c.task)} | {method} | {c.variant} | "
                             f"{fmt(c.params, 'params')} | {int(c.tried)} | {int(c.seeds)} | {c.score:.2f} |")
        shown = {(m, t) for m, t in zip(rows.model, rows.task)}
        for label, params, score in [p for key in shown for p in FIG1_PAPER.get(key, [])]:
            ax.scatter(params, score, marker="x", color="black")
            ax.annotate(f"paper {label}", (params, score), fontsize=6, xytext=(3, -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(f"{display_name(rows.task.iloc[0])} ({', '.join(sorted(rows.model.unique()))})", fontsize=9)
        ax.set_xlabel("trainable parameters without the head (log)")
        ax.set_ylabel(rows.metric.iloc[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out / "fig1_params_vs_score.png")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/sweeps"),
                        help="the sweeps' root: each figure reads its own folder under it")
    parser.add_argument("--out", type=Path, default=Path("results/figures"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    notes = ["# Figures and the numbers behind them", ""]
    text = fig1(args.results, args.out)
    if text:
        notes += ["## Figure 1: score vs trainable parameters (fig1_params_vs_score.png)", "", text,
                  "", "Crosses: the paper's points that its tables state.", ""]
    medians = fig3_sampling(args.out)
    notes += ["## Figure 3: sampling probability", "median radius of a draw (768x768, W=200): "
              + ", ".join(f"f_c={fc}: {m:.0f}" for fc, m in medians.items()), ""]
    text = fig6_training(args.results / FOLDERS["fig6"], args.out)
    if text:
        notes += ["## Figure 6: training curves, MRPC (fig6_training.png)", "", text, ""]
    basis_title = "Table 6: basis ablation (dev score, best epoch, mean over seeds)"
    for title, key, draw in (("Figure 4: score vs parameters", "fig4", fig4_n_scaling),
                             ("Figure 5: score vs f_c", "fig5", fig5_fc), (basis_title, "basis", None)):
        runs = sweep_runs(args.results / FOLDERS[key])
        if runs.empty:
            continue
        configs = per_config(runs)
        text = basis_table(configs) if draw is None else draw(configs, args.out)
        if text:
            notes += [f"## {title} ({FOLDERS[key]}/)", "", text, ""]
    write_atomic(args.out / "figures.md", "\n".join(notes) + "\n")
    print("\n".join(notes))
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
