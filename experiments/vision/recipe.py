"""Vision recipe (the paper's ViT protocol): one image backbone, one method, one dataset, one seed. Validation and
test accuracy every epoch; the epoch best on validation gives the reported TEST accuracy (what the reference code's
load_best_model_at_end + test evaluation reports), and the last epoch is kept too."""
from __future__ import annotations

import inspect
import logging

import numpy as np
import torch
from omegaconf import DictConfig
from transformers import set_seed

from ..shared import build
from ..shared.methods import adapt
from ..shared.run import Run, best_epoch, metric_values
from ..shared.trainer import TwoRateTrainer, subsample
from .data import load_vision
from .transforms import ImageTransform

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    task = cfg.task
    run_ = Run(cfg, "vision", task.name)
    done = run_.finished()
    if done:
        return done["best"]["metrics"]["test_accuracy"]
    set_seed(cfg.seed)
    method, backbone = build(cfg)
    data, data_source = load_vision(task.dataset, cfg.data.image_dir, task.validation_fraction, cfg.seed)
    labels = data["train"].features["label"].names
    model, stats = backbone.load_images(len(labels), labels)
    model, counts = adapt(model, method, backbone)
    log.info("%s on %s/%s: trainable %d of %d", method.name, backbone.name, task.name, counts["trainable"],
             counts["total"])

    size = task.image_size or stats.size
    train = subsample(data["train"], cfg.trainer.max_train_samples, cfg.seed)
    evals = {split: subsample(data[split], cfg.trainer.max_eval_samples, 0) for split in ("validation", "test")}
    train.set_transform(batch_transform(ImageTransform(size, stats.mean, stats.std, train=True)))
    for split in evals.values():
        split.set_transform(batch_transform(ImageTransform(size, stats.mean, stats.std, train=False)))

    trainer = TwoRateTrainer(
        model=model, args=run_.training_args(method, eval_strategy="epoch", remove_unused_columns=False,
                                             label_names=["labels"]),
        train_dataset=train, eval_dataset=evals, method=method, head=backbone.head,
        data_collator=Collator(interpolate=needs_interpolation(model, size)), compute_metrics=accuracy)
    run_.train(trainer)

    epochs = epoch_records(trainer.state.log_history)
    best = best_on_validation(epochs)
    run_.write_result(
        **counts, adapter_bytes=run_.save_adapter(method, model),
        main_metric="test_accuracy", selected_by="validation_accuracy", epochs=epochs,
        best={"epoch": best["epoch"], "metrics": metric_values(best)},
        last={"epoch": epochs[-1]["epoch"], "metrics": metric_values(epochs[-1])}, image_size=size,
        train_examples=len(train), validation_examples=len(evals["validation"]), test_examples=len(evals["test"]),
        classes=len(labels), data_source=data_source)
    log.info("%s %s %s seed %d: test accuracy %.2f at the best validation epoch %s (validation %.2f), last %.2f "
             "-> %s", backbone.name, task.name, method.name, cfg.seed, best["test_accuracy"], best["epoch"],
             best["validation_accuracy"], epochs[-1]["test_accuracy"], run_.result_file)
    return best["test_accuracy"]


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
    return best_epoch(epochs, "validation_accuracy")


def merge_by_epoch(records: list[dict]) -> list[dict]:
    """Trainer logs each eval split as its own record: one entry per epoch with both splits."""
    merged: dict[float, dict] = {}
    for record in records:
        merged.setdefault(record["epoch"], {}).update(record)
    return [merged[e] for e in sorted(merged)]
