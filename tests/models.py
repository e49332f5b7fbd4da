"""Tiny random models of each supported family, built from configs (no network)."""
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)


def bert():
    return BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=40, num_labels=3))


def roberta():
    return RobertaForSequenceClassification(RobertaConfig(vocab_size=64, hidden_size=20, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=36,
                                                          max_position_embeddings=40, num_labels=2))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=18, n_layer=2, n_head=2, n_positions=32))


def llama():
    # grouped-query attention: k/v project 24 -> 12, not square
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=44, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def vit():
    return ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=24, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=40, num_labels=3))


FAMILIES = {"bert": bert, "roberta": roberta, "gpt2": gpt2, "llama": llama, "vit": vit}


def inputs(family, batch=2, seq=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    return {"input_ids": torch.randint(0, 64, (batch, seq), generator=g)}


def build(family, seed=0):
    torch.manual_seed(seed)
    model = FAMILIES[family]()
    model.eval()
    return model


def assert_round_trip(model, family, folder):
    """Give every FourierFT layer random coefficients, save the adapter, load it into a fresh `family` model and
    assert equal logits; the loaded model."""
    import fourierft as ff

    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
        expected = model(**inputs(family)).logits
    ff.save_adapter(model, folder)
    loaded = ff.load_adapter(build(family), folder)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs(family)).logits, expected)
    return loaded
