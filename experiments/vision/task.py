"""An image-classification dataset as data (conf/task/<name>.yaml builds one): where the hub has it, its classes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..shared.family import TaskDefinition


@dataclass(frozen=True)
class VisionTask(TaskDefinition):
    """A dataset: where the hub has it (split -> [hub id, split name]; one without test is cut from train) and how
    many classes it holds. `hub` empty: local images only (data.image_dir)."""

    family = "experiments.vision.family.Vision"

    num_classes: Optional[int] = None
    hub: dict = field(default_factory=dict)
    test_fraction: float = 0.0   # DTD ships one split: this share becomes test
    fallback_dirs: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "hub", {split: tuple(where) for split, where in self.hub.items()})
        object.__setattr__(self, "fallback_dirs", tuple(self.fallback_dirs))
        unknown = sorted(set(self.hub) - {"train", "validation", "test"})
        if unknown:
            raise ValueError(f"vision task {self.name}: hub splits {unknown} are not among train, validation, test")
        if self.hub and "train" not in self.hub:
            raise ValueError(f"vision task {self.name}: hub splits {sorted(self.hub)} lack train")
        if not 0 <= self.test_fraction < 1 or ("test" not in self.hub and self.hub and not self.test_fraction):
            raise ValueError(f"vision task {self.name}: test_fraction={self.test_fraction} (a number in (0, 1) where "
                             "the hub has no test split, else 0)")
        classes = self.num_classes
        if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 2):
            raise ValueError(f"vision task {self.name}: num_classes={self.num_classes!r} (an integer >= 2, or null "
                             "for a folder's own classes)")
