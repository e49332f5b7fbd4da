"""Every preset composes with every method, resolves, and builds its method, model and task objects; the families
stay apart (none imports another, the shared code imports none, the library imports nothing of the suite)."""
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.presets import experiment_names, methods, presets
from experiments.runner import build_family
from experiments.shared.backbones import Backbone
from experiments.shared.methods import Method

from helpers import compose_config

EXPERIMENTS = experiment_names()
METHODS = methods()


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
    family = build_family(cfg)  # the task's definition builds, and names the family of the table's folder
    assert family.name in experiment.split("/")[:2] and family.task.name == resolved["task"]["name"]
    _, values, per_method, _ = presets()[experiment]
    stated = OmegaConf.to_container(OmegaConf.merge(values, per_method.get(method, {})))
    composed = OmegaConf.to_container(cfg)  # as written: a stated ${paths.data_dir}/glue stays itself (it resolves above)
    for group, settings in stated.items():  # what the table states is what the run gets, the method's row last
        if isinstance(settings, dict):
            for key, value in settings.items():
                assert composed[group][key] == value, (group, key)
        else:
            assert composed[group] == settings, group


def test_every_paper_preset_states_fourierft_values():
    for experiment in EXPERIMENTS:
        assert "fourierft" in presets()[experiment][2], experiment


def test_a_command_line_override_beats_the_preset():
    cfg = compose_config("experiment=glue/roberta_base/rte", "method.lr=0.5", "trainer.epochs=2")
    assert (cfg.method.lr, cfg.trainer.epochs, cfg.method.scaling) == (0.5, 2, 110)


def test_a_mistyped_experiment_is_an_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="experiment/glue/roberta_base/mrcp"):
        compose_config("experiment=glue/roberta_base/mrcp")


def test_figure_4s_qqp_panel_runs_at_real_settings():
    """QQP (Figure 4's sixth task) composes from a preset like the other five: LoRA at the LoRA paper's QQP column,
    FourierFT at its QNLI row by the stated rule, never at the trainer's defaults."""
    lora = compose_config("experiment=glue/roberta_base/qqp", "method=lora")
    assert (lora.trainer.batch_size, lora.trainer.epochs, lora.method.lr) == (16, 25, 5e-4)
    qqp = OmegaConf.to_container(compose_config("experiment=glue/roberta_base/qqp", "method=fourierft"), resolve=True)
    qnli = OmegaConf.to_container(compose_config("experiment=glue/roberta_base/qnli", "method=fourierft"), resolve=True)
    assert qqp["task"]["name"] == "qqp" and qqp["method"] == qnli["method"] and qqp["trainer"] == qnli["trainer"]
    default = compose_config("task=qqp", "model=roberta_base", "method=fourierft")
    assert qqp["trainer"]["epochs"] != default.trainer.epochs
