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

from fourierft import write_atomic

from ..shared import build
from ..shared.backbones import usable_length
from ..shared.causal import load_causal_lm, tokenize_pair
from ..shared.methods import adapt
from ..shared.prompts import alpaca_prompt, encode_conversation
from ..shared.run import Run, write_json_atomic
from ..shared.trainer import TwoRateTrainer, subsample
from .data import find_bench_dir, load_alpaca, load_bench, read_jsonl
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
    """Train, answer, save adapter and answers (pending.json marks them done), then judge. A rerun after a judge
    failure only judges; a finished run judged with judge=none is judged by a rerun that names a judge."""
    run_ = Run(cfg, "instruct", cfg.task.name)
    done = run_.finished()
    if done and (done.get("judge") is not None or cfg.judge._target_.endswith(".no_judge")):
        return done["metrics"].get("mt_bench") or -1.0
    judge = instantiate(cfg.judge, _convert_="all")
    if judge is not None and hasattr(judge, "check"):
        judge.check()  # before hours of training
    pending_file = run_.artifacts / "pending.json"
    if done:  # answered and written earlier without a judge: judge the saved answers now
        run_.claim()
        pending = {"trainable": done["trainable_params"], "total": done["total_params"],
                   **{k: done.get(k) for k in PENDING_KEYS}}
        run_.earlier = done["wall_time_s"]
    elif pending_file.is_file():
        pending = json.loads(pending_file.read_text())
        log.info("training and answers already done (%s): judging only", pending_file)
    else:
        pending = train_and_answer(cfg, run_)
        if pending is None:
            return -1.0
        write_json_atomic(pending_file, pending)
    bench_dir = find_bench_dir(cfg.data.bench_dir, cfg.data.bench_fallback_dirs)
    prompts = load_prompts(bench_dir)
    metrics = dict(pending["metrics"])
    for bench in cfg.task.benches:
        questions, refs = load_bench(bench_dir, bench, cfg.task.max_questions, cfg.task.categories)
        answers = {a["question_id"]: a["turns"] for a in read_jsonl(run_.artifacts / f"{bench}_answers.jsonl")}
        if judge is not None:
            graded = grade(judge, prompts, questions, answers, refs)
            with open(run_.artifacts / f"{bench}_judgments.jsonl", "w") as f:
                f.writelines(json.dumps(g) + "\n" for g in graded)
            valid = [g["score"] for g in graded if g["score"] >= 0]
            metrics[bench] = statistics.mean(valid) if valid else None
            metrics[f"{bench}_unrated"] = len(graded) - len(valid)
    run_.write_result(**{**pending, "metrics": metrics}, main_metric="mt_bench", judge=getattr(judge, "name", None))
    pending_file.unlink(missing_ok=True)
    log.info("instruct %s %s: %s", cfg.model.name, cfg.method.name, metrics)
    return metrics.get("mt_bench") or -1.0


# what a finished result carries over when it is judged later
PENDING_KEYS = ("head_params", "variant", "adapter_bytes", "metrics", "questions", "train_examples", "data_source",
                "epochs")


def train_and_answer(cfg: DictConfig, run_: Run) -> dict | None:
    """Train, save the adapter, answer both benches and save the answers; what the results JSON will need (None
    on ranks other than 0 of a multi-process run)."""
    set_seed(cfg.seed)
    method, backbone = build(cfg)
    data, source = load_alpaca(cfg.data.alpaca_file, cfg.data.alpaca_fallbacks)
    model, tokenizer = load_causal_lm(backbone)
    model, counts = adapt(model, method, backbone)
    train = subsample(data, cfg.trainer.max_train_samples, cfg.seed)
    length = usable_length(cfg.trainer.max_length, model, tokenizer)
    train = train.map(lambda r: tokenize_pair(tokenizer, alpaca_prompt(r), r["output"], length),
                      remove_columns=train.column_names)
    trainer = TwoRateTrainer(model=model, args=run_.training_args(method), train_dataset=train, method=method,
                             head=backbone.head,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True))
    run_.train(trainer)
    if not run_.writer:
        return None  # multi-process: rank 0 answers, judges and writes
    adapter_bytes = run_.save_adapter(method, model, run_.artifacts / "adapter")
    bench_dir = find_bench_dir(cfg.data.bench_dir, cfg.data.bench_fallback_dirs)
    metrics, asked = {}, {}
    for bench in cfg.task.benches:
        questions, refs = load_bench(bench_dir, bench, cfg.task.max_questions, cfg.task.categories)
        answers = answer(model, tokenizer, questions, cfg.task.max_new_tokens)
        lines = [json.dumps({"question_id": q["question_id"], "category": q["category"],
                             "turns": answers[q["question_id"]]}) for q in questions]
        write_atomic(run_.artifacts / f"{bench}_answers.jsonl", "\n".join(lines) + "\n")
        metrics[f"{bench}_rouge_l"] = rouge_l(answers, refs)
        asked[bench] = len(questions)
    epochs = [{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
    return {**counts, "adapter_bytes": adapter_bytes, "metrics": metrics, "questions": asked,
            "train_examples": len(train), "data_source": source, "epochs": epochs}
