"""Instruction tuning recipe: Alpaca (loss on the response only), then answers to MT-Bench's two-turn and
Vicuna's questions with the chat template, judged single-answer (FastChat), plus ROUGE-L to reference answers."""
from __future__ import annotations

import json
import logging
import statistics

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import DataCollatorForSeq2Seq, set_seed

from ..shared import build
from ..shared.causal import load_causal_lm, tokenize_pair
from ..shared.methods import adapt
from ..shared.prompts import alpaca_prompt, encode_conversation
from ..shared.run import Run
from ..shared.trainer import TwoRateTrainer, subsample
from .data import find_bench_dir, load_alpaca, load_bench
from .judge import grade, load_prompts

log = logging.getLogger(__name__)


@torch.no_grad()
def answer(model, tokenizer, questions: list[dict], max_new_tokens: int) -> dict:
    """Every turn answered in one conversation through the tokenizer's chat template (greedy)."""
    model.eval()
    answers = {}
    for q in questions:
        messages, turns = [], []
        for text in q["turns"]:
            messages.append({"role": "user", "content": text})
            ids = encode_conversation(tokenizer, messages).to(model.device)
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            reply = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            messages.append({"role": "assistant", "content": reply})
            turns.append(reply)
        answers[q["question_id"]] = turns
    return answers


def rouge_l(answers: dict, references: dict) -> float | None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [scorer.score(ref, ans)["rougeL"].fmeasure
              for qid, turns in answers.items() if qid in references
              for ans, ref in zip(turns, references[qid])]
    return 100 * statistics.mean(scores) if scores else None


def run(cfg: DictConfig) -> float:
    run_ = Run(cfg, "instruct", cfg.task.name)
    done = run_.finished()
    if done:
        return done["metrics"].get("mt_bench", -1.0)
    set_seed(cfg.seed)
    method, backbone = build(cfg)
    data, source = load_alpaca(cfg.data.alpaca_file, cfg.data.alpaca_fallbacks)
    model, tokenizer = load_causal_lm(backbone)
    model, counts = adapt(model, method, backbone)
    train = subsample(data, cfg.trainer.max_train_samples, cfg.seed)
    train = train.map(lambda r: tokenize_pair(tokenizer, alpaca_prompt(r), r["output"], cfg.trainer.max_length),
                      remove_columns=train.column_names)
    trainer = TwoRateTrainer(model=model, args=run_.training_args(method), train_dataset=train, method=method,
                             head=backbone.head,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True))
    run_.train(trainer)

    bench_dir = find_bench_dir(cfg.data.bench_dir, cfg.data.bench_fallback_dirs)
    prompts = load_prompts(bench_dir)
    judge = instantiate(cfg.judge, _convert_="all")
    metrics, asked = {}, {}
    run_.artifacts.mkdir(parents=True, exist_ok=True)
    for bench in cfg.task.benches:
        questions, refs = load_bench(bench_dir, bench, cfg.task.max_questions, cfg.task.categories)
        answers = answer(model, tokenizer, questions, cfg.task.max_new_tokens)
        with open(run_.artifacts / f"{bench}_answers.jsonl", "w") as f:
            for q in questions:
                f.write(json.dumps({"question_id": q["question_id"], "category": q["category"],
                                    "turns": answers[q["question_id"]]}) + "\n")
        metrics[f"{bench}_rouge_l"] = rouge_l(answers, refs)
        asked[bench] = len(questions)
        if judge is not None:
            graded = grade(judge, prompts, questions, answers, refs)
            with open(run_.artifacts / f"{bench}_judgments.jsonl", "w") as f:
                f.writelines(json.dumps(g) + "\n" for g in graded)
            valid = [g["score"] for g in graded if g["score"] >= 0]
            metrics[bench] = statistics.mean(valid) if valid else None
            metrics[f"{bench}_unrated"] = len(graded) - len(valid)
    run_.write_result(
        **counts, adapter_bytes=method.save(model, run_.artifacts / "adapter") if cfg.save_adapter else None,
        main_metric="mt_bench", metrics=metrics, questions=asked, judge=getattr(judge, "name", None),
        train_examples=len(train), data_source=source,
        epochs=[{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e])
    log.info("instruct %s %s: %s", backbone.name, method.name, metrics)
    return metrics.get("mt_bench") or -1.0
