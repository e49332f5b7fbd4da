"""The GLUE runner end to end on a tiny random BERT and slices of the real local GLUE data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.glue.data import get_task, load_glue, read_tsv
from experiments.glue.recipe import compute_metrics, run

from conftest import GLUE, ROOT, compose_config

needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="local GLUE mirror (../shared/data/glue) not present")
# two epochs, so that best and last epoch differ in meaning
GLUE_RUN = ["model=tiny_bert", "trainer.max_train_samples=48", "trainer.max_eval_samples=40", "trainer.epochs=2",
            "trainer.batch_size=16"]


@pytest.fixture
def config(fast_config):
    return lambda *overrides: fast_config(*GLUE_RUN, *overrides)


@pytest.mark.slow
@needs_glue
@pytest.mark.parametrize("task", ["mrpc", "stsb", "cola"])
@pytest.mark.parametrize("method", ["fourierft", "lora", "linear_probe"])
def test_runner_writes_complete_results(tmp_path, config, task, method):
    cfg = config(f"task={task}", f"method={method}", *(["method.n=64"] if method == "fourierft" else []))
    score = run(cfg)
    files = list((tmp_path / "results").rglob("*seed*.json"))
    assert len(files) == 1
    result = json.loads(files[0].read_text())
    assert result["best"]["metrics"][result["main_metric"]] == pytest.approx(score)
    assert [e["epoch"] for e in result["epochs"]] == [1.0, 2.0]
    assert result["last"]["epoch"] == 2.0
    for key in ("git_commit", "trainable_params", "adapter_bytes", "wall_time_s", "peak_memory", "config", "seed"):
        assert result[key] is not None
    assert result["config"]["method"]["name"] == method
    assert result["train_examples"] == 48 and result["dev_examples"] == 40
    expected_adapter = {"fourierft": 4 * 64, "lora": 2 * 2 * 8 * (32 + 32), "linear_probe": 0}[method]
    assert result["trainable_params"] - result["head_params"] == expected_adapter
    assert result["adapter_bytes"] > 0


@pytest.mark.slow
@needs_glue
def test_finished_run_is_skipped(tmp_path, config):
    cfg = config("task=rte")
    run(cfg)
    result = next((tmp_path / "results").rglob("*seed*.json"))
    stamp = result.stat().st_mtime_ns
    run(cfg)  # done already: not run again (kills and resumes: test_resume.py)
    assert result.stat().st_mtime_ns == stamp


@pytest.mark.slow
@needs_glue
def test_tables_from_runs(tmp_path, config):
    # FourierFT n=32 at two alphas (a sweep: two configurations in one cell), LoRA at one
    for method, extra in (("fourierft", ["method.n=32"]), ("fourierft", ["method.n=32", "method.scaling=5"]),
                          ("lora", [])):
        for seed in (0, 1):
            run(config("task=rte", f"method={method}", f"seed={seed}", *extra))
    out = tmp_path / "tables"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "tables.py"), "--results", str(tmp_path / "results"),
                    "--out", str(out)], check=True, cwd=ROOT)
    md = (out / "glue_best.md").read_text().replace(" (dirty tree)", "")  # the tests may run in an edited tree
    assert "| tiny_bert | fourierft | n=32 |" in md and "| tiny_bert | lora | r=8 |" in md
    ff_row = next(line for line in md.splitlines() if "| fourierft | n=32 |" in line)
    lora_row = next(line for line in md.splitlines() if "| lora | r=8 |" in line)
    assert "[best of 2]" in ff_row and "best of" not in lora_row
    import pandas as pd

    table = pd.read_csv(out / "glue_best.csv")
    runs = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*seed*.json")]
    per_config = {}
    for r in runs:
        if r["method"] == "fourierft":
            per_config.setdefault(r["config_id"], []).append(r["best"]["metrics"]["accuracy"])
    assert len(per_config) == 2 and all(len(v) == 2 for v in per_config.values())
    best_median = max(np.median(v) for v in per_config.values())
    ours = table.method.str.startswith("fourierft") & ~table.method.str.contains("paper")
    assert table.loc[ours, "RTE"].item() == pytest.approx(best_median)
    assert (table.loc[ours, "seeds"] == 2).all()
    assert (out / "params_vs_score.png").stat().st_size > 1000


def test_metrics_against_their_definitions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    logits = rng.normal(size=(50, 2))
    preds = logits.argmax(-1)
    tp, tn = int(((preds == 1) & (labels == 1)).sum()), int(((preds == 0) & (labels == 0)).sum())
    fp, fn = int(((preds == 1) & (labels == 0)).sum()), int(((preds == 0) & (labels == 1)).sum())
    mrpc = compute_metrics(get_task("mrpc"), logits, labels)
    assert mrpc["accuracy"] == pytest.approx(100 * (tp + tn) / 50)
    assert mrpc["f1"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics(get_task("cola"), logits, labels)["matthews"] == pytest.approx(100 * mcc)
    y, p = rng.normal(size=30), rng.normal(size=(30, 1))
    stsb = compute_metrics(get_task("stsb"), p, y)
    yc, pc = y - y.mean(), p[:, 0] - p[:, 0].mean()
    assert stsb["pearson"] == pytest.approx(100 * (yc @ pc) / np.sqrt((yc @ yc) * (pc @ pc)))
    ry, rp = np.argsort(np.argsort(y)).astype(float), np.argsort(np.argsort(p[:, 0])).astype(float)  # no ties
    ry, rp = ry - ry.mean(), rp - rp.mean()
    assert stsb["spearman"] == pytest.approx(100 * (ry @ rp) / np.sqrt((ry @ ry) * (rp @ rp)))


@needs_glue
@pytest.mark.parametrize("task,rows,first_label", [("mrpc", 408, 1), ("cola", 1043, None), ("rte", 277, None), ("stsb", 1500, 5.0)])
def test_local_tsv_reader(task, rows, first_label):
    data = read_tsv(GLUE / get_task(task).folder / "dev.tsv", get_task(task))
    assert len(data) == rows
    if first_label is not None:
        assert data[0]["label"] == first_label
    values = np.asarray(data["label"])
    if task == "stsb":  # similarities in [0, 5], spread over the range
        assert values.min() >= 0 and values.max() <= 5 and values.std() > 1
    else:
        assert set(np.unique(values)) == {0, 1}


def test_missing_data_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from experiments.shared import sources

    sources.hub_reachable.cache_clear()
    with pytest.raises(FileNotFoundError, match="Set data.glue_dir=/path or the FOURIERFT_GLUE_DIR variable"):
        load_glue("rte", None, [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="data.glue_dir=.* is not a folder"):
        load_glue("rte", str(tmp_path / "nowhere"))
    sources.hub_reachable.cache_clear()


@needs_glue
def test_qnli_without_train_split_is_explained():
    with pytest.raises(FileNotFoundError, match="no QNLI train split"):
        load_glue("qnli", str(GLUE))


@pytest.mark.parametrize("override,match", [
    ("task=mnli", "Could not find 'task/mnli'"), ("model=gpt5", "Could not find 'model/gpt5'"),
    ("method=adapterdrop", "Could not find 'method/adapterdrop'")])
def test_unknown_choices_list_the_options(tmp_path, override, match):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", override, "logger=none"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert match in proc.stderr and "Available options" in proc.stderr


def test_unknown_values_in_code_paths():
    from transformers import AutoModelForSequenceClassification

    from experiments.shared import sources
    from experiments.shared.backbones import HubModel

    with pytest.raises(ValueError, match="unknown GLUE task 'mnli'; accepted: sst2"):
        get_task("mnli")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sources.hub_reachable.cache_clear()
    try:
        roberta = HubModel("roberta_base", "FacebookAI/roberta-base", ["query"], ["classifier"], offline_default="minilm")
        with pytest.raises(RuntimeError, match="offline default model=minilm"):
            roberta.load(AutoModelForSequenceClassification, num_labels=2)
    finally:
        del os.environ["HF_HUB_OFFLINE"]
        sources.hub_reachable.cache_clear()


def test_presets_resolve_per_method():
    ff_cfg = compose_config("experiment=glue/roberta_base/mrpc")
    lora_cfg = compose_config("experiment=glue/roberta_base/mrpc", "method=lora")
    probe_cfg = compose_config("experiment=glue/roberta_base/mrpc", "method=linear_probe")
    swept = compose_config("experiment=glue/roberta_base/mrpc", "method.scaling=50", "trainer.epochs=2")
    large = compose_config("experiment=glue/roberta_large/cola")
    assert (ff_cfg.model.name, ff_cfg.task.name) == ("roberta_base", "mrpc")
    assert (ff_cfg.method.scaling, ff_cfg.method.lr, ff_cfg.method.head_lr, ff_cfg.trainer.epochs) == (141, 5e-2, 6e-3, 30)
    assert (lora_cfg.method.r, lora_cfg.method.lr, lora_cfg.trainer.batch_size, lora_cfg.trainer.epochs) == (8, 4e-4, 16, 30)
    assert (probe_cfg.method.lr, probe_cfg.method.head_lr, probe_cfg.trainer.epochs) == (6e-3, 6e-3, 30)
    assert (swept.method.scaling, swept.trainer.epochs) == (50, 2)
    assert (large.trainer.batch_size, large.trainer.max_length, large.method.scaling) == (128, 256, 120)


def test_results_from_a_dirty_tree_are_flagged_in_tables(tmp_path):
    def result(commit, seed):
        return {"family": "glue", "task": "rte", "model": "m", "method": "lora", "variant": "r=8", "seed": seed,
                "config_id": "c", "trainable_params": 10, "head_params": 0, "main_metric": "accuracy",
                "best": {"metrics": {"accuracy": 60.0}}, "last": {"metrics": {"accuracy": 60.0}}, "wall_time_s": 1,
                "git_commit": commit}
    (tmp_path / "lora-c-seed0.json").write_text(json.dumps(result("abc123", 0)))
    (tmp_path / "lora-c-seed1.json").write_text(json.dumps(result("abc123-dirty", 1)))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "tables.py"), "--results", str(tmp_path), "--out",
                    str(tmp_path / "t")], check=True, cwd=ROOT, capture_output=True)
    md = (tmp_path / "t" / "glue_best.md").read_text()
    assert "| m | lora | r=8 |" in md and "| m | lora (dirty tree) | r=8 |" in md  # never averaged together
    sweep = tmp_path / "sweeps" / "basis"
    sweep.mkdir(parents=True)
    (sweep / "lora-d-seed0.json").write_text(json.dumps({**result("abc123", 0), "variant": "r=1"}))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "tables.py"), "--results", str(tmp_path), "--out",
                    str(tmp_path / "t")], check=True, cwd=ROOT, capture_output=True)
    assert "r=1" not in (tmp_path / "t" / "glue_best.md").read_text()  # sweep runs stay out of the main tables
