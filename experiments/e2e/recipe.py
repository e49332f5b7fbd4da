"""E2E NLG recipe: train on MR -> text with label smoothing, decode the test MRs with beam search, score
against all references of each MR (BLEU, NIST, METEOR, ROUGE-L, CIDEr). The paper reports the last epoch."""
from __future__ import annotations

import json
import logging

import torch
from omegaconf import DictConfig
from transformers import DataCollatorForSeq2Seq, set_seed

from ..shared import build
from ..shared.backbones import usable_length
from ..shared.causal import load_causal_lm, tokenize_pair
from ..shared.methods import adapt
from ..shared.run import Run
from ..shared.trainer import TwoRateTrainer, subsample
from .data import load_e2e, prompt
from .metrics import e2e_scores, group_references

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], decoding, batch_size: int) -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        out = model.generate(**batch, num_beams=decoding.num_beams, length_penalty=decoding.length_penalty,
                             no_repeat_ngram_size=decoding.no_repeat_ngram_size,
                             repetition_penalty=decoding.repetition_penalty, max_new_tokens=decoding.max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs += [t.strip().split("\n")[0] for t in texts]
    return outputs


def run(cfg: DictConfig) -> float:
    run_ = Run(cfg, "e2e", "e2e")
    done = run_.finished()
    if done:
        return done["metrics"]["bleu"]
    set_seed(cfg.seed)
    method, backbone = build(cfg)
    data, source = load_e2e(cfg.data.e2e_dir, cfg.data.e2e_fallback_dirs)
    model, tokenizer = load_causal_lm(backbone)
    model, counts = adapt(model, method, backbone)
    length = usable_length(cfg.trainer.max_length, model, tokenizer)

    train = subsample(data["train"], cfg.trainer.max_train_samples, cfg.seed)
    train = train.map(lambda r: tokenize_pair(tokenizer, prompt(r["mr"]), " " + r["ref"], length),
                      remove_columns=["mr", "ref"])
    trainer = TwoRateTrainer(
        model=model, args=run_.training_args(method, label_smoothing_factor=cfg.task.label_smoothing),
        train_dataset=train, method=method, head=backbone.head,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True))
    run_.train(trainer)
    if not run_.writer:
        return float("nan")  # multi-process: rank 0 generates, scores and writes

    test = data["test"]
    grouped = group_references(test["mr"], test["ref"])
    mrs = list(grouped)[: cfg.task.max_test_mrs] if cfg.task.max_test_mrs else list(grouped)
    predictions = generate(model, tokenizer, [prompt(m) for m in mrs], cfg.task.decoding,
                           cfg.task.generation_batch_size)
    scores = e2e_scores(predictions, [grouped[m] for m in mrs])
    run_.artifacts.mkdir(parents=True, exist_ok=True)
    with open(run_.artifacts / "predictions.jsonl", "w") as f:
        for mr, pred in zip(mrs, predictions):
            f.write(json.dumps({"mr": mr, "prediction": pred, "references": grouped[mr]}) + "\n")
    run_.write_result(
        **counts, adapter_bytes=run_.save_adapter(method, model, run_.artifacts / "adapter"),
        main_metric="bleu", metrics=scores, test_mrs=len(mrs), train_examples=len(train), data_source=source,
        epochs=[{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
        predictions="predictions.jsonl")
    log.info("e2e %s %s seed %d: %s", backbone.name, method.name, cfg.seed,
             ", ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return scores["bleu"]
