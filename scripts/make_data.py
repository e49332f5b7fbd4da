"""Write the repository's data/ from full local copies of the datasets (what a maintainer runs; users never need to).

    python -m scripts.make_data --glue DIR --e2e DIR --alpaca FILE --bench DIR --fashion-mnist DIR [--out data]

Text datasets are copied whole, xz-compressed (the suite's readers decompress them). Fashion-MNIST is too large to
ship: the vision demo's own draw is written instead (seed 0's 600 training images, the 300 validation and 300 test
images it scores, in the order the demo takes them), so the demo on this subset trains on exactly what it trains on
with the full dataset. data/README.md names each dataset's source and licence."""
from __future__ import annotations

import argparse
import gzip
import lzma
import shutil
import struct
from pathlib import Path

import numpy as np

GLUE = {"CoLA": ("train.tsv", "dev.tsv"), "SST-2": ("train.tsv", "dev.tsv"), "MRPC": ("train.tsv", "dev.tsv"),
        "RTE": ("train.tsv", "dev.tsv"), "STS-B": ("train.tsv", "dev.tsv", "LICENSE.txt"), "QNLI": ("dev.tsv",)}
E2E = ("trainset.csv", "devset.csv", "testset_w_refs.csv")
BENCH = ("judge_prompts.jsonl", "mt_bench", "vicuna_bench")


def compress(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix in (".tsv", ".csv", ".json"):
        with lzma.open(target.with_name(target.name + ".xz"), "wb", preset=9 | lzma.PRESET_EXTREME) as f:
            f.write(source.read_bytes())
    else:
        shutil.copyfile(source, target)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same bytes on every run
        f.write(header + array.astype(np.uint8).tobytes())


def fashion_mnist_draw(folder: Path, out: Path) -> None:
    """The vision demo's examples, selected by the code and the settings the demo runs with (experiment=demo/vision:
    load_vision's seeded validation cut, then subsample per split)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from experiments.shared.family import subsample
    from experiments.vision.data import IDX_FILES, load_vision

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo/vision", "method=fourierft"])
    task, run = instantiate(cfg.task.definition), cfg.trainer
    data, _ = load_vision(task, str(folder), cfg.task.validation_fraction, cfg.seed)
    draw = {"train": subsample(data["train"], run.max_train_samples, cfg.seed),
            **{split: subsample(data[split], run.max_eval_samples, 0) for split in ("validation", "test")}}
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in draw.items():
        images_file, labels_file = IDX_FILES[split]
        write_idx(out / f"{images_file}.gz", np.stack([np.asarray(image) for image in rows["image"]]))
        write_idx(out / f"{labels_file}.gz", np.asarray(rows["label"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", type=Path, required=True)
    parser.add_argument("--e2e", type=Path, required=True)
    parser.add_argument("--alpaca", type=Path, required=True, help="the 5,000-example alpaca_5000.json")
    parser.add_argument("--bench", type=Path, required=True, help="FastChat's fastchat/llm_judge/data")
    parser.add_argument("--fashion-mnist", type=Path, required=True, help="the idx files (train-*, t10k-*)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args(argv)
    for task, files in GLUE.items():
        for name in files:
            compress(args.glue / task / name, args.out / "glue" / task / name)
    for name in E2E:
        compress(args.e2e / name, args.out / "e2e_nlg" / name)
    compress(args.alpaca, args.out / "alpaca" / args.alpaca.name)
    for name in BENCH:
        source, target = args.bench / name, args.out / "mt_bench_vicuna" / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
    fashion_mnist_draw(args.fashion_mnist, args.out / "fashion_mnist")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
