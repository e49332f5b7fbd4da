"""GLUE from the hub (nyu-mll/glue) or from a folder in the original GLUE tsv layout."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from datasets import Dataset, DatasetDict, load_dataset

from ..shared.sources import resolve_source


@dataclass(frozen=True)
class GlueTask:
    name: str          # hub config name
    folder: str        # folder in the original layout
    text_keys: tuple   # columns fed to the tokenizer
    num_labels: int    # 1 = regression
    metrics: tuple     # first one picks the best epoch
    header: bool = True
    columns: Optional[tuple] = None  # tsv column indices of (texts..., label)
    label_names: Optional[tuple] = None


TASKS = {
    "sst2": GlueTask("sst2", "SST-2", ("sentence",), 2, ("accuracy",), columns=(0, 1)),
    "mrpc": GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("accuracy", "f1"), columns=(3, 4, 0)),
    "cola": GlueTask("cola", "CoLA", ("sentence",), 2, ("matthews",), header=False, columns=(3, 1)),
    "qnli": GlueTask("qnli", "QNLI", ("question", "sentence"), 2, ("accuracy",), columns=(1, 2, 3),
                     label_names=("entailment", "not_entailment")),
    "rte": GlueTask("rte", "RTE", ("sentence1", "sentence2"), 2, ("accuracy",), columns=(1, 2, 3),
                    label_names=("entailment", "not_entailment")),
    "stsb": GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), 1, ("pearson", "spearman"), columns=(7, 8, 9)),
}


def get_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; accepted: {', '.join(TASKS)}")
    return TASKS[name]


def read_tsv(path: Path, task: GlueTask) -> Dataset:
    """One split of the original distribution (quoting off: MRPC and QNLI hold bare quotes)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task.header:
        rows = rows[1:]
    *text_cols, label_col = task.columns
    data = {key: [] for key in task.text_keys}
    data["label"] = []
    for row in rows:
        if not row:
            continue
        for key, col in zip(task.text_keys, text_cols):
            data[key].append(row[col])
        raw = row[label_col]
        if task.num_labels == 1:
            data["label"].append(float(raw))
        elif task.label_names:
            data["label"].append(task.label_names.index(raw))
        else:
            data["label"].append(int(raw))
    return Dataset.from_dict(data)


def load_local(task: GlueTask, folder: Path) -> DatasetDict:
    splits = {}
    for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
        path = folder / task.folder / file
        if not path.is_file():
            missing = f"{path} is missing"
            if task.name == "qnli" and split == "train":
                missing += (" (the local GLUE mirror has no QNLI train split: QNLI needs the hub or a full "
                            "GLUE download placed there)")
            raise FileNotFoundError(f"GLUE {task.name}: {missing}")
        splits[split] = read_tsv(path, task)
    return DatasetDict(splits)


def load_glue(name: str, glue_dir: Optional[str], fallback_dirs=()) -> tuple[DatasetDict, str]:
    """(train/validation splits, where they came from): glue_dir when set, else the hub, else a fallback."""
    task = get_task(name)

    def hub() -> DatasetDict:
        data = load_dataset("nyu-mll/glue", task.name)
        return DatasetDict({"train": data["train"], "validation": data["validation"]})

    return resolve_source(
        f"GLUE {task.name}", setting="data.glue_dir", env="FOURIERFT_GLUE_DIR",
        expects="a folder in the original GLUE tsv layout (SST-2/train.tsv, ...)", configured=glue_dir,
        configured_kind="folder", local=lambda folder: load_local(task, folder), hub=hub, hub_id="nyu-mll/glue",
        fallbacks=fallback_dirs, usable=lambda folder: (folder / task.folder).is_dir())
