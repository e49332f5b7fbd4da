"""Which modules an adapter touches (fourierft/targets.py): detected families, patterns that match nothing, module
types that cannot be adapted, each named with what is accepted."""

import pytest
from torch import nn

import fourierft as ff

from helpers import build


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)


def test_n_pattern_key_matching_nothing():
    with pytest.raises(ValueError, match=r"n_pattern keys \['layer.7.value'\] match none of the adapted modules"):
        ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4, n_pattern={"layer.7.value": 8}))


def test_mpnet_is_detected_and_nothing_matched_is_grouped():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    def mpnet():
        return MPNetForSequenceClassification(MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                          num_attention_heads=2, intermediate_size=20))
    model = ff.apply_fourierft(mpnet(), ff.FourierFTConfig(n=4))
    assert [n.rpartition(".")[2] for n, _ in ff.fourierft_layers(model)] == ["q", "v"] * 3
    with pytest.raises(ValueError) as e:
        ff.apply_fourierft(mpnet(), ff.FourierFTConfig(n=4, target_modules=["nope"]))
    assert "mpnet.encoder.layer.*.attention.attn.q (3)" in str(e.value) and "layer.0" not in str(e.value)


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


def test_help_names_every_detected_family():
    from fourierft.targets import DEFAULT_TARGETS

    text = ff.FourierFTConfig.help()
    line = next(line for line in text.splitlines() if line.startswith("target_modules"))
    for family in DEFAULT_TARGETS:
        assert "/".join(family) in line, family
