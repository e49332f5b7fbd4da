"""GLUE recipe: one backbone, one method, one task, one seed; dev scores every epoch, best and last kept."""
from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, set_seed

from ..shared import build
from ..shared.backbones import usable_length
from ..shared.methods import adapt
from ..shared.run import Run, best_epoch, metric_values
from ..shared.trainer import TwoRateTrainer, subsample
from .data import get_task, load_glue

log = logging.getLogger(__name__)


def compute_metrics(task, predictions, labels) -> dict:
    """Scores x100 as in the paper: accuracy, F1 (MRPC), Matthews (CoLA), Pearson/Spearman (STS-B)."""
    if task.num_labels == 1:
        preds = np.squeeze(predictions)
        return {"pearson": 100 * pearsonr(preds, labels)[0], "spearman": 100 * spearmanr(preds, labels)[0]}
    preds = np.argmax(predictions, axis=-1)
    scores = {"accuracy": 100 * accuracy_score(labels, preds)}
    if "f1" in task.metrics:
        scores["f1"] = 100 * f1_score(labels, preds)
    if "matthews" in task.metrics:
        scores["matthews"] = 100 * matthews_corrcoef(labels, preds)
    return scores


def run(cfg: DictConfig) -> float:
    task = get_task(cfg.task.name)
    run_ = Run(cfg, "glue", task.name)
    done = run_.finished()
    if done:
        return done["best"]["metrics"][task.metrics[0]]
    set_seed(cfg.seed)
    method, backbone = build(cfg)
    data, data_source = load_glue(task.name, cfg.data.glue_dir, cfg.data.fallback_dirs)
    problem = "regression" if task.num_labels == 1 else "single_label_classification"
    model, tokenizer = backbone.load(AutoModelForSequenceClassification, num_labels=task.num_labels,
                                     problem_type=problem)
    model, counts = adapt(model, method, backbone)
    log.info("%s on %s/%s: trainable %d of %d", method.name, backbone.name, task.name, counts["trainable"],
             counts["total"])

    max_length = usable_length(cfg.trainer.max_length, model, tokenizer)

    def tokenize(batch):
        texts = [batch[k] for k in task.text_keys]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    train = subsample(data["train"], cfg.trainer.max_train_samples, cfg.seed)
    dev = subsample(data["validation"], cfg.trainer.max_eval_samples, 0)
    train = train.map(tokenize, batched=True, remove_columns=list(task.text_keys))
    dev = dev.map(tokenize, batched=True, remove_columns=list(task.text_keys))

    trainer = TwoRateTrainer(
        model=model, args=run_.training_args(method, eval_strategy="epoch"), train_dataset=train, eval_dataset=dev,
        method=method, head=backbone.head, data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: compute_metrics(task, p.predictions, p.label_ids))
    run_.train(trainer)

    epochs = [{"epoch": round(e["epoch"], 3), **dev_metrics(e, task)} for e in trainer.state.log_history
              if "eval_loss" in e]
    if not epochs:
        epochs = [{"epoch": trainer.state.epoch, **dev_metrics(trainer.evaluate(), task)}]
    main = task.metrics[0]
    best = best_epoch(epochs, main)
    run_.write_result(
        **counts, adapter_bytes=run_.save_adapter(method, model),
        main_metric=main, epochs=epochs, best={"epoch": best["epoch"], "metrics": metric_values(best)},
        last={"epoch": epochs[-1]["epoch"], "metrics": metric_values(epochs[-1])},
        train_examples=len(train), dev_examples=len(dev), data_source=data_source)
    log.info("%s %s %s seed %d: best %s=%.2f (epoch %s), last %.2f -> %s", backbone.name, task.name,
             method.name, cfg.seed, main, best[main], best["epoch"], epochs[-1][main], run_.result_file)
    return best[main]


def dev_metrics(logged: dict, task) -> dict:
    """The task's metrics from a Trainer evaluation record (keys "eval_<metric>")."""
    return {k[len("eval_"):]: v for k, v in logged.items() if k[len("eval_"):] in task.metrics}
