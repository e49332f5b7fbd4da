"""Every preset composes with every method it supports, resolves, and builds its method and model objects."""
import pytest
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from conftest import ROOT, compose_config

EXPERIMENTS = sorted(str(p.relative_to(ROOT / "conf/experiment").with_suffix(""))
                     for p in (ROOT / "conf/experiment").rglob("*.yaml"))
METHODS = sorted(p.stem for p in (ROOT / "conf/method").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_preset_composes_resolves_and_builds(experiment, method):
    cfg = compose_config(f"experiment={experiment}", f"method={method}")
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert resolved["method"]["name"] == method
    built = instantiate(cfg.method, _convert_="all")
    assert built.name == method and built.lr > 0 and built.head_lr > 0
    backbone = instantiate(cfg.model, _convert_="all") if "tokenizer" not in cfg.model else None
    assert backbone is None or backbone.name == cfg.model.name
    assert callable(get_method(cfg.task.recipe._target_))
    preset = ROOT / "conf/preset" / experiment / f"{method}.yaml"
    if preset.is_file():  # what the per-method preset states is what the run gets
        stated = OmegaConf.load(preset)
        for group in ("method", "trainer"):
            for key, value in (stated.get(group) or {}).items():
                assert resolved[group][key] == value, (group, key)


def test_every_preset_states_fourierft_values():
    for experiment in EXPERIMENTS:
        assert (ROOT / "conf/preset" / experiment / "fourierft.yaml").is_file(), experiment


def test_a_command_line_override_beats_the_preset():
    cfg = compose_config("experiment=glue/roberta_base/rte", "method.lr=0.5", "trainer.epochs=2")
    assert (cfg.method.lr, cfg.trainer.epochs, cfg.method.scaling) == (0.5, 2, 110)


def test_a_mistyped_experiment_is_an_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="experiment/glue/roberta_base/mrcp"):
        compose_config("experiment=glue/roberta_base/mrcp")


def test_no_recipe_imports_another_recipe():
    families = [p.name for p in (ROOT / "experiments").iterdir() if (p / "recipe.py").is_file()]
    for family in families:
        for source in (ROOT / "experiments" / family).glob("*.py"):
            text = source.read_text()
            for other in families:
                if other != family:
                    assert f"experiments.{other}" not in text and f"from ..{other}" not in text, (source, other)
    for source in (ROOT / "experiments" / "shared").glob("*.py"):
        assert not any(f"from ..{f}" in source.read_text() for f in families), source
