"""FourierFT over a bitsandbytes 4-bit (NF4) base, on bitsandbytes' CPU backend: exact against the dense float64
formula over the dequantized weight, the packed weight never touched, Trainer trains it, merge refused (or
dequantized when asked), adapters save and load."""
import shutil
from types import SimpleNamespace

import pytest
import torch
from test_core import reference_delta, rel_err
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, TrainingArguments

import fourierft as ff
from experiments.shared.backbones import HubModel, gpt2_tokenizer_folder
from experiments.shared.methods import FourierFT
from experiments.shared.trainer import TwoRateTrainer
from fourierft.layer import dequantized_weight

bnb = pytest.importorskip("bitsandbytes")
CONFIG = ff.FourierFTConfig(n=40, scaling=300.0, target_modules=["q_proj", "v_proj"])


@pytest.fixture
def base_folder(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=50257, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 tie_word_embeddings=True)).save_pretrained(folder)
    for file in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(f"{gpt2_tokenizer_folder()}/{file}", folder / file)
    return folder


def load_4bit(folder):
    backbone = HubModel("tiny", str(folder), ["q_proj", "v_proj"], [], "none", load_in_4bit=True)
    model, _ = backbone.load(AutoModelForCausalLM)
    assert model.is_quantized and type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    return model, backbone


def packed(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}


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


def test_trainer_trains_fourierft_on_a_4bit_base(base_folder, tmp_path):
    from datasets import Dataset

    model, backbone = load_4bit(base_folder)
    method = FourierFT("fourierft", lr=0.5, head_lr=1e-3, n=40, scaling=300.0)
    model = method.apply(model, backbone)
    before, coef = packed(model), {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in coef.values()) == 4 * 40
    torch.manual_seed(1)
    ids = torch.randint(0, 50257, (16, 12)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             learning_rate=0.5, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = TwoRateTrainer(model=model, args=args, train_dataset=data, method=method, head=[])
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    after = packed(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # W untouched
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, coef[n])]
    assert len(changed) == 4  # every layer's coefficients trained
    assert not getattr(model, "_hf_peft_config_loaded", False)  # the flag Trainer checks is lowered again


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


def test_trainer_still_refuses_a_purely_quantized_model(base_folder, tmp_path):
    """Only models that carry FourierFT layers get past Trainer's check; a bare 4-bit model is still refused."""
    model, _ = load_4bit(base_folder)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="purely quantized"):
        TwoRateTrainer(model=model, args=args, method=SimpleNamespace(), head=[])
