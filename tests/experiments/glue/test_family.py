"""The GLUE family end to end on a tiny random BERT and slices of the real local GLUE data; its metrics against
their definitions."""
import json

import numpy as np
import pytest

from experiments.glue.metrics import compute_metrics
from experiments.runner import run
from experiments.shared.tasks import load_task


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mrpc", "stsb", "cola"])
@pytest.mark.parametrize("method", ["fourierft", "lora", "linear_probe"])
def test_runner_writes_complete_results(tmp_path, glue_config, task, method):
    cfg = glue_config(f"task={task}", f"method={method}", *(["method.n=64"] if method == "fourierft" else []))
    returned = run(cfg)
    files = list((tmp_path / "results").rglob("*seed*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    main = {"mrpc": "accuracy", "stsb": "pearson", "cola": "matthews"}[task]
    assert result["main_metric"] == main and [e["epoch"] for e in result["epochs"]] == [1.0, 2.0]
    best = max(result["epochs"], key=lambda e: e[main])  # chosen here, not by the code under test
    assert result["best"] == {"epoch": best["epoch"], "metrics": {k: v for k, v in best.items() if k != "epoch"}}
    assert result["last"]["epoch"] == 2.0 and result["last"]["metrics"][main] == result["epochs"][-1][main]
    assert returned == best[main] and result["selection"] == {"metric": main, "split": "validation", "mode": "max",
                                                               "value": best[main]}
    if method == "fourierft":  # the saved adapter, scored again from scratch, gives the last epoch's dev metrics
        again = rescored(cfg, files[0].with_suffix("") / "adapter")
        assert {k: again[k] for k in result["last"]["metrics"]} == pytest.approx(result["last"]["metrics"])
    for key in ("git_commit", "trainable_params", "adapter_bytes", "wall_time_s", "peak_memory", "config", "seed"):
        assert result[key] is not None
    assert result["config"]["method"]["name"] == method
    assert result["train_examples"] == 48 and result["dev_examples"] == 40
    expected_adapter = {"fourierft": 4 * 64, "lora": 2 * 2 * 8 * (32 + 32), "linear_probe": 0}[method]
    assert result["trainable_params"] - result["head_params"] == expected_adapter
    assert result["adapter_bytes"] > 0


def rescored(cfg, adapter) -> dict:
    """The dev metrics of a fresh model with `adapter` loaded, computed with scikit-learn / scipy directly."""
    import torch
    from hydra.utils import instantiate
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    from transformers import set_seed

    import fourierft as ff
    from experiments.runner import build_family

    family = build_family(cfg)
    set_seed(cfg.seed)  # the tiny model's random base weights are drawn as the run drew them
    instantiate(cfg.method)
    backbone = instantiate(cfg.model)
    data, _ = family.load_data()
    model, tokenizer = family.load_model(backbone, data)
    model = ff.load_adapter(model, adapter).eval()
    dev = family.prepare(data, model, tokenizer).eval
    with torch.no_grad():
        batch = family.prepare(data, model, tokenizer).collator([dev[i] for i in range(len(dev))])
        labels = batch.pop("labels").numpy()
        logits = model(**batch).logits.numpy()
    if logits.shape[1] == 1:
        return {"pearson": 100 * pearsonr(logits[:, 0], labels)[0], "spearman": 100 * spearmanr(logits[:, 0], labels)[0]}
    preds = logits.argmax(-1)
    scores = {"accuracy": 100 * accuracy_score(labels, preds)}
    if cfg.task.name == "mrpc":
        scores["f1"] = 100 * f1_score(labels, preds)
    if cfg.task.name == "cola":
        scores["matthews"] = 100 * matthews_corrcoef(labels, preds)
    return scores


@pytest.mark.slow
def test_finished_run_is_skipped(tmp_path, glue_config):
    cfg = glue_config("task=rte")
    run(cfg)
    result = next((tmp_path / "results").rglob("*seed*.json"))
    stamp = result.stat().st_mtime_ns
    run(cfg)  # done already: not run again (kills and resumes: test_resume.py)
    assert result.stat().st_mtime_ns == stamp


def test_metrics_against_their_definitions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    logits = rng.normal(size=(50, 2))
    preds = logits.argmax(-1)
    tp, tn = int(((preds == 1) & (labels == 1)).sum()), int(((preds == 0) & (labels == 0)).sum())
    fp, fn = int(((preds == 1) & (labels == 0)).sum()), int(((preds == 0) & (labels == 1)).sum())
    mrpc = compute_metrics(load_task("mrpc"), logits, labels)
    assert mrpc["accuracy"] == pytest.approx(100 * (tp + tn) / 50)
    assert mrpc["f1"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics(load_task("cola"), logits, labels)["matthews"] == pytest.approx(100 * mcc)
    y, p = rng.normal(size=30), rng.normal(size=(30, 1))
    stsb = compute_metrics(load_task("stsb"), p, y)
    yc, pc = y - y.mean(), p[:, 0] - p[:, 0].mean()
    assert stsb["pearson"] == pytest.approx(100 * (yc @ pc) / np.sqrt((yc @ yc) * (pc @ pc)))
    ry, rp = np.argsort(np.argsort(y)).astype(float), np.argsort(np.argsort(p[:, 0])).astype(float)  # no ties
    ry, rp = ry - ry.mean(), rp - rp.mean()
    assert stsb["spearman"] == pytest.approx(100 * (ry @ rp) / np.sqrt((ry @ ry) * (rp @ rp)))
