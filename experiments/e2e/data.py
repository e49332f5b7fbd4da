"""E2E NLG (Novikova et al. 2017) from the official CSVs or the hub, in the LoRA paper's format."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from datasets import Dataset, DatasetDict, load_dataset

from ..shared.sources import resolve_source

FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
SEPARATOR = " ||"  # the LoRA repo's context/completion separator


def read_csv(path: Path) -> Dataset:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
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
        usable=lambda folder: (folder / FILES["train"]).is_file())


def _local(folder: Path) -> DatasetDict:
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"E2E folder {folder} lacks {', '.join(missing)}")
    return DatasetDict({split: read_csv(folder / name) for split, name in FILES.items()})


def prompt(mr: str) -> str:
    return mr + SEPARATOR
