"""The plan interface: a plan missing a method fails when built; the flop counts decide the layer's `auto` path and
serving's `auto` strategy, checked on both sides of each threshold."""
import math

import pytest
import torch
from torch import nn

import fourierft as ff
from fourierft.plan import Plan
from fourierft.spectral import SpectralPlan

from helpers import make_layer


def test_a_plan_missing_a_method_fails_when_built():
    class Incomplete(Plan):
        def delta_weight(self, coef, scaling):
            return coef

    with pytest.raises(TypeError, match="abstract method"):
        Incomplete()


def test_the_layers_auto_path_follows_the_flop_counts_on_both_sides_of_the_threshold():
    d_out, d_in, n = 48, 40, 30
    layer = ff.FourierFTLayer(torch.nn.Linear(d_in, d_out), ff.sample_entries(d_out, d_in, n, seed=0), scaling=1.0)
    # the design's counts (docs/design/fast-path.md): two irfft2 of dW per step against two transforms per token
    merged = 2 * d_out * d_in * math.log2(d_out * d_in)
    per_token = 2 * (d_out * math.log2(d_out) + d_in * math.log2(d_in)) + 4 * n
    threshold = merged / per_token
    below, above = math.floor(threshold), math.ceil(threshold) + 1
    assert below >= 1 and layer.plan().costs(below)[1] < merged < layer.plan().costs(above)[1]
    assert layer.choose_path(torch.randn(below, d_in)) == "spectral"
    assert layer.choose_path(torch.randn(above, d_in)) == "merged"


def test_servings_auto_strategy_takes_each_branch(tmp_path, monkeypatch):
    from helpers import build

    base = build("llama")
    folders = {}
    for i, name in enumerate(["a", "b", "c"]):
        model = ff.apply_fourierft(build("llama"), ff.FourierFTConfig(n=10, scaling=40.0))
        with torch.no_grad():
            for _, layer in ff.fourierft_layers(model):
                layer.coefficients.normal_(generator=torch.Generator().manual_seed(i))
        ff.save_adapter(model, tmp_path / name)
        folders[name] = tmp_path / name
    serve = ff.MixedAdapters(base, folders)
    calls = []
    for method in ("apply", "delta_weight"):
        original = getattr(SpectralPlan, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            calls.append(_method)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(SpectralPlan, method, spy)

    def branch(names, seq):
        calls.clear()
        serve(torch.randint(1, 64, (len(names), seq)), adapter_names=names)
        return set(calls)

    # one adapter over a long sequence: building its dW once is cheaper than two transforms per token
    plan = serve.groups[0].plans["model.layers.0.self_attn.q_proj"]
    merged, spectral = plan.costs(60)
    assert merged <= spectral
    assert branch(["a"], 60) == {"delta_weight"}
    # three adapters, one token each (generation): the shared transforms
    merged, spectral = plan.costs(3)
    assert 3 * merged > spectral
    assert branch(["a", "b", "c"], 1) == {"apply"}


def test_auto_path_picks_spectral_for_few_tokens():
    layer = make_layer("linear", 64, 64, 10, path="auto")
    assert layer.choose_path(torch.zeros(1, 64)) == "spectral"
    assert layer.choose_path(torch.zeros(4, 128, 64)) == "merged"
    wide = make_layer("linear", 1024, 1024, 10, path="auto")
    assert wide.choose_path(torch.zeros(2, 64, 1024)) == "spectral"
    assert wide.choose_path(torch.zeros(32, 512, 1024)) == "merged"
    ff.set_path(nn.Sequential(layer), "dense")
    assert layer.choose_path(torch.zeros(1, 64)) == "dense"
