"""A GLUE task as data (conf/task/<name>.yaml builds one): its columns, labels, metrics and split names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..shared.family import TaskDefinition
from .metrics import METRICS


@dataclass(frozen=True)
class GlueTask(TaskDefinition):
    """One GLUE task: hub config `name` of `hub_id`, or `folder` in the original tsv layout. `splits` names the
    files and hub splits that train and that score the dev set (MNLI: dev_matched.tsv, validation_matched)."""

    family = "experiments.glue.family.Glue"

    folder: str = ""
    text_keys: tuple = ()        # columns fed to the tokenizer
    num_labels: int = 2          # 1 = regression
    metrics: tuple = ()          # the first one picks the best epoch
    columns: tuple = ()          # tsv column indices of (texts..., label); negative: from the end of the row
    header: bool = True
    label_names: Optional[tuple] = None
    hub_id: str = "nyu-mll/glue"
    splits: dict = field(default_factory=lambda: {"train": {"file": "train.tsv", "hub": "train"},
                                                  "validation": {"file": "dev.tsv", "hub": "validation"}})
    local_note: str = ""         # said when a local split file is missing (data/glue lacks QNLI's train split)

    def __post_init__(self):
        super().__post_init__()
        for key in ("text_keys", "metrics", "columns"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(self.label_names))
        unknown = [m for m in self.metrics if m not in METRICS]
        if not self.metrics or unknown:
            raise ValueError(f"GLUE task {self.name}: metrics {list(self.metrics)} (accepted: {', '.join(METRICS)})")
        if not self.text_keys or len(self.columns) != len(self.text_keys) + 1:
            raise ValueError(f"GLUE task {self.name}: columns {list(self.columns)} must give one tsv column per text "
                             f"key {list(self.text_keys)} and one for the label")
        if sorted(self.splits) != ["train", "validation"] or any(
                sorted(where) != ["file", "hub"] for where in self.splits.values()):
            raise ValueError(f"GLUE task {self.name}: splits {self.splits} must give train and validation, each "
                             "with a tsv `file` and a `hub` split name")
        if self.num_labels < 1 or (self.label_names is not None and len(self.label_names) != self.num_labels):
            raise ValueError(f"GLUE task {self.name}: num_labels={self.num_labels} with label_names "
                             f"{self.label_names}")
