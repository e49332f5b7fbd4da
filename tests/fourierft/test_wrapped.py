"""FourierFT over a bitsandbytes 4-bit (NF4) base, on bitsandbytes' CPU backend: exact against the dense float64
formula over the dequantized weight, the packed weight never touched, merge refused (or dequantized when asked),
adapters save and load."""
import pytest
import torch

import fourierft as ff
from fourierft.wrapped import dequantized_weight

from helpers import load_4bit, reference_delta, rel_err

bnb = pytest.importorskip("bitsandbytes")


CONFIG = ff.FourierFTConfig(n=40, scaling=300.0, target_modules=["q_proj", "v_proj"])


def test_layers_over_4bit_weights_are_exact_and_never_touch_them(base_folder):
    model, _ = load_4bit(base_folder)
    ff.apply_fourierft(model, CONFIG)
    layers = dict(ff.fourierft_layers(model))
    assert len(layers) == 4 and all(layer.quantized for layer in layers.values())
    for path in ("auto", "dense", "spectral"):
        ff.set_path(model, path)
        for layer in layers.values():
            # the base's share is the 4-bit layer's own output (bitsandbytes' CPU kernel differs from x W_deq^T by
            # ~3e-3 relative); FourierFT's share is exact against the dense float64 formula
            x = torch.randn(64, 32, layer.d_in)  # enough tokens that "auto" would merge over a float weight
            delta = reference_delta(layer.entries, layer.coefficients.detach().double(), layer.d_out, layer.d_in,
                                    layer.scaling)
            with torch.no_grad():
                assert rel_err(layer(x) - layer.base_layer(x), x.double() @ delta.T) < 1e-5, path
    layer = layers["model.layers.0.self_attn.q_proj"]
    ff.set_path(model, "auto")
    assert layer.choose_path(torch.randn(64, 32, 64)) == "dense"  # never "merged" over packed weights
    assert layer.choose_path(torch.randn(1, 1, 64)) == "spectral"
    with pytest.raises(ValueError, match="path='merged'.*quantized"):
        ff.set_path(model, "merged")


def test_merge_into_4bit_is_refused_unless_dequantized_and_adapters_round_trip(base_folder, tmp_path):
    model, _ = load_4bit(base_folder)
    ff.apply_fourierft(model, CONFIG)
    ids = torch.randint(0, 50257, (2, 7))
    with torch.no_grad():
        expected = model(ids).logits
    with pytest.raises(TypeError, match="quantized.*merge\\(dequantize=True\\)"):
        ff.merge(model)
    ff.save_adapter(model, tmp_path / "adapter")
    fresh, _ = load_4bit(base_folder)
    ff.load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, expected, atol=1e-5)
    layer = dict(ff.fourierft_layers(model))["model.layers.0.self_attn.q_proj"]
    x = torch.randn(4, 64)
    with torch.no_grad():
        w_plus_dw = dequantized_weight(layer.base_layer) + layer.delta_weight()
    ff.merge(model, dequantize=True)
    assert isinstance(layer.base_layer, torch.nn.Linear) and not layer.quantized and layer.merged
    assert torch.equal(layer.base_layer.weight, w_plus_dw)  # dequantize(W) + dW, exactly
    with torch.no_grad():
        assert torch.allclose(layer(x), x @ w_plus_dw.T)


def test_merged_path_is_refused_over_a_4bit_base(base_folder):
    model, _ = load_4bit(base_folder)
    with pytest.raises(ValueError, match="path='merged'.*quantized base layer \\(Linear4bit\\)"):
        ff.apply_fourierft(model, ff.FourierFTConfig(n=10, target_modules=["q_proj"], path="merged"))


def test_parameter_counts_are_peft_counts_on_a_4bit_base(base_folder):
    from peft import PeftModel

    model, _ = load_4bit(base_folder)
    ff.apply_fourierft(model, CONFIG)
    assert any(type(p).__name__ == "Params4bit" for p in model.parameters())
    # PEFT's own counter, run on this very model (it reads only named_parameters)
    assert ff.trainable_parameters(model) == PeftModel.get_nb_trainable_parameters(model)
    assert ff.trainable_parameters(model)[1] > sum(p.numel() for p in model.parameters())  # not the packed storage


def _as_after_a_forward(layer) -> None:
    """The state bitsandbytes' CPU backend leaves a 4-bit weight in after its first inference forward on a CPU with
    AVX512-BF16 (its own conversion, the call Linear4bit.forward makes); a CPU without it keeps the canonical layout,
    and the conversion is made here so that the repacked branch is what the test checks on every machine."""
    import bitsandbytes.functional as bnbf

    weight = layer.weight
    if not getattr(weight.quant_state, "packing_format_for_cpu", False):
        weight.data, weight.quant_state = bnbf._convert_weight_packed_for_cpu(weight.data, weight.quant_state)
    assert weight.quant_state.packing_format_for_cpu


def _weight_the_kernel_uses(layer) -> torch.Tensor:
    """float64 weight from the canonical 4-bit codes and the absmax rounded to bf16 (what the repacked CPU kernel
    multiplies by), written from bitsandbytes' public dequantize of the state before any forward."""
    import copy

    import bitsandbytes.functional as bnbf

    state = copy.deepcopy(layer.weight.quant_state)
    absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset if state.nested else state.absmax
    plain = bnbf.QuantState(absmax=absmax.float().to(torch.bfloat16).float(), shape=state.shape, code=state.code,
                            blocksize=state.blocksize, quant_type=state.quant_type, dtype=torch.float32)
    return bnbf.dequantize_4bit(layer.weight.data.clone(), plain).double()


@pytest.mark.parametrize("init", ["zeros", "normal"])
def test_merge_after_forwards_matches_the_dense_formula(base_folder, init):
    # down_proj's rows span two 64-wide blocks: a transposed absmax would scale them by the wrong block
    model, _ = load_4bit(base_folder)
    ff.apply_fourierft(model, ff.FourierFTConfig(n=40, scaling=300.0, init=init,
                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    layers = dict(ff.fourierft_layers(model))
    assert any(layer.d_in > layer.base_layer.weight.quant_state.blocksize for layer in layers.values())
    expected = {}
    for name, layer in layers.items():
        delta = reference_delta(layer.entries, layer.coefficients.detach().double(), layer.d_out, layer.d_in,
                                layer.scaling)
        expected[name] = _weight_the_kernel_uses(layer.base_layer) + delta
    ids = torch.randint(0, 50257, (2, 7))
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(ids)
    for layer in layers.values():
        _as_after_a_forward(layer.base_layer)
    ff.merge(model, dequantize=True)
    for name, layer in layers.items():
        assert rel_err(layer.base_layer.weight, expected[name]) < 1e-6, name
