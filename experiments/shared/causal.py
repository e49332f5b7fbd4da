"""What the two generation families share: a decoder with padding set up for batched generation, prompt/target
pairs whose loss sees the target only, and the family base that trains on them and selects runs by held-out loss."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

from .backbones import Backbone, usable_length
from .family import Family, Prepared, Selection


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


class CausalLMFamily(Family):
    """A family that fine-tunes a decoder on prompt/target pairs (E2E, instruction tuning): the model and its
    padding, the pairs' tokens, and the loss on held-out pairs that selects runs, computed once after training.
    A subclass says how its data splits into training and held-out rows and how a row becomes a pair."""

    selection = Selection("eval_loss", split="validation", mode="min")
    held_out_name: ClassVar[str] = "validation"   # the result's count of held-out examples: <name>_examples

    @abstractmethod
    def split(self, data) -> tuple[Any, Any]:
        """(training rows, held-out rows) of the loaded data."""

    @staticmethod
    @abstractmethod
    def pair(row: dict) -> tuple[str, str]:
        """(prompt, target) of one row; the loss sees the target only."""

    def training_args(self) -> dict:
        return {}

    def check_backbone(self, backbone):
        backbone.check_fits(AutoModelForCausalLM, self.task.name, encoders_refused=True)

    def load_model(self, backbone, data):
        return load_causal_lm(backbone)

    def prepare(self, data, model, tokenizer) -> Prepared:
        length, pair = usable_length(self.run.max_length, model, tokenizer), self.pair

        def pairs(rows):
            return rows.map(lambda r: tokenize_pair(tokenizer, *pair(r), length), remove_columns=rows.column_names)

        train, held_out = (pairs(rows) for rows in self.split(data))
        return Prepared(train=train, held_out=held_out, training_args=self.training_args(),
                        collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True),
                        counts={"train_examples": len(train), f"{self.held_out_name}_examples": len(held_out)})

    def evaluate_on_every_rank(self, trainer, prepared):
        held_out = prepared.held_out
        return {"loss": trainer.evaluate(eval_dataset=held_out)["eval_loss"] if len(held_out) else float("nan")}
