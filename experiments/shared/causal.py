"""What the two generation families share: a decoder with padding set up for batched generation, and
prompt/target pairs whose loss sees the target only."""
from __future__ import annotations

from transformers import AutoModelForCausalLM

from .backbones import Backbone


def load_causal_lm(backbone: Backbone, dtype: str = "fp32"):
    """(model, tokenizer) with a pad token set. Training batches pad on the right: the model numbers positions
    0..L-1 whatever the mask, so left padding would move every real token of a batch by that batch's padding, and
    GPT-2's absolute positions would change with the batch's longest example (and with how a batch is split over
    processes). Batched generation asks for left padding itself."""
    model, tokenizer = backbone.load(AutoModelForCausalLM, dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def tokenize_pair(tokenizer, source: str, target: str, max_length: int) -> dict:
    """Prompt and target tokens; the loss sees the target (and EOS) only."""
    src = tokenizer(source, add_special_tokens=False)["input_ids"]
    tgt = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (src + tgt)[:max_length]
    labels = ([-100] * len(src) + tgt)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
