"""E2E NLG (Novikova et al. 2017) from the official CSVs or the hub, in the LoRA paper's format."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from datasets import Dataset, DatasetDict, load_dataset

from .hub import hub_reachable

FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
SEPARATOR = " ||"  # the LoRA repo's context/completion separator


def read_csv(path: Path) -> Dataset:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return Dataset.from_dict({"mr": [r["mr"] for r in rows], "ref": [r["ref"] for r in rows]})


def load_e2e(data_dir: Optional[str], fallback_dirs=()) -> tuple[DatasetDict, str]:
    if data_dir:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"data.e2e_dir={data_dir} is not a folder")
        return _local(folder), str(folder)
    if hub_reachable():
        hub = load_dataset("tuetschek/e2e_nlg")
        data = DatasetDict({split: hub[split].rename_columns({"meaning_representation": "mr", "human_reference": "ref"})
                            for split in FILES})
        return data, "hub:tuetschek/e2e_nlg"
    for candidate in fallback_dirs:
        folder = Path(candidate).expanduser()
        if (folder / FILES["train"]).is_file():
            return _local(folder), str(folder.resolve())
    raise FileNotFoundError(
        "E2E NLG: the Hugging Face hub is unreachable and no local copy was found (looked in "
        f"{', '.join(map(str, fallback_dirs)) or 'nothing'}). Set data.e2e_dir=/path or FOURIERFT_E2E_DIR to a "
        "folder holding the official trainset.csv, devset.csv and testset_w_refs.csv.")


def _local(folder: Path) -> DatasetDict:
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"E2E folder {folder} lacks {', '.join(missing)}")
    return DatasetDict({split: read_csv(folder / name) for split, name in FILES.items()})


def prompt(mr: str) -> str:
    return mr + SEPARATOR
