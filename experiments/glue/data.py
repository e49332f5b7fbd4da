"""GLUE from the hub (nyu-mll/glue) or from a folder in the original GLUE tsv layout."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

from datasets import Dataset, DatasetDict, load_dataset

from ..shared.sources import local_file, read_text, resolve_source
from .task import GlueTask


def read_tsv(path: Path, task: GlueTask) -> Dataset:
    """One split of the original distribution (quoting off: MRPC and QNLI hold bare quotes). Every row must have
    the header's column count (CoLA: 4) and a label in range; the error names the file and line."""
    text = read_text(path, encoding="utf-8-sig", newline="")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    first = 2 if task.header else 1  # line number of the first example
    width = len(rows[0]) if rows else 0  # the header's (or, without one, the first row's) column count
    if task.header:
        rows = rows[1:]
    if not any(rows):
        raise ValueError(f"{path} has no examples{' after its header' if task.header else ''}")
    needed = max(c + 1 if c >= 0 else -c for c in task.columns)  # a negative index counts from the end
    if width < needed:
        raise ValueError(f"{path}: {width} columns, but GLUE {task.name} needs {needed} "
                         f"(texts {task.text_keys} and a label)")
    *text_cols, label_col = task.columns
    data = {key: [] for key in task.text_keys}
    data["label"] = []
    for line, row in enumerate(rows, start=first):
        if not row:
            continue
        if len(row) != width:
            raise ValueError(f"{path}, line {line}: {len(row)} tab-separated columns where the file has {width} "
                             "(a missing field or a stray tab)")
        for key, col in zip(task.text_keys, text_cols):
            data[key].append(row[col])
        data["label"].append(_label(row[label_col], task, f"{path}, line {line}"))
    return Dataset.from_dict(data)


def _label(raw: str, task: GlueTask, where: str):
    if task.num_labels == 1:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0 <= value <= 5:
            raise ValueError(f"{where}: similarity {raw!r} is not a number in [0, 5]")
        return value
    if task.label_names:
        if raw not in task.label_names:
            raise ValueError(f"{where}: label {raw!r} is not one of {task.label_names}")
        return task.label_names.index(raw)
    if raw not in [str(i) for i in range(task.num_labels)]:
        raise ValueError(f"{where}: label {raw!r} is not one of {[str(i) for i in range(task.num_labels)]}")
    return int(raw)


def load_local(task: GlueTask, folder: Path) -> DatasetDict:
    splits = {}
    for split, where in task.splits.items():
        path = folder / task.folder / where["file"]
        found = local_file(path)
        if found is None:
            note = f" ({task.local_note})" if task.local_note else ""
            raise FileNotFoundError(f"GLUE {task.name}: {path} is missing{note}")
        splits[split] = read_tsv(found, task)
    return DatasetDict(splits)


def load_glue(task: GlueTask, glue_dir: Optional[str], fallback_dirs=()) -> tuple[DatasetDict, str]:
    """(train/validation splits, where they came from): glue_dir when set, else the hub, else a fallback."""
    def hub() -> DatasetDict:
        data = load_dataset(task.hub_id, task.name)
        return DatasetDict({split: data[where["hub"]] for split, where in task.splits.items()})

    return resolve_source(
        f"GLUE {task.name}", setting="data.glue_dir", env="FOURIERFT_GLUE_DIR",
        expects="a folder in the original GLUE tsv layout (SST-2/train.tsv, ...)"
                + (f"; {task.local_note}" if task.local_note else ""), configured=glue_dir,
        configured_kind="folder", local=lambda folder: load_local(task, folder), hub=hub, hub_id=task.hub_id,
        fallbacks=fallback_dirs, usable=lambda folder: (folder / task.folder).is_dir())
