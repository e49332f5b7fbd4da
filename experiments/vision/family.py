"""Image classification (the paper's ViT protocol): one image backbone, one method, one dataset, one seed.
Validation and test accuracy every epoch; the epoch best on validation gives the reported TEST accuracy (what the
reference code's load_best_model_at_end + test evaluation reports), and the last epoch is kept too. Runs are
selected by validation accuracy, never by test."""
from __future__ import annotations

import inspect

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
    Trained,
    best_epoch,
    epoch_outcome,
    subsample,
)
from ..shared.validate import fraction, int_at_least, optional
from .data import load_vision
from .task import VisionTask
from .transforms import ImageTransform

SELECTION = Selection("validation_accuracy", split="validation")


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
        return load_vision(self.task, self.data.image_dir, self.options.validation_fraction, self.run.seed)

    def load_model(self, backbone, data):
        labels = data["train"].features["label"].names
        return backbone.load_images(len(labels), labels)

    def prepare(self, data, model, stats) -> Prepared:
        run, options = self.run, self.options
        size = options.image_size or stats.size
        train = subsample(data["train"], run.max_train_samples, run.seed)
        evals = {split: subsample(data[split], run.max_eval_samples, 0) for split in ("validation", "test")}
        side = min(train[0]["image"].size) if len(train) else size
        augmentation = {"crop_scale": crop_scale(options.crop_scale, side), "flip": options.flip, "source_side": side}
        train.set_transform(batch_transform(ImageTransform(size, stats.mean, stats.std, train=True,
                                                           crop_scale=augmentation["crop_scale"],
                                                           flip=options.flip)))
        for split in evals.values():
            split.set_transform(batch_transform(ImageTransform(size, stats.mean, stats.std, train=False)))
        return Prepared(train=train, eval=evals, collator=Collator(interpolate=needs_interpolation(model, size)),
                        compute_metrics=accuracy,
                        training_args={"eval_strategy": "epoch", **PER_EXAMPLE_LOSS, "remove_unused_columns": False,
                                       "label_names": ["labels"]},
                        counts={"train_examples": len(train), "validation_examples": len(evals["validation"]),
                                "test_examples": len(evals["test"]),
                                "classes": len(data["train"].features["label"].names)},
                        facts={"image_size": size, "augmentation": augmentation})

    def evaluate(self, trained: Trained, artifacts) -> Outcome:
        return epoch_outcome(epoch_records(trained.trainer.state.log_history), SELECTION, main_metric="test_accuracy",
                             selected_by=SELECTION.metric, **trained.prepared.facts)


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
