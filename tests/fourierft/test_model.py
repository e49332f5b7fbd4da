"""Putting FourierFT into a model and taking it out (fourierft/model.py): the model equals PEFT's, merge / unmerge /
unload are exact, freezing, init, and what a merged or doubly applied model refuses."""

import copy

import pytest
import torch
from torch import nn

import fourierft as ff
from fourierft.layer import FourierFTLayer

from helpers import FAMILIES, PATHS, build, inputs, logits, rel_err, trained_bert


def test_loading_into_a_wrapped_or_merged_model_applies_the_files_settings(tmp_path):
    saved = trained_bert(scaling=50.0, modules_to_save=["classifier"])
    with torch.no_grad():
        saved.classifier.weight.add_(1.0)
    ff.save_adapter(saved, tmp_path)
    expected = logits(saved)
    other = trained_bert(scaling=7.0)  # its own alpha, no modules_to_save
    ff.load_adapter(other, tmp_path)
    assert torch.allclose(logits(other), expected, atol=1e-6)
    assert other.fourierft_config.scaling == 50.0 and all(p.requires_grad for p in other.classifier.parameters())
    merged = ff.merge(trained_bert(scaling=7.0))
    ff.load_adapter(merged, tmp_path)
    assert torch.allclose(logits(merged), expected, atol=1e-5)
    assert not any(layer.merged for _, layer in ff.fourierft_layers(merged))


def test_merge_unmerge_is_exact_in_float32():
    model = trained_bert()
    weights = {n: layer.base_layer.weight.clone() for n, layer in ff.fourierft_layers(model)}
    ff.unmerge(ff.merge(model))
    for name, layer in ff.fourierft_layers(model):
        assert torch.allclose(layer.base_layer.weight, weights[name], atol=1e-6)


def test_quantized_base_layers_refuse_merging():
    class Packed(nn.Linear):  # as bitsandbytes' Linear4bit: an nn.Linear whose weight is packed integers
        def __init__(self):
            super().__init__(8, 8)
            self.weight = nn.Parameter(torch.zeros(32, 1, dtype=torch.uint8), requires_grad=False)

    with pytest.raises(ValueError, match="path='merged'.*quantized base layer \\(Packed\\)"):
        ff.apply_fourierft(nn.Sequential(Packed()), ff.FourierFTConfig(n=4, target_modules=["0"], path="merged"))
    model = ff.apply_fourierft(nn.Sequential(Packed()), ff.FourierFTConfig(n=4, target_modules=["0"]))
    assert model[0].quantized  # adapted beside the packed weight (tests/test_quantized.py trains such a base)
    with pytest.raises(TypeError, match="base layer is quantized \\(Packed\\): dW cannot be added to packed"):
        ff.merge(model)
    with pytest.raises(TypeError, match="cannot dequantize a Packed weight of dtype torch.uint8"):
        ff.merge(model, dequantize=True)


def test_coefficients_edited_while_merged_are_refused_and_unmerge_restores_the_base_exactly():
    model = trained_bert()
    weights = {n: layer.base_layer.weight.clone() for n, layer in ff.fourierft_layers(model)}
    ff.merge(model).eval()
    logits(model)  # merged, unedited: serves
    layer = next(layer for _, layer in ff.fourierft_layers(model))
    with torch.no_grad():
        layer.coefficients.add_(1.0)
    with pytest.raises(RuntimeError, match=r"changed after merge\(\).*call fourierft.unmerge\(model\)"):
        logits(model)
    ff.unmerge(model)
    for name, other in ff.fourierft_layers(model):
        assert torch.allclose(other.base_layer.weight, weights[name], atol=1e-6, rtol=0), name
    merged_again = logits(ff.merge(model))
    assert torch.allclose(merged_again, logits(ff.unmerge(model)), atol=1e-5)  # the new coefficients, merged


def test_a_merged_model_cast_to_bf16_still_serves():
    model = ff.merge(trained_bert()).eval()
    expected = {n: layer.coefficients.detach().clone() for n, layer in ff.fourierft_layers(model)}
    model.to(torch.bfloat16)
    for name, layer in ff.fourierft_layers(model):
        assert torch.equal(layer.coefficients, expected[name])  # float32, and the values themselves
    with torch.no_grad():
        model(**{k: v for k, v in inputs("bert").items()})


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
