"""GLUE: one backbone, one method, one task, one seed; dev scores every epoch, best and last kept (the paper reports
the best epoch, median over seeds). A task is data: conf/task/<name>.yaml builds a GlueTask (task.py)."""
from __future__ import annotations

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..shared.backbones import usable_length
from ..shared.family import (
    PER_EXAMPLE_LOSS,
    Family,
    Outcome,
    Prepared,
    Report,
    Selection,
    Trained,
    epoch_outcome,
    subsample,
    training_losses,
)
from .data import load_glue
from .metrics import compute_metrics
from .task import GlueTask


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
        return load_glue(self.task, self.data.glue_dir, self.data.fallback_dirs)

    def load_model(self, backbone, data):
        problem = "regression" if self.task.num_labels == 1 else "single_label_classification"
        return backbone.load(AutoModelForSequenceClassification, num_labels=self.task.num_labels, problem_type=problem)

    def prepare(self, data, model, tokenizer) -> Prepared:
        task, run = self.task, self.run
        max_length = usable_length(run.max_length, model, tokenizer)

        def tokenize(batch):
            return tokenizer(*[batch[k] for k in task.text_keys], truncation=True, max_length=max_length)

        train = subsample(data["train"], run.max_train_samples, run.seed)
        dev = subsample(data["validation"], run.max_eval_samples, 0)
        train = train.map(tokenize, batched=True, remove_columns=list(task.text_keys))
        dev = dev.map(tokenize, batched=True, remove_columns=list(task.text_keys))
        return Prepared(train=train, eval=dev, collator=DataCollatorWithPadding(tokenizer),
                        compute_metrics=lambda p: compute_metrics(task, p.predictions, p.label_ids),
                        training_args={"eval_strategy": "epoch", **PER_EXAMPLE_LOSS},
                        counts={"train_examples": len(train), "dev_examples": len(dev)})

    def evaluate_on_every_rank(self, trainer, prepared):
        # a run too short for an epoch's evaluation (max_steps) is evaluated once at its end
        if any("eval_loss" in e for e in trainer.state.log_history):
            return {}
        return {"final": {"epoch": trainer.state.epoch, **self.dev_metrics(trainer.evaluate())}}

    def evaluate(self, trained: Trained, artifacts) -> Outcome:
        epochs = [{"epoch": round(e["epoch"], 3), **self.dev_metrics(e)} for e in trained.trainer.state.log_history
                  if "eval_loss" in e] or [trained.collective["final"]]
        return epoch_outcome(epochs, self.selection, main_metric=self.task.metrics[0],
                             train_loss=training_losses(trained.trainer))

    def dev_metrics(self, logged: dict) -> dict:
        """The task's metrics from a Trainer evaluation record (keys "eval_<metric>")."""
        return {k[len("eval_"):]: v for k, v in logged.items() if k[len("eval_"):] in self.task.metrics}
