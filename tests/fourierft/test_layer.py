"""The core against independent references: the dense formula in float64 with autograd, and PEFT."""
import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import fourierft as ff
from fourierft.layer import FourierFTLayer

from helpers import FAMILIES, build, inputs, reference_delta, rel_err

PATHS = ["dense", "merged", "spectral"]


def make_layer(kind, d_out, d_in, n, dtype=torch.float32, path="merged", entries=None, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out) if kind == "linear" else Conv1D(d_out, d_in)
    if kind == "conv1d":
        nn.init.normal_(base.weight)
        nn.init.normal_(base.bias)
    base = base.to(dtype)
    for p in base.parameters():
        p.requires_grad_(False)
    if entries is None:
        entries = ff.sample_entries(d_out, d_in, n, seed=seed)
    return FourierFTLayer(base, entries, scaling=7.0, path=path)


def check_layer_against_reference(layer, dtype, tol):
    x = torch.randn(3, 5, layer.d_in, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    coef_ref = layer.coefficients.detach().double().clone().requires_grad_(True)
    w = layer.weight_view().double()
    b = layer.base_layer.bias.double()
    delta = reference_delta(layer.entries, coef_ref, layer.d_out, layer.d_in, layer.scaling)
    y_ref = x_ref @ (w + delta).T + b
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()

    x_ours = x.to(dtype).requires_grad_(True)
    y = layer(x_ours)
    assert y.dtype == dtype
    (y * g.to(dtype)).sum().backward()
    assert rel_err(y, y_ref) < tol
    assert rel_err(x_ours.grad, x_ref.grad) < tol
    assert rel_err(layer.coefficients.grad, coef_ref.grad) < tol


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("d_out,d_in,n", [(16, 16, 40), (12, 20, 50), (21, 9, 30), (7, 13, 91), (10, 10, 100)])
def test_layer_matches_dense_formula(path, kind, d_out, d_in, n):
    layer = make_layer(kind, d_out, d_in, n, path=path)
    check_layer_against_reference(layer, torch.float32, 1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("d_out,d_in", [(8, 6), (9, 7), (8, 7)])
def test_dc_and_nyquist_entries(path, d_out, d_in):
    # DC, Nyquist in each axis (when even), the corner and the mirror of each
    pos = {(0, 0), (d_out // 2, 0), (0, d_in // 2), (d_out // 2, d_in // 2), (d_out - 1, d_in - 1), (1, d_in - 1)}
    entries = torch.tensor(sorted(pos)).T
    layer = make_layer("linear", d_out, d_in, 0, path=path, entries=entries)
    check_layer_against_reference(layer, torch.float32, 1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_half_precision_bases(path, dtype, tol, kind):
    layer = make_layer(kind, 24, 16, 60, dtype=dtype, path=path)
    assert layer.coefficients.dtype == torch.float32
    check_layer_against_reference(layer, dtype, tol)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("path", PATHS)
def test_model_matches_peft(family, path):
    from peft import FourierFTConfig as PeftConfig
    from peft import get_peft_model

    base = build(family)
    ours = ff.apply_fourierft(copy.deepcopy(base), ff.FourierFTConfig(n=30, scaling=20.0, entry_seed=5, path=path))
    targets = sorted({name.rpartition(".")[2] for name, _ in ff.fourierft_layers(ours)})
    peft_model = get_peft_model(copy.deepcopy(base), PeftConfig(n_frequency=30, scaling=20.0, random_loc_seed=5,
                                                               target_modules=targets))
    peft_layers = {n[len("base_model.model."):]: m for n, m in peft_model.named_modules() if hasattr(m, "fourierft_spectrum")}
    assert set(peft_layers) == {n for n, _ in ff.fourierft_layers(ours)}
    for name, layer in ff.fourierft_layers(ours):
        assert torch.equal(peft_layers[name].indices["default"], layer.entries)
        with torch.no_grad():
            peft_layers[name].fourierft_spectrum["default"].copy_(layer.coefficients)
    batch = inputs(family)
    out_ours, out_peft = ours(**batch).logits, peft_model(**batch).logits
    assert rel_err(out_ours, out_peft) < 1e-5
    g = torch.randn_like(out_ours)
    (out_ours * g).sum().backward()
    (out_peft * g).sum().backward()
    for name, layer in ff.fourierft_layers(ours):
        assert rel_err(layer.coefficients.grad, peft_layers[name].fourierft_spectrum["default"].grad) < 1e-5


def test_non_square_gqa_and_mlp_layers():
    model = ff.apply_fourierft(build("llama"), ff.FourierFTConfig(
        n=50, target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]))
    shapes = {name.rpartition(".")[2]: (l.d_out, l.d_in) for name, l in ff.fourierft_layers(model)}
    assert shapes == {"q_proj": (24, 24), "k_proj": (12, 24), "v_proj": (12, 24), "up_proj": (44, 24), "down_proj": (24, 44)}
    layers = dict(ff.fourierft_layers(model))
    # same shape and n: the same entries; other shapes: their own
    assert torch.equal(layers["model.layers.0.self_attn.k_proj"].entries, layers["model.layers.1.self_attn.v_proj"].entries)
    model(**inputs("llama")).logits.sum().backward()
    assert all(l.coefficients.grad is not None for l in layers.values())


def test_freezing_modules_to_save_and_bias():
    model = ff.apply_fourierft(build("roberta"), ff.FourierFTConfig(n=10, modules_to_save=["classifier"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith("coefficients") or n.startswith("classifier.") for n in trainable)
    assert {"classifier.dense.weight", "classifier.out_proj.bias"} <= trainable
    assert ff.trainable_parameters(model)[0] == 4 * 10 + sum(p.numel() for p in model.classifier.parameters())
    assert ff.summary(model).startswith("trainable params: ")
    biased = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=10, bias="all"))
    assert all(p.requires_grad for n, p in biased.named_parameters() if n.endswith("bias"))


def test_init_zeros_leaves_model_unchanged_and_normal_does_not():
    base = build("bert")
    batch = inputs("bert")
    ref = base(**batch).logits
    zeros = ff.apply_fourierft(copy.deepcopy(base), ff.FourierFTConfig(n=10, init="zeros"))
    assert torch.equal(zeros(**batch).logits, ref)
    normal = ff.apply_fourierft(copy.deepcopy(base), ff.FourierFTConfig(n=10, scaling=300.0))
    assert not torch.allclose(normal(**batch).logits, ref)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_merge_unmerge_unload(family):
    model = ff.apply_fourierft(build(family), ff.FourierFTConfig(n=25, scaling=50.0))
    batch = inputs(family)
    weights = {n: l.base_layer.weight.clone() for n, l in ff.fourierft_layers(model)}
    with torch.no_grad():
        ref = model(**batch).logits
        ff.merge(model)
        assert rel_err(model(**batch).logits, ref) < 1e-5
        ff.unmerge(model)
        for n, l in ff.fourierft_layers(model):
            assert torch.allclose(l.base_layer.weight, weights[n], atol=1e-6)
        plain = ff.unload(model)
        assert not any(isinstance(m, FourierFTLayer) for m in plain.modules())
        assert rel_err(plain(**batch).logits, ref) < 1e-5


def test_auto_path_picks_spectral_for_few_tokens():
    layer = make_layer("linear", 64, 64, 10, path="auto")
    assert layer.choose_path(torch.zeros(1, 64)) == "spectral"
    assert layer.choose_path(torch.zeros(4, 128, 64)) == "merged"
    wide = make_layer("linear", 1024, 1024, 10, path="auto")
    assert wide.choose_path(torch.zeros(2, 64, 1024)) == "spectral"
    assert wide.choose_path(torch.zeros(32, 512, 1024)) == "merged"
    ff.set_path(nn.Sequential(layer), "dense")
    assert layer.choose_path(torch.zeros(1, 64)) == "dense"


@pytest.mark.parametrize("path", PATHS)
def test_autocast_bf16_training_step(path):
    """Mixed precision as Trainer runs it: fp32 base under autocast; gradients stay close to the fp32 reference."""
    layer = make_layer("linear", 32, 24, 80, path=path)
    x = torch.randn(4, 24, requires_grad=True)
    ref_layer = make_layer("linear", 32, 24, 80, path="dense")
    x_ref = x.detach().clone().requires_grad_(True)
    ref_layer(x_ref).square().sum().backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert layer.coefficients.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    assert rel_err(layer.coefficients.grad, ref_layer.coefficients.grad) < 5e-2
    assert rel_err(x.grad, x_ref.grad) < 5e-2
