"""Every preset composes with every method, resolves, and builds its method, model and task objects; the families
stay apart (none imports another, the shared code imports none, the library imports nothing of the suite)."""
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.runner import build_family
from experiments.shared.backbones import Backbone
from experiments.shared.methods import Method

from helpers import ROOT, compose_config

EXPERIMENTS = sorted(str(p.relative_to(ROOT / "conf/experiment").with_suffix(""))
                     for p in (ROOT / "conf/experiment").rglob("*.yaml"))


METHODS = sorted(p.stem for p in (ROOT / "conf/method").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_preset_composes_resolves_and_builds(experiment, method):
    cfg = compose_config(f"experiment={experiment}", f"method={method}")
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    built = instantiate(cfg.method, _convert_="all")
    assert isinstance(built, Method) and (built.lr, built.head_lr) == (resolved["method"]["lr"],
                                                                       resolved["method"]["head_lr"])
    if "tokenizer" not in cfg.model:  # a random test model would build its tokenizer folder
        assert isinstance(instantiate(cfg.model, _convert_="all"), Backbone)
    family = build_family(cfg)  # the task's definition builds, and names the family of the preset's folder
    folder = experiment.removeprefix("demo/").split("/")[0]
    assert family.name == {"vit": "vision"}.get(folder, folder) and family.task.name == resolved["task"]["name"]
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


def test_no_family_imports_another_and_the_library_imports_no_suite():
    families = [p.name for p in (ROOT / "experiments").iterdir() if (p / "family.py").is_file() and p.name != "shared"]
    assert sorted(families) == ["e2e", "glue", "instruct", "vision"]
    for family in families:
        for source in (ROOT / "experiments" / family).glob("*.py"):
            text = source.read_text()
            for other in families:
                if other != family:
                    assert f"experiments.{other}" not in text and f"from ..{other}" not in text, (source, other)
    for source in [*(ROOT / "experiments" / "shared").glob("*.py"), ROOT / "experiments" / "runner.py"]:
        assert not any(f"from ..{f}" in source.read_text() or f"from .{f}" in source.read_text()
                       for f in families), source
    for source in (ROOT / "fourierft").glob("*.py"):
        assert "experiments" not in source.read_text(), source


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
