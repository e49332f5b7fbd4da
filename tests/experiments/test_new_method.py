"""The extension promise for a method: a class defined outside the suite (here, in this test module) and one
conf/method/<name>.yaml on Hydra's search path run through experiments.train, its settings checked, into a result."""
import json
import os
import subprocess
import sys

import pytest
import yaml
from torch import nn

from experiments.shared.methods import Method
from experiments.shared.validate import int_at_least

from helpers import GLUE, ROOT


class LayerNormOnly(Method):
    """A toy method: the LayerNorm weights of the first `layers` encoder layers train, and the head."""

    settings = {"layers": int_at_least(1)}

    def __init__(self, name, lr, head_lr, weight_decay=0.0, layers=1):
        super().__init__(name, lr, head_lr, weight_decay)
        self.layers = layers

    @property
    def variant(self):
        return f"layers={self.layers}"

    def apply(self, model: nn.Module, backbone) -> nn.Module:
        for name, p in model.named_parameters():
            chosen = any(f"layer.{i}." in name for i in range(self.layers)) and "LayerNorm" in name
            p.requires_grad_(chosen or any(name.startswith(h) for h in backbone.head))
        return model


@pytest.mark.slow
@pytest.mark.parametrize("layers, ok", [(2, True), (0, False)])
def test_a_method_defined_outside_the_suite_runs_from_one_yaml(tmp_path, layers, ok):
    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "ln_only.yaml").write_text(yaml.safe_dump({
        "_target_": "test_new_method.LayerNormOnly", "name": "ln_only", "lr": 1e-3,
        "head_lr": 1e-3, "weight_decay": 0.0, "layers": 1}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "tests" / "experiments"), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
         "method=ln_only", f"method.layers={layers}", "task=rte", "model=tiny_bert", "logger=none",
         f"data.glue_dir={GLUE}", "trainer.epochs=1", "trainer.max_train_samples=16", "trainer.max_eval_samples=16",
         "trainer.batch_size=8", "trainer.progress_bar=false", f"results_dir={tmp_path / 'results'}",
         f"checkpoint_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if not ok:  # its own setting rule runs before anything loads
        assert proc.returncode != 0 and "method.layers=0" in proc.stderr and not (tmp_path / "results").exists()
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next((tmp_path / "results").rglob("*seed*.json")).read_text())
    # the tiny BERT's two LayerNorms in each of its two layers: 4 x (weight + bias) x hidden size 32
    assert (result["method"], result["variant"]) == ("ln_only", "layers=2")
    assert result["trainable_params"] - result["head_params"] == 4 * 2 * 32


class NoApply(Method):
    """A method that forgot `apply`."""


def test_a_method_without_apply_fails_when_built_before_anything_loads(tmp_path, monkeypatch):
    from experiments.glue.family import Glue
    from experiments.runner import run

    from helpers import compose_config

    def loaded(*args, **kwargs):
        raise AssertionError("data loaded before the method was built")

    monkeypatch.setattr(Glue, "load_data", loaded)
    cfg = compose_config("task=rte", "model=tiny_bert", "logger=none", f"results_dir={tmp_path}",
                         f"method._target_={NoApply.__module__}.NoApply")
    with pytest.raises(TypeError, match="Can't instantiate abstract class NoApply .*apply"):
        run(cfg)
