"""The contract between the runner (experiments/runner.py) and a task family (GLUE, E2E, ...).

A family supplies what is its own: how to load its data and its model head, how to turn examples into model inputs,
how to score a trained model, and which split and metric select among runs. The runner owns everything else (seed,
method, Trainer, checkpoints and resume, locking, the adapter, the result file), so a new family is a package with a
`TaskDefinition` subclass (task.py) and a `Family` subclass (family.py), plus `conf/task/<name>.yaml` files naming
the definition with `_target_`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from hydra.utils import get_class
from omegaconf import DictConfig


@dataclass(frozen=True)
class Selection:
    """What chooses among runs (an LR search, the tables' "best of K"): a metric on a split that is never test.

    `value` is what the runner returns to Hydra, which maximises: a metric to minimise (a loss) is returned negated."""

    metric: str
    split: str = "validation"
    mode: str = "max"

    def __post_init__(self):
        if self.split == "test" or "test" in self.metric.split("_"):
            raise ValueError(f"selection by {self.metric!r} on {self.split!r}: runs are never selected on a test "
                             "split")
        if self.mode not in ("max", "min"):
            raise ValueError(f"selection mode {self.mode!r} is not one of max, min")

    def objective(self, value: float) -> float:
        """The number Hydra's sweepers maximise."""
        return value if self.mode == "max" else -value

    def as_dict(self, value: float) -> dict:
        return {"metric": self.metric, "split": self.split, "mode": self.mode, "value": value}


@dataclass(frozen=True)
class Report:
    """How tables show a family's results. table: "selected" (a column per task, one configuration per cell chosen by
    the selection metric, the `columns[0]` score shown) or "rows" (one row per configuration, `columns` as columns).
    aggregate: over seeds, "median" or "mean"."""

    title: str
    columns: tuple
    table: str = "rows"
    aggregate: str = "mean"

    def as_dict(self, display_name: str) -> dict:
        return {"title": self.title, "columns": list(self.columns), "table": self.table, "aggregate": self.aggregate,
                "display_name": display_name}


# For a family whose model averages its loss over the examples of the local batch (classifiers): Trainer's default
# multiplies that loss by the process count (it expects a loss summed over items and divided by their global
# count, as causal-LM losses are), so N processes would optimise and log N times the loss, and clip differently.
PER_EXAMPLE_LOSS = {"average_tokens_across_devices": False}


@dataclass
class Prepared:
    """What a family hands the Trainer: datasets, collator, metrics function, its own TrainingArguments values, and
    counts for the result (train_examples, ...); `held_out` a set the family scores itself after training (a loss that
    selects runs), `facts` what its evaluation reports of the preparation (image size, augmentation)."""

    train: Any
    collator: Any
    eval: Any = None
    compute_metrics: Any = None
    training_args: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    held_out: Any = None
    facts: dict = field(default_factory=dict)


@dataclass
class Trained:
    """What evaluation reads: the Trainer after training, the model and its tokenizer or image statistics, the data,
    the preparation, and what the collective evaluations on every rank returned."""

    trainer: Any
    model: Any
    processor: Any
    data: Any
    prepared: Prepared
    collective: dict


@dataclass
class Outcome:
    """What a family's evaluation found: the selection metric's value and the fields it adds to the result (metrics,
    epochs, best / last epoch, file names of predictions, ...)."""

    selection_value: float
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunLimits:
    """What a family reads of the run beyond its own section: the seed, and the trainer's length and subset limits."""

    seed: int
    max_length: int
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None

    @classmethod
    def of(cls, cfg: DictConfig) -> RunLimits:
        t = cfg.trainer
        return cls(cfg.seed, t.max_length, t.get("max_train_samples"), t.get("max_eval_samples"))


@dataclass(frozen=True)
class TaskDefinition:
    """A task as data (conf/task/<name>.yaml, `definition:`): subclasses add their fields and name their family's
    class by its dotted path (a name, not an import: the family's module imports its task definitions)."""

    family: ClassVar[str]
    name: str
    display_name: str

    def __post_init__(self):
        check_name("task.name", self.name)

    def family_class(self) -> type:
        family = get_class(self.family)
        if not (isinstance(family, type) and issubclass(family, Family)):
            raise TypeError(f"{type(self).__name__}.family = {self.family!r} is not a Family subclass")
        return family


class Family(ABC):
    """Base class of the task families; a subclass missing one of the abstract methods fails when it is built,
    before any data or model loads. It receives its own config section (`options`: the run's `task:` settings, checked
    against the `settings` rules first), where the data lives (`data`), the run's limits, and any other sections it
    names in `sections` (instruction tuning: the judge). What one step finds, it returns to the next."""

    name: ClassVar[str]
    report: ClassVar[Report]
    settings: ClassVar[dict] = {}
    sections: ClassVar[tuple] = ()

    def __init__(self, task: TaskDefinition, options: DictConfig, data: DictConfig, run: RunLimits, **sections):
        missing = sorted(set(self.sections) - set(sections))
        if missing:
            raise TypeError(f"{type(self).__name__} needs the config sections {missing}")
        self.task, self.options, self.data, self.run = task, options, data, run
        for section in self.sections:
            setattr(self, section, sections[section])

    @property
    @abstractmethod
    def selection(self) -> Selection:
        """The metric and split that choose among runs (never test)."""

    def check(self) -> None:  # noqa: B027 (an optional hook: doing nothing is its default)
        """Refuse early (before any data or model loads) what this family cannot run: a judge that is not there."""

    def check_backbone(self, backbone) -> None:  # noqa: B027 (an optional hook)
        """Refuse a model of the wrong kind for this family before its weights or the data load."""

    @abstractmethod
    def load_data(self) -> tuple[Any, str]:
        """(the splits, where they came from)."""

    @abstractmethod
    def load_model(self, backbone, data) -> tuple[Any, Any]:
        """(model with this family's head, its tokenizer or image statistics)."""

    @abstractmethod
    def prepare(self, data, model, processor) -> Prepared:
        """Datasets, collator and metrics for the Trainer."""

    def evaluate_on_every_rank(self, trainer, prepared: Prepared) -> dict:
        """Evaluations that are Trainer collectives (`trainer.evaluate`): under several processes every rank must
        join them, so the runner calls this on every rank, before rank 0 alone calls `evaluate`, which receives what
        this returns as `trained.collective`."""
        return {}

    @abstractmethod
    def evaluate(self, trained: Trained, artifacts: Path) -> Outcome:
        """Score the trained model (rank 0 only under several processes: no Trainer collectives here, they belong in
        `evaluate_on_every_rank`); files go under `artifacts`."""

    def unfinished(self, result: dict) -> bool:
        """A stored result that this configuration can take further without training (a run judged later)."""
        return False

    def finish(self, result: dict, artifacts: Path) -> dict:
        """The last step after evaluation, which may fail and be retried without training again (judging)."""
        return result


def check_name(setting: str, value: Optional[str]) -> None:
    """A value that becomes a path segment (task, model or method name): no separators, no "..", nothing hidden."""
    if not isinstance(value, str) or not value or value in (".", "..") or value.startswith(".") \
            or any(c in value for c in "/\\\0") or len(value) > 100:
        raise ValueError(f"{setting}={value!r} becomes a folder name: use letters, digits, '-', '_' or '.' (not "
                         "leading), without '/' or '..'")


def best_epoch(epochs: list[dict], metric: str, mode: str = "max") -> dict:
    """The epoch with the best finite `metric`: a NaN epoch (a constant prediction's correlation, a diverged model)
    is never "best"; all NaN is an error."""
    scored = [e for e in epochs if math.isfinite(e[metric])]
    if not scored:
        raise FloatingPointError(f"every evaluation gave {metric}={epochs[-1][metric]}: the model diverged or "
                                 "predicts a constant; no result was written")
    return (max if mode == "max" else min)(scored, key=lambda e: e[metric])


def metric_values(entry: dict) -> dict:
    """An epoch record's metrics, without its epoch number."""
    return {k: v for k, v in entry.items() if k != "epoch"}


def epoch_outcome(epochs: list[dict], selection: Selection, main_metric: str, **fields) -> Outcome:
    """The outcome of a family that evaluates every epoch: the epoch best by `selection` (whose value goes to Hydra)
    and the last one, each with its metrics; `main_metric` is what tables show of them."""
    best = best_epoch(epochs, selection.metric, selection.mode)
    return Outcome(best[selection.metric], {
        "main_metric": main_metric, "epochs": epochs, "best": {"epoch": best["epoch"], "metrics": metric_values(best)},
        "last": {"epoch": epochs[-1]["epoch"], "metrics": metric_values(epochs[-1])}, **fields})


def training_losses(trainer) -> list[dict]:
    """The training loss Trainer logged (every trainer.logging_steps steps), with its epoch."""
    return [{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]


def subsample(dataset, limit, seed):
    """A seeded random subset of `limit` examples (all of them when limit is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))
