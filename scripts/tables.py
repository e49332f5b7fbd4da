"""Turn results/**.json into tables beside the paper's numbers (paper/<family>.yaml) and a params-vs-score plot.

GLUE: median over seeds per configuration (best epoch, the paper's protocol, and last epoch). Where one cell
(model, method, variant, task) holds runs of several configurations (a sweep over lr or alpha), the cell shows
the configuration with the best dev median and says how many were tried: "[best of K]".
E2E / instruction tuning: mean over seeds, one row per configuration (these score on test sets, so nothing is
selected).
Vision: mean over seeds of the test accuracy at each run's best validation epoch; where a cell holds several
configurations, the one with the best mean validation accuracy is shown ("[best of K]"), never the best test.

python scripts/tables.py [--results results] [--out results/tables]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from fourierft import write_atomic

ROOT = Path(__file__).resolve().parents[1]
TASK_NAMES = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "qnli": "QNLI", "rte": "RTE", "stsb": "STS-B"}
VISION_NAMES = {"pets": "Pets", "cars": "Cars", "cifar10": "CIFAR10", "dtd": "DTD", "eurosat": "EuroSAT",
                "fgvc": "FGVC", "resisc45": "RESISC45", "cifar100": "CIFAR100", "avg": "avg"}
TITLES = {
    "glue": "GLUE dev, {which} epoch, median over seeds (MCC for CoLA, Pearson for STS-B, accuracy otherwise; params "
            "exclude the task head). [best of K]: K configurations ran for that cell and the one with the best dev "
            "median is shown.",
    "e2e": "E2E NLG test set, official scorer's metrics (our rows: the test MRs each run scored), mean ± standard "
           "deviation over seeds, one row per configuration; BLEU/METEOR/ROUGE-L x100",
    "vision": "Image classification: test accuracy at the best validation epoch, mean over seeds (params exclude "
              "the head; the paper's avg is over its eight datasets, ours over the datasets run). [best of K]: K "
              "configurations ran for that cell and the one with the best mean validation accuracy is shown.",
    "instruct": "Instruction tuning: mean judge score (1-10) on MT-Bench and Vicuna, ROUGE-L vs GPT-4 answers; "
                "the paper's judge is GPT-4, ours is whatever judge= the run used",
}
GENERATION_METRICS = {"e2e": ["bleu", "nist", "meteor", "rouge_l", "cider"],
                      "instruct": ["mt_bench", "vicuna", "mt_bench_rouge_l", "vicuna_rouge_l"]}


def paper(family: str) -> dict:
    """The paper's numbers for a family, from paper/<family>.yaml."""
    return yaml.safe_load((ROOT / "paper" / f"{family}.yaml").read_text())


def read_results(results: Path, sweeps: bool = False) -> list[dict]:
    """Every run's results JSON under `results`; runs under a `sweeps/` folder only when asked (they have their own
    figures and never mix into the main tables)."""
    runs = []
    for file in sorted(results.rglob("*seed*.json")):
        if not sweeps and "sweeps" in file.relative_to(results).parts[:-1]:
            continue
        try:
            run = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"skipping unreadable {file}", file=sys.stderr)
            continue
        if isinstance(run, dict) and "family" in run:
            runs.append(run)
    return runs


def method_label(run: dict) -> str:
    """The method's name, flagged when the run's code was never committed (its tree was dirty)."""
    return run["method"] + (" (dirty tree)" if str(run.get("git_commit", "")).endswith("-dirty") else "")


def paper_rows(family: str, models=None, names=None) -> pd.DataFrame:
    data = paper(family)
    rows = []
    for row in data["rows"]:
        if models is not None and row["model"] not in models:
            continue
        entry = {"model": row["model"], "method": f"{row['method']} (paper)", "variant": row.get("variant", ""),
                 "params": row["params"] if row["params"] is not None else float("nan"),
                 "seeds": data["seeds"] if data["seeds"] is not None else float("nan")}
        entry.update({(names or {}).get(c, c): s for c, s in zip(data["columns"], row["scores"])})
        rows.append(entry)
    return pd.DataFrame(rows)


def generation_table(runs: list[dict], family: str) -> pd.DataFrame:
    metrics = GENERATION_METRICS[family]
    rows = [{"model": r["model"], "method": method_label(r), "variant": r.get("variant", ""), "config": r["config_id"],
             "params": r["trainable_params"], "seed": r["seed"], **{m: r["metrics"].get(m) for m in metrics}}
            for r in runs if r["family"] == family]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["model", "method", "variant", "config"]).agg(
        params=("params", "median"), seeds=("seed", "nunique"), **{m: (m, "mean") for m in metrics},
        **{f"{m}_sd": (m, "std") for m in metrics}).reset_index()
    table = pd.concat([table, paper_rows(family)], ignore_index=True)
    return table[[c for c in table.columns if not c.endswith("_sd")] + [f"{m}_sd" for m in metrics]]


def glue_runs(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        if run["family"] != "glue":
            continue
        main = run["main_metric"]
        rows.append({
            "model": run["model"], "method": run["method"], "label": method_label(run),
            "variant": run.get("variant", ""), "task": run["task"], "seed": run["seed"], "config_id": run["config_id"],
            "adapter_params": run["trainable_params"] - run.get("head_params", 0),
            "best": run["best"]["metrics"][main], "last": run["last"]["metrics"][main],
        })
    return pd.DataFrame(rows)


KEYS = ["model", "method", "variant"]


def select_cells(per_config: pd.DataFrame, value: str, select_by: str, order) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, configurations-tried table), one row per (model, method, variant) and a column per task: in each
    cell the configuration with the highest `select_by` gives its `value`; `order(tasks)` orders the columns."""
    cell = per_config.groupby(KEYS + ["task"])
    chosen = per_config.loc[cell[select_by].idxmax()]
    tasks = order(set(chosen["task"]))
    table = chosen.pivot_table(index=KEYS, columns="task", values=value)[tasks]
    table["avg"] = table.mean(axis=1)
    table.insert(0, "seeds", chosen.groupby(KEYS)["seeds"].min())
    table.insert(0, "params", chosen.groupby(KEYS)["params"].median())
    configs = cell["config_id"].nunique().rename("configs").reset_index().pivot_table(
        index=KEYS, columns="task", values="configs")[tasks]
    return table.reset_index(), configs.reset_index()


def aggregate(runs: pd.DataFrame, which: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores table, configurations-tried table) with one row per (model, method, variant)."""
    runs = runs.assign(method=runs["label"])  # a dirty tree's runs form their own row
    per_config = (runs.groupby(KEYS + ["task", "config_id"])
                  .agg(score=(which, "median"), seeds=("seed", "nunique"), params=("adapter_params", "median"))
                  .reset_index())
    table, configs = select_cells(per_config, "score", "score", lambda tasks: [t for t in TASK_NAMES if t in tasks])
    return table.rename(columns=TASK_NAMES), configs.rename(columns=TASK_NAMES)


def vision_table(runs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, configurations tried) for the vision family, with the paper's rows; empty without vision runs."""
    rows = [{"model": r["model"], "method": method_label(r), "variant": r.get("variant", ""), "task": r["task"],
             "config_id": r["config_id"], "seed": r["seed"], "params": r["trainable_params"] - r.get("head_params", 0),
             "test": r["best"]["metrics"]["test_accuracy"], "validation": r["best"]["metrics"]["validation_accuracy"]}
            for r in runs if r["family"] == "vision"]
    if not rows:
        return pd.DataFrame(), pd.DataFrame()
    per_config = (pd.DataFrame(rows).groupby(KEYS + ["task", "config_id"])
                  .agg(test=("test", "mean"), validation=("validation", "mean"), seeds=("seed", "nunique"),
                       params=("params", "median")).reset_index())
    table, configs = select_cells(  # chosen by validation, never by test
        per_config, "test", "validation",
        lambda tasks: [t for t in VISION_NAMES if t in tasks] + sorted(tasks - set(VISION_NAMES)))
    table = pd.concat([table, paper_rows("vision")], ignore_index=True)
    ours = [c for c in configs.columns if c not in KEYS]
    shown = [t for t in VISION_NAMES if t != "avg"] + [t for t in ours if t not in VISION_NAMES]
    table = table[KEYS + ["params", "seeds"] + shown + ["avg"]]
    names = {t: VISION_NAMES.get(t, t) for t in table.columns}
    return table.rename(columns=names), configs.rename(columns=names)


def fmt(value, col: str) -> str:
    if pd.isna(value):
        return "-"
    if col == "seeds":
        return str(int(value))
    if col == "params":
        return f"{value / 1e6:.3f}M" if value >= 1e4 else f"{int(value)}"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def to_markdown(table: pd.DataFrame, configs: pd.DataFrame | None = None) -> str:
    """A markdown table; with `configs`, cells chosen among several configurations say "[best of K]"."""
    tried = {}
    if configs is not None:
        for _, row in configs.iterrows():
            for col in configs.columns[3:]:
                if not pd.isna(row[col]) and row[col] > 1:
                    tried[(row["model"], row["method"], row["variant"], col)] = int(row[col])
    # "<metric>_sd" columns (spread over seeds) print inside their metric's cell: "mean ± sd"
    cols = [c for c in table.columns if not c.endswith("_sd")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            k = tried.get((r["model"], r["method"], r["variant"], c))
            sd = r.get(f"{c}_sd")
            spread = f" ± {fmt(sd, c)}" if sd is not None and not pd.isna(sd) else ""
            cells.append(fmt(r[c], c) + spread + (f" [best of {k}]" if k else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def params_scatter(ax, rows: pd.DataFrame, ylabel: str,
                   xlabel: str = "trainable parameters (excluding the task head)") -> None:
    """Trainable parameters (log) vs the rows' average score, each point labelled; the paper's rows as crosses."""
    for _, row in rows.iterrows():
        x = max(row["params"], 1)
        ax.scatter(x, row["avg"], marker="x" if "(paper)" in row["method"] else "o", s=50)
        ax.annotate(f"{row['model']} {row['method']} {row['variant']}".strip(), (x, row["avg"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.margins(x=0.25, y=0.1)
    ax.grid(alpha=0.3)


def plot(table: pd.DataFrame, path: Path) -> None:
    fig, ax = _pyplot().subplots(figsize=(7.5, 4.8))
    params_scatter(ax, table, "GLUE avg of tasks run (best epoch, median)")
    fig.tight_layout()
    save_png(fig, path)


def vision_plot(table: pd.DataFrame, path: Path) -> None:
    """Trainable parameters vs average accuracy: our runs (left) beside the paper's ViT rows (right, the right half
    of its Figure 1); separate panels, since they are different backbones and datasets."""
    ours = table[~table["method"].str.endswith("(paper)")]
    theirs = table[table["method"].str.endswith("(paper)")]
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.5))
    for ax, rows, title in ((axes[0], ours, "our runs (" + ", ".join(sorted(set(ours["model"]))) + ")"),
                            (axes[1], theirs, "paper, ViT on its eight datasets")):
        params_scatter(ax, rows, "test accuracy at the best validation epoch, avg (%)",
                       "trainable parameters excluding the head (linear probe drawn at 1)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    tmp.replace(path)
    _pyplot().close(fig)


def write_table(out: Path, name: str, title: str, table: pd.DataFrame, configs=None) -> str:
    md = f"{title}\n\n{to_markdown(table, configs)}\n"
    write_atomic(out / f"{name}.md", md)
    write_atomic(out / f"{name}.csv", table.to_csv(index=False))
    return md


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=None, help="default: <results>/tables")
    args = parser.parse_args(argv)
    runs = read_results(args.results)
    if not runs:
        print(f"no results under {args.results}", file=sys.stderr)
        return 1
    out = args.out or args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for family in GENERATION_METRICS:
        table = generation_table(runs, family)
        if not table.empty:
            print(write_table(out, family, TITLES[family], table))
    table, configs = vision_table(runs)
    if not table.empty:
        print(write_table(out, "vision", TITLES["vision"], table, configs))
        vision_plot(table, out / "vision_params_vs_accuracy.png")
    glue = glue_runs(runs)
    for which in ("best", "last") if not glue.empty else ():
        table, configs = aggregate(glue, which)
        if which == "best":
            ran = [c for c in TASK_NAMES.values() if c in table]
            table = pd.concat([table, paper_rows("glue", set(table["model"]), TASK_NAMES)], ignore_index=True)
            # the paper's average over the tasks these runs cover, so that the avg column compares like with like
            table["avg"] = table["avg"].fillna(table[ran].mean(axis=1))
        md = write_table(out, f"glue_{which}", TITLES["glue"].format(which=which), table, configs)
        write_atomic(out / f"glue_{which}_configs.csv", configs.to_csv(index=False))
        if which == "best":
            print(md)
            plot(table, out / "params_vs_score.png")
    print(f"tables and plot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
