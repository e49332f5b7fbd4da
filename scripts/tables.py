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


PAPER_E2E = {  # Table 4: test set, last epoch, mean of 3 runs; BLEU / NIST / METEOR / ROUGE-L / CIDEr
    ("gpt2_medium", "lora"): (0.35e6, [68.9, 8.76, 46.6, 71.5, 2.53]),
    ("gpt2_medium", "fourierft"): (0.048e6, [69.1, 8.82, 47.0, 71.8, 2.51]),
    ("gpt2_large", "lora"): (0.77e6, [70.1, 8.83, 46.8, 72.0, 2.47]),
    ("gpt2_large", "fourierft"): (0.072e6, [70.2, 8.90, 47.0, 71.8, 2.50]),
}
PAPER_INSTRUCT = {  # Table 5: GPT-4 scores, MT-Bench / Vicuna (LoRA on q,v; FourierFT on q,v)
    ("llama_7b", "lora"): [4.99, 6.81], ("llama_7b", "fourierft"): [5.09, 6.85],
    ("llama_13b", "lora"): [5.21, 6.97], ("llama_13b", "fourierft"): [5.23, 7.14],
    ("llama2_7b", "lora"): [5.20, 7.35], ("llama2_7b", "fourierft"): [5.18, 7.49],
    ("llama2_13b", "lora"): [5.80, 7.89], ("llama2_13b", "fourierft"): [5.82, 7.92],
}
E2E_METRICS = ["bleu", "nist", "meteor", "rouge_l", "cider"]
INSTRUCT_METRICS = ["mt_bench", "vicuna", "mt_bench_rouge_l", "vicuna_rouge_l"]


def read_results(results: Path) -> list[dict]:
    runs = []
    for file in sorted(results.rglob("*seed*.json")):
        try:
            run = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"skipping unreadable {file}", file=sys.stderr)
            continue
        if isinstance(run, dict) and "family" in run:
            runs.append(run)
    return runs


def generation_table(runs: list[dict], family: str, metrics: list[str]) -> pd.DataFrame:
    """Mean over seeds per (model, method, variant), as the paper reports E2E (mean of 3 runs)."""
    rows = [{"model": r["model"], "method": r["method"], "variant": variant(r["config"]["method"]),
             "params": r["trainable_params"], "seed": r["seed"], **{m: r["metrics"].get(m) for m in metrics}}
            for r in runs if r["family"] == family]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    table = frame.groupby(["model", "method", "variant"]).agg(
        params=("params", "median"), seeds=("seed", "nunique"), **{m: (m, "mean") for m in metrics}).reset_index()
    paper = PAPER_E2E if family == "e2e" else PAPER_INSTRUCT
    extra = []
    for (model, method), values in paper.items():
        params, scores = values if family == "e2e" else (float("nan"), values)
        extra.append({"model": model, "method": f"{method} (paper)", "variant": "", "params": params, "seeds": 3 if family == "e2e" else float("nan"),
                      **dict(zip(metrics, scores))})
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def load_runs(results: Path) -> pd.DataFrame:
    rows = []
    for run in read_results(results):
        if run["family"] != "glue":
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
        if col == "seeds":
            return str(int(v))
        if col == "params":
            return f"{v / 1e6:.3f}M" if v >= 1e4 else f"{int(v)}"
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c], c) for c in cols) + " |" for _, r in table.iterrows()]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for _, row in table.iterrows():
        paper = "(paper)" in row["method"]
        label = f"{row['model']} {row['method']} {row['variant']}".strip()
        ax.scatter(max(row["params"], 1), row["avg"], marker="o" if not paper else "x", s=50)
        ax.annotate(label, (max(row["params"], 1), row["avg"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (excluding the task head)")
    ax.set_ylabel("GLUE avg of tasks run (best epoch, median)")
    ax.margins(x=0.25, y=0.1)
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
    all_runs = read_results(args.results)
    if not all_runs:
        print(f"no results under {args.results}", file=sys.stderr)
        return 1
    out = args.out or args.results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    titles = {"e2e": "E2E NLG test set (our rows: the test MRs each run scored), mean over seeds; BLEU/METEOR/ROUGE-L x100",
              "instruct": "Instruction tuning: mean judge score (1-10) on MT-Bench and Vicuna, ROUGE-L vs GPT-4 answers; "
                          "the paper's judge is GPT-4, ours is whatever judge= the run used"}
    for family, metrics in (("e2e", E2E_METRICS), ("instruct", INSTRUCT_METRICS)):
        table = generation_table(all_runs, family, metrics)
        if table.empty:
            continue
        md = f"{titles[family]}\n\n" + to_markdown(table) + "\n"
        write_atomic(out / f"{family}.md", md)
        table.to_csv(out / f"{family}.csv.tmp", index=False)
        (out / f"{family}.csv.tmp").replace(out / f"{family}.csv")
        print(md)
    for which in ("best", "last") if not runs.empty else ():
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
