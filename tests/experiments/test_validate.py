"""Every setting is checked before anything loads: nonsense values stop with the key, the value and what is
accepted."""
import pytest

from helpers import compose_config


class Passed(Exception):
    pass


def make_run(*overrides):
    """The runner on these settings, stopped right after the settings are checked (before its first file)."""
    from experiments import runner

    cfg = compose_config("model=tiny_bert", "logger=none", *overrides)

    def identity(*args, **kwargs):
        raise Passed("the settings passed validation")

    original, runner.RunIdentity.of = runner.RunIdentity.of, identity
    try:
        return runner.run(cfg)
    finally:
        runner.RunIdentity.of = original


@pytest.mark.parametrize("overrides", [(), ("method=lora",), ("task=e2e", "model=tiny_gpt2"),
                                       ("task=fashion_mnist", "model=tiny_vit"), ("task=alpaca", "model=tiny_llama")])
def test_good_settings_pass(overrides):
    with pytest.raises(Passed):
        make_run(*overrides)


@pytest.mark.parametrize("override,named", [
    ("task=e2e task.label_smoothing=1.0", "task.label_smoothing=1.0 (accepted: a number in [0, 1))"),
    ("task=e2e task.decoding.num_beams=0", "task.decoding.num_beams=0"),
    ("task=alpaca task.validation_examples=-1", "task.validation_examples=-1"),
    ("task=fashion_mnist task.image_size=8", "task.image_size=8 (accepted: null or an integer >= 16)"),
    ("task=fashion_mnist task.validation_fraction=0", "task.validation_fraction=0 (accepted: a number in (0, 1))"),
    ("task=fashion_mnist task.crop_scale=[0.9,0.1]", "task.crop_scale=[0.9, 0.1] (accepted: auto, or [low, high]"),
    ("task=fashion_mnist task.crop_scale=0.5", "task.crop_scale=0.5 (accepted: auto"),
    ("task=fashion_mnist task.flip=maybe", "task.flip='maybe' (accepted: true or false)"),
])
def test_family_settings_are_checked_by_their_family(override, named):
    with pytest.raises(ValueError, match="invalid settings, nothing was loaded or trained") as e:
        make_run(*override.split())
    assert named in str(e.value)


@pytest.mark.parametrize("override,named", [
    ("method.lr=nan", "method.lr=nan (accepted: a finite number > 0)"),
    ("method.lr=-1", "method.lr=-1 (accepted: a finite number > 0)"),
    ("method.lr=abc", "method.lr='abc' (accepted: a finite number > 0)"),
    ("method.head_lr=0", "method.head_lr=0"),
    ("method.weight_decay=-0.1", "method.weight_decay=-0.1"),
    ("method.n=0", "method.n=0 (accepted: an integer >= 1)"),
    ("method.scaling=0", "method.scaling=0"),
    ("method.fc=-5", "method.fc=-5"),
    ("trainer.epochs=0", "trainer.epochs=0 (accepted: a finite number > 0)"),
    ("trainer.max_length=0", "trainer.max_length=0"),
    ("trainer.grad_accum=0", "trainer.grad_accum=0"),
    ("trainer.batch_size=0", "trainer.batch_size=0"),
    ("trainer.eval_batch_size=-2", "trainer.eval_batch_size=-2"),
    ("trainer.max_train_samples=0", "trainer.max_train_samples=0 (accepted: null or an integer >= 1)"),
    ("trainer.max_train_samples=-1", "trainer.max_train_samples=-1"),
    ("trainer.max_eval_samples=0", "trainer.max_eval_samples=0"),
    ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio=1.5 (accepted: a number in [0, 1))"),
    ("trainer.max_steps=0", "trainer.max_steps=0"),
    ("trainer.max_grad_norm=0", "trainer.max_grad_norm=0"),
    ("seed=abc", "seed='abc' (accepted: an integer >= 0)"),
    ("seed=-1", "seed=-1"),
    ("seed=1.5", "seed=1.5"),
])
def test_nonsense_settings_stop_before_anything_loads(override, named):
    with pytest.raises(ValueError, match="invalid settings, nothing was loaded or trained") as e:
        make_run(override)
    assert named in str(e.value)


@pytest.mark.parametrize("method,override,named", [
    ("lora", "method.r=0", "method.r=0"), ("lora", "method.dropout=1", "method.dropout=1"),
    ("lora", "method.alpha=-8", "method.alpha=-8")])
def test_nonsense_method_settings(method, override, named):
    with pytest.raises(ValueError, match="invalid settings") as e:
        make_run(f"method={method}", override)
    assert named in str(e.value)


def test_a_setting_the_method_does_not_take_is_named(fast_config):
    from experiments.runner import run

    cfg = fast_config("model=tiny_bert", "task=rte", "method=lora", "+method.basis=random")
    with pytest.raises(ValueError, match=r"method=lora \(LoRA\) takes no 'basis': it takes name, lr, head_lr, r, alpha"):
        run(cfg)


@pytest.mark.parametrize("overrides,message", [
    (("task=rte", "model=tiny_vit"), r"model tiny_vit \(ViT\) has no SequenceClassification form, which task rte"),
    (("task=fashion_mnist", "model=tiny_bert"), r"model tiny_bert \(Bert\) has no ImageClassification form"),
    (("task=image_folder", "model=tiny_bert", "data.image_dir=/nowhere"), r"has no ImageClassification form"),
    (("task=e2e", "model=tiny_bert"), r"model tiny_bert \(Bert\) is an encoder; task e2e generates text"),
    (("task=alpaca", "model=tiny_bert"), r"is an encoder; task alpaca generates text"),
])
def test_a_model_of_the_wrong_kind_is_refused_before_anything_loads(fast_config, tmp_path, overrides, message):
    from experiments import runner

    def loaded(*args, **kwargs):
        raise AssertionError("data or weights were loaded")

    cfg = fast_config(*overrides)
    family = runner.build_family(cfg)
    family.load_data = family.load_model = loaded
    original = runner.build_family
    runner.build_family = lambda cfg: family
    try:
        with pytest.raises(ValueError, match=message):
            runner.run(cfg)
    finally:
        runner.build_family = original
    assert not any((tmp_path / "results").rglob("*.lock"))
