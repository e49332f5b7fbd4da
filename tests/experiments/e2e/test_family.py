"""The E2E family end to end on tiny random decoders (GPT-2 with fused q/v slices, LLaMA), and its offline stop."""
import json

import pytest

from experiments.e2e.metrics import group_references
from experiments.runner import run


@pytest.mark.slow
@pytest.mark.parametrize("model,method", [("tiny_gpt2", "fourierft"), ("tiny_llama", "fourierft"), ("tiny_gpt2", "lora"),
                                          ("tiny_gpt2", "lora_qv")])
def test_e2e_runner(tmp_path, generation_config, model, method):
    extra = {"fourierft": ["method.n=40"], "lora_qv": ["+method.fused_parts=[q,v]"]}.get(method, [])
    cfg = generation_config("task=e2e", f"model={model}", f"method={method.removesuffix('_qv')}", "task.max_test_mrs=3",
                            "task.decoding.num_beams=2", "task.decoding.max_new_tokens=6", *extra)
    run(cfg)
    result_file = next((tmp_path / "results").rglob("*seed0.json"))
    result = json.loads(result_file.read_text())
    assert set(result["metrics"]) == {"bleu", "nist", "meteor", "rouge_l", "cider"}
    assert result["test_mrs"] == 3 and result["train_examples"] == 16
    predictions = [json.loads(l) for l in open(result_file.with_suffix("") / "predictions.jsonl")]
    assert len(predictions) == 3 and all(len(p["references"]) >= 1 for p in predictions)
    # GPT-2: the q and v slices of each layer's fused c_attn; LLaMA: q_proj and v_proj; LoRA on the q and v slices
    # (A and B per slice) holds as many numbers as LoRA on all of c_attn (A 8 x 32, B 96 x 8)
    expected = {("tiny_gpt2", "fourierft"): 2 * 2 * 40, ("tiny_llama", "fourierft"): 2 * 2 * 40,
                ("tiny_gpt2", "lora"): 2 * 8 * (32 + 96), ("tiny_gpt2", "lora_qv"): 2 * 2 * 8 * (32 + 32)}[(model, method)]
    assert result["trainable_params"] == expected


def test_references_grouped_by_mr():
    grouped = group_references(["a", "b", "a"], ["x", "y", "z"])
    assert list(grouped) == ["a", "b"] and grouped["a"] == ["x", "z"]


def test_reproduce_e2e_offline_stops_at_once_naming_the_model(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import ROOT

    # the data folder does not exist: a run that loaded data before the model would fail on it instead
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "experiment=e2e/gpt2_medium", "logger=none",
                           f"data.e2e_dir={tmp_path / 'no-data'}", f"results_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "model 'gpt2_medium' (openai-community/gpt2-medium) is neither a local folder nor reachable" in proc.stderr
    assert "is not a folder" not in proc.stderr  # the data setting was never looked at
