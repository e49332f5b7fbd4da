"""GLUE dev metrics x100, as the paper reports them."""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

METRICS = ("accuracy", "f1", "matthews", "pearson", "spearman")


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
