"""The core against independent references: the dense formula in float64 with autograd, and PEFT."""

import pytest
import torch
from torch import nn

import fourierft as ff

from helpers import PATHS, build, check_layer_against_reference, inputs, make_layer, rel_err


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
@pytest.mark.parametrize("d_out,d_in,n", [(16, 16, 40), (12, 20, 50), (21, 9, 30), (7, 13, 91), (10, 10, 100)])
def test_layer_matches_dense_formula(path, kind, d_out, d_in, n):
    layer = make_layer(kind, d_out, d_in, n, path=path)
    check_layer_against_reference(layer, torch.float32, 1e-5)


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


def test_merged_path_gives_the_frozen_weight_its_gradient_when_trainable():
    grads = {}
    for path in ("dense", "merged", "spectral"):
        torch.manual_seed(0)
        base = nn.Linear(6, 5)
        layer = ff.FourierFTLayer(base, ff.sample_entries(5, 6, 7, seed=1), scaling=3.0, path=path)
        base.weight.requires_grad_(True)
        layer(torch.randn(4, 6, generator=torch.Generator().manual_seed(2))).pow(2).sum().backward()
        grads[path] = base.weight.grad
    assert grads["merged"] is not None
    assert torch.allclose(grads["merged"], grads["dense"], atol=1e-5)
    assert torch.allclose(grads["spectral"], grads["dense"], atol=1e-5)


def test_model_to_bf16_keeps_coefficients_float32():
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4)).to(torch.bfloat16)
    for _, layer in ff.fourierft_layers(model):
        assert layer.coefficients.dtype == torch.float32 and layer.base_layer.weight.dtype == torch.bfloat16
