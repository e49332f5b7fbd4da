"""Image classification (the paper's ViT protocol): one image backbone, one method, one dataset, one seed.
Validation and test accuracy every epoch; the epoch best on validation gives the reported TEST accuracy (what the
reference code's load_best_model_at_end + test evaluation reports), and the last epoch is kept too. Runs are
selected by validation accuracy, never by test."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from omegaconf import ListConfig
from transformers import AutoModelForImageClassification

from ..shared.family import (
    PER_EXAMPLE_LOSS,
    Family,
    Outcome,
    Prepared,
    Report,
    Selection,
    TaskDefinition,
    best_epoch,
    epoch_outcome,
    subsample,
)
from ..shared.validate import fraction, int_at_least, optional
from .data import load_vision
from .transforms import ImageTransform

SELECTION = Selection("validation_accuracy", split="validation")


@dataclass(frozen=True)
class VisionTask(TaskDefinition):
    """A dataset: where the hub has it (split -> [hub id, split name]; one without test is cut from train) and how
    many classes it holds. `hub` empty: local images only (data.image_dir)."""

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

    @property
    def family(self):
        return Vision


# the crop's side in source pixels never below this (on average over the scale range's low end)
MIN_CROP_SIDE = 16
CROP_SCALE_RULE = ((lambda v: v == "auto" or (isinstance(v, (list, tuple, ListConfig)) and len(v) == 2
                                               and all(isinstance(x, (int, float)) for x in v)
                                               and 0 < v[0] <= v[1] <= 1)),
                   "auto, or [low, high] with 0 < low <= high <= 1")


def crop_scale(setting, side: int) -> list[float]:
    """RandomResizedCrop's area range: the reference's (0.08, 1) where the images are large; on small images (28 px
    Fashion-MNIST, 8 px digits) the low end rises so that a crop keeps at least MIN_CROP_SIDE source pixels a side
    (0.08 of 8x8 is a 2x2 crop)."""
    if setting != "auto":
        return [float(setting[0]), float(setting[1])]
    return [round(min(1.0, max(0.08, (MIN_CROP_SIDE / max(side, 1)) ** 2)), 4), 1.0]


class Vision(Family):
    name = "vision"
    report = Report(
        title="Image classification: test accuracy at the best validation epoch, mean over seeds (params exclude the "
              "head; the paper's avg is over its eight datasets, ours over the datasets run). [best of K]: K "
              "configurations ran for that cell and the one with the best mean validation accuracy is shown.",
        columns=("best",), table="selected", aggregate="mean")
    settings = {"image_size": optional(int_at_least(16)), "validation_fraction": fraction(low_open=True),
                "crop_scale": CROP_SCALE_RULE, "flip": ((lambda v: isinstance(v, bool)), "true or false")}
    task: VisionTask
    selection = SELECTION

    def check_backbone(self, backbone):
        backbone.check_fits(AutoModelForImageClassification, self.task.name)

    def load_data(self):
        data, source = load_vision(self.task, self.cfg.data.image_dir, self.cfg.task.validation_fraction,
                                   self.cfg.seed)
        self.labels = data["train"].features["label"].names
        return data, source

    def load_model(self, backbone):
        return backbone.load_images(len(self.labels), self.labels)

    def prepare(self, data, model, stats) -> Prepared:
        trainer = self.cfg.trainer
        self.size = self.cfg.task.image_size or stats.size
        train = subsample(data["train"], trainer.max_train_samples, self.cfg.seed)
        evals = {split: subsample(data[split], trainer.max_eval_samples, 0) for split in ("validation", "test")}
        side = min(train[0]["image"].size) if len(train) else self.size
        self.augmentation = {"crop_scale": crop_scale(self.cfg.task.crop_scale, side), "flip": self.cfg.task.flip,
                             "source_side": side}
        train.set_transform(batch_transform(ImageTransform(self.size, stats.mean, stats.std, train=True,
                                                           crop_scale=self.augmentation["crop_scale"],
                                                           flip=self.cfg.task.flip)))
        for split in evals.values():
            split.set_transform(batch_transform(ImageTransform(self.size, stats.mean, stats.std, train=False)))
        return Prepared(train=train, eval=evals, collator=Collator(interpolate=needs_interpolation(model, self.size)),
                        compute_metrics=accuracy,
                        training_args={"eval_strategy": "epoch", **PER_EXAMPLE_LOSS, "remove_unused_columns": False,
                                       "label_names": ["labels"]},
                        counts={"train_examples": len(train), "validation_examples": len(evals["validation"]),
                                "test_examples": len(evals["test"]), "classes": len(self.labels)})

    def evaluate(self, trainer, model, stats, data, artifacts) -> Outcome:
        return epoch_outcome(epoch_records(trainer.state.log_history), SELECTION, main_metric="test_accuracy",
                             selected_by=SELECTION.metric, image_size=self.size, augmentation=self.augmentation)


def batch_transform(transform):
    def apply(batch):
        return {"pixel_values": [transform(image) for image in batch["image"]], "labels": batch["label"]}
    return apply


def needs_interpolation(model, size: int) -> bool:
    """HF ViT only resizes its position table when asked; Dinov2 always does; timm models are built at size."""
    native = getattr(getattr(model, "config", None), "image_size", size)
    forward = getattr(model, "get_base_model", lambda: model)().forward
    return native != size and "interpolate_pos_encoding" in inspect.signature(forward).parameters


class Collator:
    def __init__(self, interpolate: bool):
        self.interpolate = interpolate

    def __call__(self, examples):
        batch = {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                 "labels": torch.tensor([e["labels"] for e in examples])}
        if self.interpolate:
            batch["interpolate_pos_encoding"] = True
        return batch


def accuracy(prediction) -> dict:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": 100 * float(np.mean(np.argmax(logits, axis=-1) == prediction.label_ids))}


def split_accuracies(logged: dict) -> dict:
    """{"validation_accuracy": ..., "test_accuracy": ...} from one Trainer log record ("eval_<split>_accuracy")."""
    return {k[len("eval_"):]: v for k, v in logged.items() if k.startswith("eval_") and k.endswith("_accuracy")}


def epoch_records(log_history: list[dict]) -> list[dict]:
    """One {"epoch", "validation_accuracy", "test_accuracy"} per evaluated epoch, from Trainer's log history."""
    return merge_by_epoch([{"epoch": round(e["epoch"], 3), **split_accuracies(e)} for e in log_history
                           if any(k.endswith("_accuracy") for k in e)])


def best_on_validation(epochs: list[dict]) -> dict:
    """The protocol's model: the epoch best on validation (never chosen by its test accuracy)."""
    return best_epoch(epochs, SELECTION.metric, SELECTION.mode)


def merge_by_epoch(records: list[dict]) -> list[dict]:
    """Trainer logs each eval split as its own record: one entry per epoch with both splits."""
    merged: dict[float, dict] = {}
    for record in records:
        merged.setdefault(record["epoch"], {}).update(record)
    return [merged[e] for e in sorted(merged)]
