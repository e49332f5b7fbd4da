"""Compare your runs with a committed reference, run by run: do they agree within a tolerance, and where not?

Runs are matched by family, model, task, method, variant, configuration id and seed. Compared: every metric both
results hold (GLUE: best and last epoch; vision: test and validation accuracy at the best epoch and the last;
E2E / instruction tuning: the scored metrics). Agreement: |ours - reference| <= atol + rtol * |reference|.

python -m scripts.compare_results --ours runs/demo --reference results/demo [--family glue] [--rtol 0.02]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from experiments.shared.results import read_results

KEY = ("family", "model", "task", "method", "variant", "config_id", "seed")


def metrics_of(run: dict) -> dict[str, float]:
    """Every numeric metric of a result, flattened ("best.accuracy", "bleu", ...)."""
    found = {}
    for part in ("best", "last"):
        for name, value in (run.get(part) or {}).get("metrics", {}).items():
            found[f"{part}.{name}"] = value
    for name, value in (run.get("metrics") or {}).items():
        found[name] = value
    return {k: float(v) for k, v in found.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def compare(ours: list[dict], reference: list[dict], rtol: float, atol: float) -> tuple[list[dict], bool]:
    """(one row per metric of every run in either set, whether every shared metric agrees)."""
    index = {tuple(r.get(k, "") for k in KEY): r for r in reference}
    mine = {tuple(r.get(k, "") for k in KEY): r for r in ours}
    rows, agree = [], True
    for key in sorted(set(index) | set(mine), key=str):
        run, ref = mine.get(key), index.get(key)
        label = " ".join(str(k) for k in key[1:5] if k) + f" seed {key[6]}"
        if run is None or ref is None:
            rows.append({"run": label, "metric": "-", "ours": "-", "reference": "-",
                         "verdict": "no reference run" if ref is None else "not run here"})
            continue
        a, b = metrics_of(run), metrics_of(ref)
        for metric in sorted(set(a) & set(b)):
            x, y = a[metric], b[metric]
            same = (math.isnan(x) and math.isnan(y)) or abs(x - y) <= atol + rtol * abs(y)
            agree &= same
            rows.append({"run": label, "metric": metric, "ours": f"{x:.4g}", "reference": f"{y:.4g}",
                         "verdict": "agrees" if same else f"DIFFERS by {x - y:+.3g}"})
    return rows, agree


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--family", default=None, help="compare only this family (glue, e2e, instruct, vision)")
    parser.add_argument("--rtol", type=float, default=0.02)
    parser.add_argument("--atol", type=float, default=0.1)
    args = parser.parse_args(argv)
    ours, reference = ([r.to_json() for r in read_results(folder) if args.family in (None, r.family)]
                       for folder in (args.ours, args.reference))
    if not ours:
        print(f"no results under {args.ours} to compare", file=sys.stderr)
        return 1
    rows, agree = compare(ours, reference, args.rtol, args.atol)
    print(f"\nyour runs ({args.ours}) vs the committed reference ({args.reference}); "
          f"tolerance |ours - reference| <= {args.atol} + {args.rtol:g} x |reference|\n")
    print("| run | metric | ours | reference | verdict |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['metric']} | {row['ours']} | {row['reference']} | {row['verdict']} |")
    shared = [r for r in rows if r["metric"] != "-"]
    if not shared:
        print("\nnone of your runs has a reference run with the same settings: nothing to compare")
    elif agree:
        print(f"\nall {len(shared)} shared metrics agree with the reference within the tolerance")
    else:
        differ = sum(1 for r in shared if r["verdict"].startswith("DIFFERS"))
        print(f"\n{differ} of {len(shared)} shared metrics DIFFER from the reference beyond the tolerance (other "
              "CPUs, library versions or thread counts change float rounding, which training can amplify)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
