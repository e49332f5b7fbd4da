"""Score a system's E2E outputs as the official E2E scorer does; the last line printed is one JSON object.

python -m scripts.score_e2e REFS OUTPUTS
  REFS: one reference per line, instances separated by a blank line (the official devel-conc.txt format), or a
        .csv / .tsv of (MR, reference) rows, consecutive rows of one MR grouped (the official testset_w_refs.csv)
  OUTPUTS: one output per line, in the same instance order (or a .csv / .tsv of (MR, output) rows)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.e2e.metrics import e2e_scores, read_scoring_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", type=Path)
    parser.add_argument("outputs", type=Path)
    args = parser.parse_args(argv)
    for path in (args.refs, args.outputs):
        if not path.is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            return 2
    try:
        scores = e2e_scores(*read_scoring_files(args.refs, args.outputs))
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: round(v, 4) for k, v in scores.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
