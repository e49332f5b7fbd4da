"""LoRA on the q and v slices of GPT-2's fused c_attn, as the LoRA repository's MergedLinear adapted them."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from experiments.shared.methods import LoRA
from experiments.shared.split import SplitProjection, split_fused

from helpers import build, inputs


class Backbone:
    target_modules, head, fused = ["c_attn"], [], {"c_attn": ["q", "k", "v"]}


def lora(**kw):
    return LoRA(name="lora", lr=1e-3, head_lr=1e-3, r=4, alpha=32, dropout=0.0, fused_parts=["q", "v"], **kw)


def test_split_projection_computes_the_fused_output():
    model = build("gpt2")
    x = inputs("gpt2")
    before = model(**x).logits
    targets = split_fused(model, Backbone.fused, ["c_attn"], ["q", "v"])
    assert targets == ["c_attn.q", "c_attn.v"]
    assert isinstance(model.transformer.h[0].attn.c_attn, SplitProjection)
    torch.testing.assert_close(model(**x).logits, before, rtol=1e-6, atol=1e-6)


def test_lora_adapts_the_q_and_v_slices_only():
    model = build("gpt2")
    fused = model.transformer.h[0].attn.c_attn
    h = torch.randn(3, 5, 18)
    base = fused(h).detach()
    peft_model = lora().apply(model, Backbone())
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # B starts at zero: give the update a value
    split = peft_model.base_model.model.transformer.h[0].attn.c_attn
    out = split(h).detach()
    q, k, v = out.split(18, dim=-1)
    bq, bk, bv = base.split(18, dim=-1)
    torch.testing.assert_close(k, bk)                  # k untouched
    assert (q - bq).abs().max() > 1e-3 and (v - bv).abs().max() > 1e-3
    trained = sorted({n.split("c_attn.")[1].split(".")[0] for n, p in peft_model.named_parameters() if p.requires_grad})
    assert trained == ["q", "v"]


@pytest.mark.parametrize("d,layers,count", [(1024, 24, 393_216), (1280, 36, 737_280)])
def test_parameter_counts_of_the_lora_repository(d, layers, count):
    """The LoRA repository's MergedLinear(enable_lora=[True, False, True], r=4): lora_A (2r x d), lora_B (2d x r)
    per layer. Its GPT-2 M / L counts are 0.39M / 0.74M (the LoRA paper prints 0.35M / 0.77M)."""
    assert layers * (2 * 4 * d + 2 * d * 4) == count
    config = GPT2Config(n_embd=d, n_layer=layers, n_head=16, vocab_size=8, n_positions=8)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    peft_model = lora().apply(model, Backbone())
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == count


def test_fused_parts_errors():
    with pytest.raises(ValueError, match=r"parts \['o'\] are not parts"):
        LoRA(name="lora", lr=1, head_lr=1, r=4, alpha=32, fused_parts=["o"]).apply(build("gpt2"), Backbone())
    with pytest.raises(ValueError, match="cannot be combined with method.target_modules"):
        lora(target_modules="all-linear").apply(build("gpt2"), Backbone())

    class Bert:
        name, target_modules, head, fused = "tiny_bert", ["query", "value"], ["classifier"], {}

    with pytest.raises(ValueError, match=r"model tiny_bert has no fused projections.*drop the setting"):
        lora().apply(build("bert"), Bert())
