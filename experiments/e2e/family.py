"""E2E NLG: train on MR -> text with label smoothing, decode the test MRs with beam search, score against all
references of each MR (BLEU, NIST, METEOR, ROUGE-L, CIDEr). The paper reports the last epoch's test scores; runs are
selected (an LR search) by the loss on the dev set, computed once after training."""
from __future__ import annotations

import json

import torch

from fourierft.files import write_atomic

from ..shared.causal import CausalLMFamily
from ..shared.family import Outcome, Report, Trained, subsample, training_losses
from ..shared.validate import fraction, int_at_least, optional
from .data import load_e2e, prompt
from .metrics import e2e_scores, group_references
from .task import E2ETask

SCORES = ("bleu", "nist", "meteor", "rouge_l", "cider")


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


class E2E(CausalLMFamily):
    name = "e2e"
    report = Report(
        title="E2E NLG test set, official scorer's metrics (our rows: the test MRs each run scored), mean ± standard "
              "deviation over seeds, one row per configuration; BLEU/METEOR/ROUGE-L x100",
        columns=SCORES)
    settings = {"label_smoothing": fraction(), "max_test_mrs": optional(int_at_least(1)),
                "generation_batch_size": int_at_least(1), "decoding.max_new_tokens": int_at_least(1),
                "decoding.num_beams": int_at_least(1)}
    task: E2ETask
    held_out_name = "dev"

    def load_data(self):
        return load_e2e(self.data.e2e_dir, self.data.e2e_fallback_dirs, self.task.hub_id)

    def split(self, data):
        return (subsample(data["train"], self.run.max_train_samples, self.run.seed),
                subsample(data["validation"], self.run.max_eval_samples, 0))

    @staticmethod
    def pair(row):
        return prompt(row["mr"]), " " + row["ref"]

    def training_args(self):
        return {"label_smoothing_factor": self.options.label_smoothing}

    def evaluate(self, trained: Trained, artifacts) -> Outcome:
        test, options = trained.data["test"], self.options
        grouped = group_references(test["mr"], test["ref"])
        mrs = list(grouped)[: options.max_test_mrs] if options.max_test_mrs else list(grouped)
        predictions = generate(trained.model, trained.processor, [prompt(m) for m in mrs], options.decoding,
                               options.generation_batch_size)
        scores = e2e_scores(predictions, [grouped[m] for m in mrs])
        write_atomic(artifacts / "predictions.jsonl", "".join(
            json.dumps({"mr": mr, "prediction": pred, "references": grouped[mr]}) + "\n"
            for mr, pred in zip(mrs, predictions)))
        return Outcome(trained.collective["loss"], {
            "main_metric": "bleu", "metrics": scores, "test_mrs": len(mrs), "predictions": "predictions.jsonl",
            "epochs": training_losses(trained.trainer)})
