"""Fused projections (GPT-2's c_attn, timm's qkv): q and v slices as independent spectra, exact against the dense
float64 formula written per slice, the k slice untouched."""
import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import fourierft as ff
from fourierft.layer import FourierFTLayer

from helpers import PATHS, assert_round_trip, build, inputs, reference_delta, rel_err

QKV = {"c_attn": ["q", "k", "v"], "qkv": ["q", "k", "v"]}


def fused_layer(kind, d, n, path):
    torch.manual_seed(0)
    base = Conv1D(3 * d, d) if kind == "conv1d" else nn.Linear(d, 3 * d)
    nn.init.normal_(base.weight)
    nn.init.normal_(base.bias)
    base.requires_grad_(False)
    holder = nn.Module()
    holder.add_module("c_attn" if kind == "conv1d" else "qkv", base)
    config = ff.FourierFTConfig(n=n, scaling=9.0, fused=QKV, path=path, target_modules=["c_attn", "qkv"])
    ff.apply_fourierft(holder, config)
    return next(m for m in holder.modules() if isinstance(m, FourierFTLayer))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind,d,n", [("conv1d", 8, 20), ("linear", 9, 30), ("conv1d", 6, 36)])
def test_q_and_v_slices_exact_k_untouched(kind, d, n, path):
    layer = fused_layer(kind, d, n, path)
    assert layer.blocks == [(0, d), (2 * d, d)] and layer.n == 2 * n
    coef = layer.coefficients.detach().double().clone().requires_grad_(True)
    entries_q, entries_v = layer.entries[:, :n], layer.entries[:, n:]
    # the reference: each slice its own d x d spectrum (normalised by d*d), k rows zero
    delta = torch.cat([reference_delta(entries_q, coef[:n], d, d, layer.scaling), torch.zeros(d, d, dtype=torch.float64),
                       reference_delta(entries_v, coef[n:], d, d, layer.scaling)])
    w, b = layer.weight_view().double(), layer.base_layer.bias.double()
    x = torch.randn(2, 5, d, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    y_ref = x_ref @ (w + delta).T + b
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()
    x_ours = x.float().requires_grad_(True)
    y = layer(x_ours)
    (y * g.float()).sum().backward()
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(x_ours.grad, x_ref.grad) < 1e-5
    assert rel_err(layer.coefficients.grad, coef.grad) < 1e-5
    with torch.no_grad():  # the k slice of dW is exactly zero, q and v are not
        dw = layer.delta_weight()
    assert torch.count_nonzero(dw[d:2 * d]) == 0 and dw[:d].abs().sum() > 0 and dw[2 * d:].abs().sum() > 0
    # PEFT's entry rule for each slice's own d x d shape
    assert torch.equal(entries_q, ff.sample_entries(d, d, n, seed=2024)) and torch.equal(entries_q, entries_v)


def gpt2_fused(n=10):
    return ff.apply_fourierft(build("gpt2"), ff.FourierFTConfig(n=n, fused={"c_attn": ["q", "k", "v"]}))


def test_gpt2_counts_two_spectra_per_layer_and_trains_only_them():
    model = gpt2_fused()
    assert ff.trainable_parameters(model)[0] == 2 * 2 * 10  # 2 layers x (q, v) x n
    model(**inputs("gpt2")).logits.sum().backward()
    for _, layer in ff.fourierft_layers(model):
        assert layer.coefficients.grad is not None and layer.base_layer.weight.grad is None


@pytest.mark.parametrize("n_layers,d,expected", [(24, 1024, 48_000), (36, 1280, 72_000)])
def test_paper_gpt2_counts(n_layers, d, expected):
    """GPT-2 M / L, q and v of c_attn, n=1000: the paper's 48K / 72K (a meta-device model: shapes, no weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_embd=d, n_layer=n_layers, n_head=16, vocab_size=8, n_positions=8))
    ff.apply_fourierft(model, ff.FourierFTConfig(n=1000, target_modules=["c_attn"], fused={"c_attn": ["q", "k", "v"]}))
    assert ff.trainable_parameters(model)[0] == expected


def test_fused_adapter_round_trips_and_peft_export_is_refused(tmp_path):
    model = gpt2_fused()
    loaded = assert_round_trip(model, "gpt2", tmp_path / "a")
    assert [layer.blocks for _, layer in ff.fourierft_layers(loaded)] == [[(0, 18), (36, 18)]] * 2
    with pytest.raises(ValueError, match="PEFT has no layout for separate spectra over parts of a fused projection"):
        ff.export_peft(model, tmp_path / "peft")


def test_bad_fused_settings_are_named():
    with pytest.raises(ValueError, match=r"fused_targets=\['x'\]: \['x'\] is not a part of fused\['c_attn'\]"):
        ff.FourierFTConfig(fused={"c_attn": ["q", "k", "v"]}, fused_targets=["x"])
    with pytest.raises(ValueError, match=r"fused_targets=\['q', 'z'\]: \['z'\] is not a part"):  # one good letter
        ff.FourierFTConfig(fused={"c_attn": ["q", "k", "v"]}, fused_targets=["q", "z"])
    with pytest.raises(ValueError, match=r"fused keys \['c_atn'\] match none of the adapted modules"):
        ff.apply_fourierft(build("gpt2"), ff.FourierFTConfig(n=5, fused={"c_atn": ["q", "k", "v"]}))
    with pytest.raises(ValueError, match=r"parts \['a', 'q', 'c', 'v'\], but its 54 output rows hold 3 parts of 18"):
        ff.apply_fourierft(build("gpt2"), ff.FourierFTConfig(n=5, fused={"c_attn": ["a", "q", "c", "v"]}))
    # a two-way split of GPT-2's three-way c_attn would adapt q plus half of k
    with pytest.raises(ValueError, match=r"\['q', 'v'\], but its 54 output rows hold 3 parts of 18 rows.*\[q, k, v\]"):
        ff.apply_fourierft(build("gpt2"), ff.FourierFTConfig(n=5, fused={"c_attn": ["q", "v"]}))
    # BERT's query is not fused: splitting it into row blocks is refused
    with pytest.raises(ValueError, match=r"self.query'.*it is not a fused projection; remove it from config.fused"):
        ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=5, fused={"query": ["q", "v"]}))
