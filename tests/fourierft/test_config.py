"""FourierFTConfig (fourierft/config.py): every bad field is refused with its name and what is accepted."""

import pytest

import fourierft as ff

from helpers import build


@pytest.mark.parametrize("kwargs,match", [
    ({"target_modules": "(["}, r"target_modules='\(\[' is a string, so a regular expression.*does not compile"),
    ({"target_modules": 5}, "target_modules must be a list of module-name suffixes"),
    ({"modules_to_save": [1]}, r"modules_to_save must hold module names"),
    ({"entry_seed": "x"}, "entry_seed must be an integer"),
    ({"scaling": float("nan")}, "scaling must be a finite non-zero number, got nan"),
    ({"scaling": 0.0}, r"scaling must be a finite non-zero number, got 0.0 \(at 0, dW is zero"),
    ({"scaling": True}, "scaling must be a finite non-zero number, got True"),
    ({"fused": {"c_attn": []}}, r"fused\['c_attn'\] must list distinct part names"),
    ({"fused": {"c_attn": ["q", "k"]}, "fused_targets": ["v"]}, r"fused_targets=\['v'\]: \['v'\] is not a part of fused"),
])
def test_bad_config_fields_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ff.FourierFTConfig(**kwargs)


def test_modules_to_save_as_one_string_is_one_module():
    config = ff.FourierFTConfig(n=4, modules_to_save="classifier")
    assert config.modules_to_save == ["classifier"]
    model = ff.apply_fourierft(build("bert"), config)
    assert all(p.requires_grad for p in model.classifier.parameters())


@pytest.mark.parametrize("kwargs,match", [
    ({"n": 0}, "n must be a positive integer"), ({"n": 2.5}, "n must be a positive integer"),
    ({"fc": -1.0}, "fc must be None"), ({"fc": float("nan")}, "fc must be None"),
    ({"bandwidth": 0}, "bandwidth must be"), ({"init": "kaiming"}, "init='kaiming' is not one of"),
    ({"bias": "lora_only"}, "bias='lora_only'"), ({"path": "fast"}, "path='fast'"),
    ({"n_pattern": {"q": -1}}, r"n_pattern\['q'\]"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ff.FourierFTConfig(**kwargs)
