"""Turn results/**.json into GLUE tables (median over seeds, best and last epoch) and a params-vs-score plot.

python scripts/tables.py [--results results] [--out results/tables]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

TASK_ORDER = ["sst2", "mrpc", "cola", "qnli", "rte", "stsb"]
TASK_NAMES = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "qnli": "QNLI", "rte": "RTE", "stsb": "STS-B"}
# the paper's Table 2 (median of 5 seeds, best epoch); params exclude the classification head
PAPER = {
    ("roberta_base", "full"): (125e6, [94.8, 90.2, 63.6, 92.8, 78.7, 91.2]),
    ("roberta_base", "bitfit"): (0.1e6, [93.7, 92.7, 62.0, 91.8, 81.5, 90.8]),
    ("roberta_base", "lora"): (0.3e6, [95.1, 89.7, 63.4, 93.3, 78.4, 91.5]),
    ("roberta_base", "vera"): (0.043e6, [94.6, 89.5, 65.6, 91.8, 78.7, 90.7]),
    ("roberta_base", "fourierft"): (0.024e6, [94.2, 90.0, 63.8, 92.2, 79.1, 90.8]),
    ("roberta_large", "full"): (356e6, [96.4, 90.9, 68.0, 94.7, 86.6, 92.4]),
    ("roberta_large", "lora"): (0.8e6, [96.2, 90.2, 68.2, 94.8, 85.2, 92.3]),
    ("roberta_large", "fourierft"): (0.048e6, [96.0, 90.9, 67.1, 94.4, 87.4, 91.9]),
}


def variant(method: dict) -> str:
    """What separates rows of one method (sizes); learning rates and alpha vary per task and stay in a cell."""
    name = method["name"]
    if name.startswith("fourierft"):
        return f"n={method['n']}" + (f", fc={method['fc']}" if method.get("fc") is not None else "")
    if name in ("lora", "vera"):
        return f"r={method['r']}"
    return ""


def load_runs(results: Path) -> pd.DataFrame:
    rows = []
    for file in sorted(results.rglob("*.json")):
        try:
            run = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"skipping unreadable {file}", file=sys.stderr)
            continue
        if not isinstance(run, dict) or run.get("family") != "glue":
            continue
        main = run["main_metric"]
        rows.append({
            "model": run["model"], "method": run["method"], "variant": variant(run["config"]["method"]),
            "task": run["task"], "seed": run["seed"], "config_id": run["config_id"],
            "adapter_params": run["trainable_params"] - run.get("head_params", 0),
            "best": run["best"]["metrics"][main], "last": run["last"]["metrics"][main],
            "wall_time_s": run["wall_time_s"],
        })
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame, which: str) -> pd.DataFrame:
    """Median over seeds per config; where a sweep left several configs in a cell, the best median."""
    per_config = (runs.groupby(["model", "method", "variant", "task", "config_id"])
                  .agg(score=(which, "median"), seeds=("seed", "nunique"), params=("adapter_params", "median"))
                  .reset_index())
    best = per_config.loc[per_config.groupby(["model", "method", "variant", "task"])["score"].idxmax()]
    table = best.pivot_table(index=["model", "method", "variant"], columns="task", values="score")
    table = table[[t for t in TASK_ORDER if t in table.columns]]
    table["avg"] = table.mean(axis=1)
    params = best.groupby(["model", "method", "variant"])["params"].median()
    seeds = best.groupby(["model", "method", "variant"])["seeds"].min()
    table.insert(0, "seeds", seeds)
    table.insert(0, "params", params)
    return table.rename(columns=TASK_NAMES).reset_index()


def paper_rows(models) -> pd.DataFrame:
    rows = []
    for (model, method), (params, scores) in PAPER.items():
        if model in models:
            row = {"model": model, "method": f"{method} (paper)", "variant": "", "params": params, "seeds": 5}
            row.update({TASK_NAMES[t]: s for t, s in zip(TASK_ORDER, scores)})
            row["avg"] = sum(scores) / len(scores)
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    def fmt(v, col):
        if pd.isna(v):
            return "-"
        if col == "params":
            return f"{v / 1e6:.3f}M" if v >= 1e4 else f"{int(v)}"
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c], c) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for _, row in table.iterrows():
        paper = "(paper)" in row["method"]
        label = f"{row['model']} {row['method']} {row['variant']}".strip()
        ax.scatter(max(row["params"], 1), row["avg"], marker="o" if not paper else "x", s=50)
        ax.annotate(label, (max(row["params"], 1), row["avg"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (excluding the task head)")
    ax.set_ylabel("GLUE average over the tasks run (best epoch, median of seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    tmp.replace(path)
    plt.close(fig)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=None, help="default: <results>/tables")
    args = parser.parse_args(argv)
    runs = load_runs(args.results)
    if runs.empty:
        print(f"no GLUE results under {args.results}", file=sys.stderr)
        return 1
    out = args.out or args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    for which in ("best", "last"):
        table = aggregate(runs, which)
        if which == "best":
            table = pd.concat([table, paper_rows(set(table["model"]))], ignore_index=True)
        md = (f"GLUE dev, {which} epoch, median over seeds (MCC for CoLA, Pearson for STS-B, accuracy otherwise; "
              f"params exclude the task head)\n\n" + to_markdown(table) + "\n")
        write_atomic(out / f"glue_{which}.md", md)
        table.to_csv(out / f"glue_{which}.csv.tmp", index=False)
        (out / f"glue_{which}.csv.tmp").replace(out / f"glue_{which}.csv")
        if which == "best":
            print(md)
            plot(table, out / "params_vs_score.png")
    print(f"tables and plot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
