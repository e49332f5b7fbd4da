"""Library errors that name what was wrong and what is accepted: targets, module types, configs, merged saves."""
import pytest
import torch
from torch import nn

import fourierft as ff

from helpers import build


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)


def test_no_detected_targets_lists_linear_modules():
    with pytest.raises(ValueError, match=r"no query/value projection.*encoder, head"):
        ff.apply_fourierft(Plain(), ff.FourierFTConfig(n=4))


def test_target_matching_nothing():
    with pytest.raises(ValueError, match=r"target_modules=\['nope'\] matches no module"):
        ff.apply_fourierft(Plain(), ff.FourierFTConfig(n=4, target_modules=["nope"]))


def test_unsupported_module_type_is_named():
    with pytest.raises(TypeError, match="module 'norm' is a LayerNorm"):
        ff.apply_fourierft(Plain(), ff.FourierFTConfig(n=4, target_modules=["norm"]))


def test_regex_targets_and_n_too_large():
    model = ff.apply_fourierft(Plain(), ff.FourierFTConfig(n=4, target_modules=r"encoder|head"))
    assert [n for n, _ in ff.fourierft_layers(model)] == ["encoder", "head"]
    with pytest.raises(ValueError, match="n=17 exceeds the 2x8=16 spectrum of 'head'"):
        ff.apply_fourierft(Plain(), ff.FourierFTConfig(n=17, target_modules=["head"]))


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


def test_double_apply_and_missing_modules_to_save():
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4))
    with pytest.raises(ValueError, match="already has FourierFT layers"):
        ff.apply_fourierft(model, ff.FourierFTConfig(n=4))
    with pytest.raises(ValueError, match="modules_to_save entry 'score' matches no module"):
        ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4, modules_to_save=["score"]))


def test_save_requires_unmerged(tmp_path):
    model = ff.merge(ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4)))
    with pytest.raises(ValueError, match="unmerge"):
        ff.save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="apply_fourierft"):
        ff.save_adapter(torch.nn.Linear(2, 2), tmp_path)


def test_training_a_merged_model_is_refused_with_the_fix():
    from helpers import inputs

    model = ff.merge(ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4)))
    model.train()
    with pytest.raises(RuntimeError, match=r"merged .* call fourierft.unmerge\(model\) before training"):
        model(**inputs("bert")).logits.sum().backward()
    model.eval()
    with torch.no_grad():
        model(**inputs("bert"))  # inference on a merged model is what merging is for
    model.train()
    with torch.no_grad():
        model(**inputs("bert"))  # so is a no-grad forward in train mode
    ff.unmerge(model)
    model(**inputs("bert")).logits.sum().backward()  # unmerged, it trains


def test_help_names_every_detected_family():
    from fourierft.targets import DEFAULT_TARGETS

    text = ff.FourierFTConfig.help()
    line = next(line for line in text.splitlines() if line.startswith("target_modules"))
    for family in DEFAULT_TARGETS:
        assert "/".join(family) in line, family
