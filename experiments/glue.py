"""GLUE recipe: one backbone, one method, one task, one seed; dev scores every epoch, best and last kept."""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

import fourierft as ff

from .glue_data import get_task, load_glue
from .methods import apply_method, head_parameter, param_groups, save_trained
from .models import load_classifier
from .results import config_id, environment, git_commit, peak_memory_mb, write_json_atomic

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


class GlueTrainer(Trainer):
    """Trainer with two learning rates: the adapter's and the classification head's."""

    def __init__(self, *args, method=None, head=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.head = method, head

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(param_groups(model or self.model, self.method, self.head))
        return self.optimizer


def subsample(dataset, limit, seed):
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def run(cfg: DictConfig) -> float:
    task = get_task(cfg.task.name)
    comparable = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "method", "trainer")}
    run_id = config_id(comparable)
    result_file = Path(cfg.results_dir) / "glue" / cfg.model.name / task.name / f"{cfg.method.name}-{run_id}-seed{cfg.seed}.json"
    if result_file.exists() and not cfg.overwrite:
        log.info("already done: %s (overwrite=true to run again)", result_file)
        import json

        return json.loads(result_file.read_text())["best"]["metrics"][task.metrics[0]]
    started = time.time()
    set_seed(cfg.seed)
    data, data_source = load_glue(task.name, cfg.data.glue_dir, cfg.data.fallback_dirs)
    model, tokenizer = load_classifier(cfg.model, task.num_labels)
    model = apply_method(model, cfg.method, cfg.model.target_modules, cfg.model.head)
    trainable, total = ff.trainable_parameters(model)
    head_params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and head_parameter(n, cfg.model.head))
    log.info("%s on %s/%s: trainable %d of %d", cfg.method.name, cfg.model.name, task.name, trainable, total)

    def tokenize(batch):
        texts = [batch[k] for k in task.text_keys]
        return tokenizer(*texts, truncation=True, max_length=cfg.trainer.max_length)

    train = subsample(data["train"], cfg.trainer.max_train_samples, cfg.seed)
    dev = subsample(data["validation"], cfg.trainer.max_eval_samples, 0)
    train = train.map(tokenize, batched=True, remove_columns=list(task.text_keys))
    dev = dev.map(tokenize, batched=True, remove_columns=list(task.text_keys))

    out_dir = Path(cfg.checkpoint_dir) / f"glue-{cfg.model.name}-{task.name}-{cfg.method.name}-{run_id}-seed{cfg.seed}"
    precision = mixed_precision(cfg.trainer.precision)
    args = TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=cfg.trainer.epochs, max_steps=cfg.trainer.max_steps,
        per_device_train_batch_size=cfg.trainer.batch_size, per_device_eval_batch_size=cfg.trainer.eval_batch_size,
        gradient_accumulation_steps=cfg.trainer.grad_accum, lr_scheduler_type="linear",
        learning_rate=cfg.method.lr, warmup_steps=cfg.trainer.warmup_ratio, max_grad_norm=cfg.trainer.max_grad_norm,
        eval_strategy="epoch", save_strategy=cfg.trainer.save_strategy, save_total_limit=1,
        logging_steps=cfg.trainer.logging_steps, seed=cfg.seed, data_seed=cfg.seed,
        report_to=list(cfg.logger.report_to), run_name=f"{cfg.model.name}-{task.name}-{cfg.method.name}-s{cfg.seed}",
        disable_tqdm=not cfg.trainer.progress_bar, dataloader_num_workers=cfg.trainer.num_workers,
        use_cpu=cfg.trainer.use_cpu, **precision)
    trainer = GlueTrainer(
        model=model, args=args, train_dataset=train, eval_dataset=dev, method=cfg.method, head=list(cfg.model.head),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: compute_metrics(task, p.predictions, p.label_ids))
    resume = get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)

    epochs = [{"epoch": round(e["epoch"], 3), **{k[len("eval_"):]: e[k] for k in e if k[len("eval_"):] in task.metrics}}
              for e in trainer.state.log_history if "eval_loss" in e]
    if not epochs:
        epochs = [{"epoch": trainer.state.epoch, **strip_eval(trainer.evaluate(), task)}]
    main = task.metrics[0]
    best = max(epochs, key=lambda e: e[main])
    adapter_dir = result_file.with_suffix("")
    result = {
        "family": "glue", "task": task.name, "model": cfg.model.name, "method": cfg.method.name,
        "seed": cfg.seed, "config_id": run_id, "main_metric": main,
        "trainable_params": trainable, "head_params": head_params, "total_params": total,
        "adapter_bytes": save_trained(model, cfg.method, adapter_dir) if cfg.save_adapter else None,
        "epochs": epochs, "best": {"epoch": best["epoch"], "metrics": metric_values(best)},
        "last": {"epoch": epochs[-1]["epoch"], "metrics": metric_values(epochs[-1])},
        "train_examples": len(train), "dev_examples": len(dev), "data_source": data_source,
        "wall_time_s": time.time() - started, "peak_memory": peak_memory_mb(),
        "git_commit": git_commit(), **environment(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(result_file, result)
    if not cfg.trainer.keep_checkpoints:
        shutil.rmtree(out_dir, ignore_errors=True)
    log.info("%s %s %s seed %d: best %s=%.2f (epoch %s), last %.2f -> %s", cfg.model.name, task.name,
             cfg.method.name, cfg.seed, main, best[main], best["epoch"], epochs[-1][main], result_file)
    return best[main]


def metric_values(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "epoch"}


def strip_eval(metrics: dict, task) -> dict:
    return {k[len("eval_"):]: v for k, v in metrics.items() if k[len("eval_"):] in task.metrics}


def mixed_precision(setting: str) -> dict:
    """"auto": bf16 where the GPU has it, else fp16 on CUDA, fp32 on CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
        return {}
    if setting not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"trainer.precision={setting!r} is not one of auto, fp32, bf16, fp16")
    return {} if setting == "fp32" else {setting: True}
