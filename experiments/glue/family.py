"""GLUE: one backbone, one method, one task, one seed; dev scores every epoch, best and last kept (the paper reports
the best epoch, median over seeds). A task is data: conf/task/<name>.yaml builds a GlueTask."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..shared.backbones import usable_length
from ..shared.family import (
    PER_EXAMPLE_LOSS,
    Family,
    Outcome,
    Prepared,
    Report,
    Selection,
    TaskDefinition,
    epoch_outcome,
    subsample,
)
from .data import load_glue
from .metrics import METRICS, compute_metrics


@dataclass(frozen=True)
class GlueTask(TaskDefinition):
    """One GLUE task: hub config `name` of `hub_id`, or `folder` in the original tsv layout."""

    folder: str = ""
    text_keys: tuple = ()        # columns fed to the tokenizer
    num_labels: int = 2          # 1 = regression
    metrics: tuple = ()          # the first one picks the best epoch
    columns: tuple = ()          # tsv column indices of (texts..., label)
    header: bool = True
    label_names: Optional[tuple] = None
    hub_id: str = "nyu-mll/glue"

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
        if self.num_labels < 1 or (self.label_names is not None and len(self.label_names) != self.num_labels):
            raise ValueError(f"GLUE task {self.name}: num_labels={self.num_labels} with label_names "
                             f"{self.label_names}")

    @property
    def family(self):
        return Glue


class Glue(Family):
    name = "glue"
    report = Report(
        title="GLUE dev, {which} epoch, median over seeds (MCC for CoLA, Pearson for STS-B, accuracy otherwise; "
              "params exclude the task head). [best of K]: K configurations ran for that cell and the one with the "
              "best dev median is shown.",
        columns=("best", "last"), table="selected", aggregate="median")
    task: GlueTask

    @property
    def selection(self) -> Selection:
        return Selection(self.task.metrics[0], split="validation")  # GLUE's dev set is its validation split

    def check_backbone(self, backbone):
        backbone.check_fits(AutoModelForSequenceClassification, self.task.name)

    def load_data(self):
        return load_glue(self.task, self.cfg.data.glue_dir, self.cfg.data.fallback_dirs)

    def load_model(self, backbone):
        problem = "regression" if self.task.num_labels == 1 else "single_label_classification"
        return backbone.load(AutoModelForSequenceClassification, num_labels=self.task.num_labels, problem_type=problem)

    def prepare(self, data, model, tokenizer) -> Prepared:
        task, trainer = self.task, self.cfg.trainer
        max_length = usable_length(trainer.max_length, model, tokenizer)

        def tokenize(batch):
            return tokenizer(*[batch[k] for k in task.text_keys], truncation=True, max_length=max_length)

        train = subsample(data["train"], trainer.max_train_samples, self.cfg.seed)
        dev = subsample(data["validation"], trainer.max_eval_samples, 0)
        train = train.map(tokenize, batched=True, remove_columns=list(task.text_keys))
        dev = dev.map(tokenize, batched=True, remove_columns=list(task.text_keys))
        return Prepared(train=train, eval=dev, collator=DataCollatorWithPadding(tokenizer),
                        compute_metrics=lambda p: compute_metrics(task, p.predictions, p.label_ids),
                        training_args={"eval_strategy": "epoch", **PER_EXAMPLE_LOSS},
                        counts={"train_examples": len(train), "dev_examples": len(dev)})

    def evaluate_on_every_rank(self, trainer):
        # a run too short for an epoch's evaluation (max_steps) is evaluated once at its end
        evaluated = any("eval_loss" in e for e in trainer.state.log_history)
        self.final = None if evaluated else {"epoch": trainer.state.epoch, **self.dev_metrics(trainer.evaluate())}

    def evaluate(self, trainer, model, tokenizer, data, artifacts) -> Outcome:
        epochs = [{"epoch": round(e["epoch"], 3), **self.dev_metrics(e)} for e in trainer.state.log_history
                  if "eval_loss" in e] or [self.final]
        return epoch_outcome(epochs, self.selection, main_metric=self.task.metrics[0])

    def dev_metrics(self, logged: dict) -> dict:
        """The task's metrics from a Trainer evaluation record (keys "eval_<metric>")."""
        return {k[len("eval_"):]: v for k, v in logged.items() if k[len("eval_"):] in self.task.metrics}
