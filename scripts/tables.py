"""Turn results/**.json into tables beside the paper's numbers (paper/<family>.yaml, where there is one) and a
parameters-vs-score plot. Nothing here knows a family: each result says how it is shown (its `report`: title,
columns, table kind, aggregate over seeds, display name) and what selects it (`selection`, never a test score).

- "selected" families (GLUE, vision): a column per task; in each cell the configuration whose aggregated selection
  metric is best gives its score; "[best of K]" says K configurations ran for that cell. One table per reported
  epoch (`best`, `last`).
- "rows" families (E2E, instruction tuning): one row per configuration, mean ± sd over seeds of each reported
  metric (they score on test sets, so nothing is selected).
Runs whose code was never committed (a dirty tree) form their own rows, flagged.

python -m scripts.tables [--results results] [--out results/tables]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from experiments.shared.results import RunResult, read_results
from experiments.shared.tasks import load_task
from fourierft.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]

KEYS = ["model", "method", "variant"]
PAPER_AVG = "paper_avg"  # a paper row's own printed average, over all the tasks of its table


class Printed(float):
    """A number of paper/<family>.yaml that remembers how it is written there: as the paper prints it, trailing
    zeros included, so that tables show it at the paper's own precision and never round it again."""

    text: str


class PrintedLoader(yaml.SafeLoader):
    pass


def _printed(loader, node):
    value = Printed(loader.construct_yaml_float(node))
    value.text = node.value
    return value


PrintedLoader.add_constructor("tag:yaml.org,2002:float", _printed)
PRINTED = "_printed"  # "<column>_printed": a paper cell as printed; "<column>_sd_printed" its spread


def printed(value) -> str:
    return value.text if isinstance(value, Printed) else str(value)


def paper(family: str):
    """The paper's numbers for a family (paper/<family>.yaml), or None where the paper has none."""
    file = ROOT / "paper" / f"{family}.yaml"
    return yaml.load(file.read_text(), Loader=PrintedLoader) if file.is_file() else None


EPOCH_KINDS = {"best": "best epoch", "last": "last epoch"}


def display_name(task: str, runs: list[RunResult] = ()) -> str:
    """A task's display name: from a run's report, else from conf/task/<task>.yaml, else the name itself."""
    for run in runs:
        if run.task == task:
            return run.display_name
    try:
        return load_task(task).display_name
    except Exception:  # a paper column without a task config of ours
        return task


def method_label(run: RunResult) -> str:
    """The method's name, flagged when the run's code was never committed (its tree was dirty)."""
    return run.method + (" (dirty tree)" if str(run.git_commit).endswith("-dirty") else "")


def source_label(row: dict) -> str:
    """Where a paper row's numbers come from, as tables show it beside the method: the paper, prior work the paper
    quotes (its *), or another paper (`label`)."""
    return row.get("label") or ("paper, from prior work" if row.get("prior") else "paper")


def is_paper(method: str) -> bool:
    """A table row from paper/<family>.yaml (its method reads "<method> (<source>)"), not one of our runs."""
    return bool(re.search(r"\(.*paper.*\)$", method))


def paper_rows(family: str, models=None, names=None, kind: str = "") -> pd.DataFrame:
    """The paper's rows (for `models` when any of them has rows, else all), columns renamed by `names`; its printed
    average (over all its tasks) under PAPER_AVG, its printed spread under "<column>_sd", and each number as the
    paper prints it under "<column>_printed". `kind`: said beside the source, for rows shown among numbers of
    another kind."""
    data = paper(family)
    if data is None:
        return pd.DataFrame()
    rows = [row for row in data["rows"] if models is None or row["model"] in models] or data["rows"]
    table = []
    for row in rows:
        source = source_label(row) + (f", {kind}" if kind else "")
        entry = {"model": row["model"], "method": f"{row['method']} ({source})",
                 "variant": row.get("variant", ""),
                 "params": row["params"] if row["params"] is not None else float("nan"),
                 "seeds": float("nan") if row.get("prior") or data.get("seeds") is None else data["seeds"]}
        cells = {(names or {}).get(c, c): s for c, s in zip(data["columns"], row["scores"])}
        cells.update({f"{(names or {}).get(c, c)}_sd": s for c, s in zip(data["columns"], row.get("sd") or [])})
        if "avg" in row:
            cells[PAPER_AVG] = row["avg"]
        for column, value in cells.items():
            entry[column], entry[column + PRINTED] = float(value), printed(value)
        table.append(entry)
    return pd.DataFrame(table)


def rows_table(runs: list[RunResult]) -> pd.DataFrame:
    """One row per configuration: mean and sd over seeds of each reported metric, then the paper's rows."""
    metrics = list(runs[0].report["columns"])
    rows = [{"model": r.model, "method": method_label(r), "variant": r.variant, "config": r.config_id,
             "params": r.trainable_params, "seed": r.seed, **{m: r.outcome["metrics"].get(m) for m in metrics}}
            for r in runs]
    table = pd.DataFrame(rows).groupby(["model", "method", "variant", "config"]).agg(
        params=("params", "median"), seeds=("seed", "nunique"), **{m: (m, "mean") for m in metrics},
        **{f"{m}_sd": (m, "std") for m in metrics}).reset_index()
    table = pd.concat([table, paper_rows(runs[0].family)], ignore_index=True)
    return table[[c for c in table.columns if not c.endswith("_sd")] + [f"{m}_sd" for m in metrics]]


def epoch_scores(runs: list[RunResult], which: str) -> pd.DataFrame:
    """Per run of a "selected" family: the reported score and the selection metric at epoch `which` (`label`: the
    method, flagged for a dirty tree)."""
    rows = []
    for r in runs:
        metrics = r.outcome[which]["metrics"]
        rows.append({"model": r.model, "method": r.method, "label": method_label(r), "variant": r.variant,
                     "task": r.task, "config_id": r.config_id, "seed": r.seed,
                     "params": r.trainable_params - r.head_params, "score": metrics[r.outcome["main_metric"]],
                     "select": metrics[r.selection["metric"]]})
    return pd.DataFrame(rows)


def select_cells(per_config: pd.DataFrame, mode: str, order: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, configurations-tried table), one row per (model, method, variant) and a column per task: in each
    cell the configuration with the best aggregated `select` gives its `score`; columns in `order`."""
    cell = per_config.groupby(KEYS + ["task"])
    chosen = per_config.loc[cell["select"].idxmax() if mode == "max" else cell["select"].idxmin()]
    tasks = [t for t in order if t in set(chosen["task"])]
    table = chosen.pivot_table(index=KEYS, columns="task", values="score")[tasks]
    table.insert(0, "seeds", chosen.groupby(KEYS)["seeds"].min())
    table.insert(0, "params", chosen.groupby(KEYS)["params"].median())
    configs = cell["config_id"].nunique().rename("configs").reset_index().pivot_table(
        index=KEYS, columns="task", values="configs")[tasks]
    return table.reset_index(), configs.reset_index()


def selected_table(runs: list[RunResult], which: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table with the paper's rows, configurations tried) of a "selected" family at epoch `which`."""
    first = runs[0]
    how, mode = first.report["aggregate"], first.selection["mode"]
    scores = epoch_scores(runs, which)
    per_config = (scores.assign(method=scores["label"]).groupby(KEYS + ["task", "config_id"])
                  .agg(score=("score", how), select=("select", how), seeds=("seed", "nunique"),
                       params=("params", "median")).reset_index())
    data = paper(first.family) or {"columns": []}
    paper_tasks = list(data["columns"])
    ours = sorted(set(per_config["task"]) - set(paper_tasks))
    table, configs = select_cells(per_config, mode, paper_tasks + ours)
    ran = list(table.columns[5:])
    names = {t: display_name(t, runs) for t in paper_tasks + ours}
    theirs = pd.DataFrame()
    kind = data.get("epoch")  # which epoch the paper's numbers report
    if data["columns"] and kind == which:
        theirs = paper_rows(first.family, set(table["model"]), names)
    elif data["columns"] and kind not in first.report["columns"]:  # no table of their kind: shown, labelled
        theirs = paper_rows(first.family, set(table["model"]), names, kind=data.get("epoch_text", kind))
    table = pd.concat([table.rename(columns=names), theirs], ignore_index=True)
    shown = [names[t] for t in paper_tasks + ours if names[t] in table.columns]
    # like with like: every row's mean over the tasks these runs cover; a paper row's own average (over all its
    # tasks) is a column of its own, never put where the shown tasks' mean belongs
    covered = table[[names[t] for t in ran]].mean(axis=1, skipna=False)
    label = f"all {len(ran)} tasks" if set(paper_tasks) <= set(ran) else ", ".join(names[t] for t in ran)
    averages = {f"avg ({label})": covered}
    if PAPER_AVG in table.columns:
        averages[f"paper's avg (its {len(paper_tasks)} tasks)"] = table[PAPER_AVG]
    table = table.assign(**averages)
    if PAPER_AVG + PRINTED in table.columns:
        table[f"paper's avg (its {len(paper_tasks)} tasks){PRINTED}"] = table[PAPER_AVG + PRINTED]
    sds = [f"{c}_sd" for c in shown if f"{c}_sd" in table.columns]
    as_printed = [c for c in table.columns if c.endswith(PRINTED)]
    return (table[KEYS + ["params", "seeds"] + shown + list(averages) + sds + as_printed],
            configs.rename(columns=names))


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
    # "<metric>_sd" columns (spread over seeds) print inside their metric's cell: "mean ± sd"; a paper cell prints
    # as the paper printed it ("<column>_printed"), ours through fmt
    cols = [c for c in table.columns if not c.endswith(("_sd", PRINTED))]

    def shown(r, c):
        text = r.get(c + PRINTED)
        return text if isinstance(text, str) else fmt(r[c], c)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            k = tried.get((r["model"], r["method"], r["variant"], c))
            sd = r.get(f"{c}_sd")
            spread = f" ± {shown(r, f'{c}_sd')}" if sd is not None and not pd.isna(sd) else ""
            cells.append(shown(r, c) + spread + (f" [best of {k}]" if k else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def params_scatter(ax, rows: pd.DataFrame, ylabel: str, score: str = "avg",
                   xlabel: str = "trainable parameters excluding the head (log; 0 drawn at 1)") -> None:
    """Trainable parameters (log) vs the rows' `score` column, each point labelled; the paper's rows as crosses."""
    for _, row in rows.dropna(subset=[score]).iterrows():
        x = max(row["params"], 1)
        ax.scatter(x, row[score], marker="x" if is_paper(row["method"]) else "o", s=50)
        ax.annotate(f"{row['model']} {row['method']} {row['variant']}".strip(), (x, row[score]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.margins(x=0.25, y=0.1)
    ax.grid(alpha=0.3)


def params_plot(table: pd.DataFrame, path: Path, title: str, score: str) -> None:
    """Trainable parameters vs average score: our runs (left, `score`: their mean over the tasks they ran) beside the
    paper's rows (right, at the paper's own printed average over all its tasks where it prints one); separate panels,
    since backbones and task sets differ."""
    paper_rows_ = table["method"].map(is_paper)
    ours, theirs = table[~paper_rows_], table[paper_rows_]
    panels = [(ours, "our runs (" + ", ".join(sorted(set(ours["model"]))) + ")", score)]
    if not theirs.empty:
        printed = next((c for c in table.columns if c.startswith("paper's avg")), None)
        panels.append((theirs, "the paper's rows", printed or score))
    fig, axes = pyplot().subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    for ax, (rows, name, column) in zip(axes[0], panels):
        params_scatter(ax, rows, column, column)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=130)
    tmp.replace(path)
    pyplot().close(fig)


def write_table(out: Path, name: str, title: str, table: pd.DataFrame, configs=None, note: str = "") -> str:
    md = f"{title}\n\n{to_markdown(table, configs)}\n" + (f"\n{note}\n" if note else "")
    write_atomic(out / f"{name}.md", md)
    write_atomic(out / f"{name}.csv", table.to_csv(index=False))
    if configs is not None:
        write_atomic(out / f"{name}_configs.csv", configs.to_csv(index=False))
    return md


def sources_note(family: str) -> str:
    """Where the rows marked (paper) come from, and the rows that name another source."""
    data = paper(family)
    if data is None:
        return ""
    others = sorted({f"{row['method']} ({source_label(row)}): {row['source']}" for row in data["rows"]
                     if row.get("source")})
    return f"Rows marked (paper): {data['source']}" + "".join(f"; {o}" for o in others) + "."


def family_tables(family: str, runs: list[RunResult], out: Path) -> list[str]:
    """Write one family's tables (and its plot); their markdown."""
    report = runs[0].report
    note = sources_note(family)
    if report["table"] == "rows":
        return [write_table(out, family, report["title"], rows_table(runs), note=note)]
    written = []
    kind = (paper(family) or {}).get("epoch")
    for i, which in enumerate(report["columns"]):
        table, configs = selected_table(runs, which)
        name = family if len(report["columns"]) == 1 else f"{family}_{which}"
        elsewhere = (f"The paper's rows report the {EPOCH_KINDS[kind]}, so they stand in {family}_{kind}.md, beside "
                     "numbers of their own kind, and not here." if kind in report["columns"] and kind != which else "")
        written.append(write_table(out, name, report["title"].format(which=which), table, configs,
                                   elsewhere or note))
        if i == 0:
            score = next(c for c in table.columns if c.startswith("avg ("))
            params_plot(table, out / f"{family}_params_vs_score.png",
                        f"{family}, {which} epoch, {report['aggregate']} over seeds", score)
    return written


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
    for family in sorted({r.family for r in runs}):
        for md in family_tables(family, [r for r in runs if r.family == family], out):
            print(md)
    print(f"tables and plots written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
