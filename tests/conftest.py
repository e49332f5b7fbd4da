"""Shared fixtures: the repository's paths, the local data mirror, and a config composer with the fast settings."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GLUE = SHARED / "glue"

# small and quick: every end-to-end test starts from these, then adds its own overrides
FAST = ["logger=none", "trainer.epochs=1", "trainer.batch_size=8", "trainer.max_length=48", "trainer.progress_bar=false",
        "trainer.max_train_samples=16", "trainer.max_eval_samples=16"]

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason="local data mirror (../shared/data) not present")


def compose_config(*overrides):
    """The composed (unresolved) run config for these command-line overrides."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture
def fast_config(tmp_path):
    """compose(*overrides) with FAST settings, local data, and results/checkpoints under tmp_path."""
    def make(*overrides):
        return compose_config(
            *FAST, f"data.glue_dir={GLUE}", f"data.e2e_dir={SHARED / 'e2e_nlg'}",
            f"data.alpaca_file={SHARED / 'alpaca' / 'alpaca_5000.json'}", f"data.bench_dir={SHARED / 'mt_bench_vicuna'}",
            f"results_dir={tmp_path / 'results'}", f"checkpoint_dir={tmp_path / 'ckpt'}", *overrides)
    return make
