"""E2E NLG (Novikova et al. 2017) from the official CSVs or the hub, in the LoRA paper's format."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

from datasets import Dataset, DatasetDict, load_dataset

from ..shared.sources import local_file, read_text, resolve_source

FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
SEPARATOR = " ||"  # the LoRA repo's context/completion separator


def read_csv(path: Path) -> Dataset:
    rows = list(csv.DictReader(io.StringIO(read_text(path, newline=""), newline="")))
    return Dataset.from_dict({"mr": [r["mr"] for r in rows], "ref": [r["ref"] for r in rows]})


def load_e2e(data_dir: Optional[str], fallback_dirs=(), hub_id: str = "tuetschek/e2e_nlg") -> tuple[DatasetDict, str]:
    """(train/validation/test splits, where they came from): data_dir when set, else the hub, else a fallback."""
    def hub() -> DatasetDict:
        data = load_dataset(hub_id)
        names = {"meaning_representation": "mr", "human_reference": "ref"}
        return DatasetDict({split: data[split].rename_columns(names) for split in FILES})

    return resolve_source(
        "E2E NLG", setting="data.e2e_dir", env="FOURIERFT_E2E_DIR",
        expects="a folder holding the official trainset.csv, devset.csv and testset_w_refs.csv", configured=data_dir,
        configured_kind="folder", local=_local, hub=hub, hub_id=hub_id, fallbacks=fallback_dirs,
        usable=lambda folder: local_file(folder / FILES["train"]) is not None)


def _local(folder: Path) -> DatasetDict:
    found = {split: local_file(folder / name) for split, name in FILES.items()}
    missing = [FILES[split] for split, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(f"E2E folder {folder} lacks {', '.join(missing)}")
    return DatasetDict({split: read_csv(path) for split, path in found.items()})


def prompt(mr: str) -> str:
    return mr + SEPARATOR
