"""E2E NLG: train on MR -> text with label smoothing, decode the test MRs with beam search, score against all
references of each MR (BLEU, NIST, METEOR, ROUGE-L, CIDEr). The paper reports the last epoch's test scores; runs are
selected (an LR search) by the loss on the dev set, computed once after training."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

from ..shared.backbones import usable_length
from ..shared.causal import load_causal_lm, tokenize_pair
from ..shared.family import Family, Outcome, Prepared, Report, Selection, TaskDefinition, subsample
from ..shared.validate import fraction, int_at_least, optional
from .data import load_e2e, prompt
from .metrics import e2e_scores, group_references

SCORES = ("bleu", "nist", "meteor", "rouge_l", "cider")


@dataclass(frozen=True)
class E2ETask(TaskDefinition):
    """E2E NLG: the official CSVs, or `hub_id` on the hub."""

    hub_id: str = "tuetschek/e2e_nlg"

    @property
    def family(self):
        return E2E


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], decoding, batch_size: int) -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False).to(device)
        out = model.generate(**batch, num_beams=decoding.num_beams, length_penalty=decoding.length_penalty,
                             no_repeat_ngram_size=decoding.no_repeat_ngram_size,
                             repetition_penalty=decoding.repetition_penalty, max_new_tokens=decoding.max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs += [t.strip().split("\n")[0] for t in texts]
    return outputs


class E2E(Family):
    name = "e2e"
    report = Report(
        title="E2E NLG test set, official scorer's metrics (our rows: the test MRs each run scored), mean ± standard "
              "deviation over seeds, one row per configuration; BLEU/METEOR/ROUGE-L x100",
        columns=SCORES)
    settings = {"label_smoothing": fraction(), "max_test_mrs": optional(int_at_least(1)),
                "generation_batch_size": int_at_least(1), "decoding.max_new_tokens": int_at_least(1),
                "decoding.num_beams": int_at_least(1)}
    task: E2ETask
    selection = Selection("eval_loss", split="validation", mode="min")

    def check_backbone(self, backbone):
        backbone.check_fits(AutoModelForCausalLM, self.task.name, encoders_refused=True)

    def load_data(self):
        return load_e2e(self.cfg.data.e2e_dir, self.cfg.data.e2e_fallback_dirs, self.task.hub_id)

    def load_model(self, backbone):
        return load_causal_lm(backbone)

    def prepare(self, data, model, tokenizer) -> Prepared:
        length = usable_length(self.cfg.trainer.max_length, model, tokenizer)

        def pairs(split):
            return split.map(lambda r: tokenize_pair(tokenizer, prompt(r["mr"]), " " + r["ref"], length),
                             remove_columns=["mr", "ref"])

        train = pairs(subsample(data["train"], self.cfg.trainer.max_train_samples, self.cfg.seed))
        self.dev = pairs(subsample(data["validation"], self.cfg.trainer.max_eval_samples, 0))
        return Prepared(train=train, collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True),
                        training_args={"label_smoothing_factor": self.cfg.task.label_smoothing},
                        counts={"train_examples": len(train), "dev_examples": len(self.dev)})

    def evaluate_on_every_rank(self, trainer):
        self.dev_loss = trainer.evaluate(eval_dataset=self.dev)["eval_loss"]

    def evaluate(self, trainer, model, tokenizer, data, artifacts) -> Outcome:
        test = data["test"]
        grouped = group_references(test["mr"], test["ref"])
        mrs = list(grouped)[: self.cfg.task.max_test_mrs] if self.cfg.task.max_test_mrs else list(grouped)
        predictions = generate(model, tokenizer, [prompt(m) for m in mrs], self.cfg.task.decoding,
                               self.cfg.task.generation_batch_size)
        scores = e2e_scores(predictions, [grouped[m] for m in mrs])
        artifacts.mkdir(parents=True, exist_ok=True)
        with open(artifacts / "predictions.jsonl", "w") as f:
            for mr, pred in zip(mrs, predictions):
                f.write(json.dumps({"mr": mr, "prediction": pred, "references": grouped[mr]}) + "\n")
        return Outcome(self.dev_loss, {
            "main_metric": "bleu", "metrics": scores, "test_mrs": len(mrs), "predictions": "predictions.jsonl",
            "epochs": [{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]})
