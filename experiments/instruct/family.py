"""Instruction tuning: Alpaca (loss on the response only), then answers to MT-Bench's two-turn and Vicuna's questions
with the chat template, judged single-answer (FastChat), plus ROUGE-L to reference answers. Judging is the run's
finishing step: a judge failure keeps the adapter and the answers, and a rerun only judges; a run made with
judge=none is judged later by a rerun that names a judge. Runs are selected by the loss on held-out Alpaca examples,
never by the benches."""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

from fourierft.files import write_atomic

from ..shared.backbones import usable_length
from ..shared.causal import load_causal_lm, tokenize_pair
from ..shared.family import Family, Outcome, Prepared, Report, Selection, TaskDefinition
from ..shared.prompts import alpaca_prompt, encode_conversation
from ..shared.validate import int_at_least, optional
from .data import find_bench_dir, load_alpaca, load_bench, read_jsonl
from .judge import grade, load_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstructTask(TaskDefinition):
    """Instruction tuning on Alpaca: a local JSON, or `hub_id` on the hub; the benches come from data.bench_dir."""

    hub_id: str = "tatsu-lab/alpaca"

    @property
    def family(self):
        return Instruct


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


def held_out(data, limit, size: int, seed: int):
    """(train, validation): the seeded shuffle's first `limit` examples train (what subsample gives), the next
    `size` validate; where too few are left, the shuffle's last `size` examples are held out of training."""
    shuffled = data.shuffle(seed=seed)
    if limit is not None and limit + size <= len(data):
        return shuffled.select(range(limit)), shuffled.select(range(limit, limit + size))
    n_train = len(data) - size if limit is None else min(limit, len(data) - size)
    if n_train < 1:
        raise ValueError(f"{len(data)} Alpaca examples leave none to train on after task.validation_examples={size}")
    return shuffled.select(range(n_train)), shuffled.select(range(len(data) - size, len(data)))


class Instruct(Family):
    name = "instruct"
    report = Report(
        title="Instruction tuning: mean judge score (1-10) on MT-Bench and Vicuna, ROUGE-L vs GPT-4 answers; the "
              "paper's judge is GPT-4, ours is whatever judge= the run used",
        columns=("mt_bench", "vicuna", "mt_bench_rouge_l", "vicuna_rouge_l"))
    settings = {"max_questions": optional(int_at_least(1)), "max_new_tokens": int_at_least(1),
                "validation_examples": int_at_least(0)}
    task: InstructTask
    selection = Selection("eval_loss", split="validation", mode="min")

    def __init__(self, cfg, task):
        super().__init__(cfg, task)
        self._judge = None

    @property
    def judge(self):
        if self._judge is None and not self.cfg.judge._target_.endswith(".no_judge"):
            self._judge = instantiate(self.cfg.judge, _convert_="all")
        return self._judge

    def check(self):
        if self.judge is not None and hasattr(self.judge, "check"):
            self.judge.check()  # before hours of training

    def unfinished(self, result):
        return result.get("judge") is None and self.judge is not None

    def check_backbone(self, backbone):
        backbone.check_fits(AutoModelForCausalLM, self.task.name, encoders_refused=True)

    def load_data(self):
        return load_alpaca(self.cfg.data.alpaca_file, self.cfg.data.alpaca_fallbacks, self.task.hub_id)

    def load_model(self, backbone):
        return load_causal_lm(backbone)

    def prepare(self, data, model, tokenizer) -> Prepared:
        length = usable_length(self.cfg.trainer.max_length, model, tokenizer)
        train, validation = held_out(data, self.cfg.trainer.max_train_samples, self.cfg.task.validation_examples,
                                     self.cfg.seed)

        def pairs(split):
            return split.map(lambda r: tokenize_pair(tokenizer, alpaca_prompt(r), r["output"], length),
                             remove_columns=split.column_names)

        train, self.validation = pairs(train), pairs(validation)
        return Prepared(train=train, collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True),
                        counts={"train_examples": len(train), "validation_examples": len(validation)})

    def evaluate_on_every_rank(self, trainer):
        held_out = len(self.validation) > 0
        self.loss = trainer.evaluate(eval_dataset=self.validation)["eval_loss"] if held_out else float("nan")

    def evaluate(self, trainer, model, tokenizer, data, artifacts) -> Outcome:
        bench_dir = find_bench_dir(self.cfg.data.bench_dir, self.cfg.data.bench_fallback_dirs)
        metrics, asked = {}, {}
        for bench in self.cfg.task.benches:
            questions, refs = self.bench(bench_dir, bench)
            answers = answer(model, tokenizer, questions, self.cfg.task.max_new_tokens)
            lines = [json.dumps({"question_id": q["question_id"], "category": q["category"],
                                 "turns": answers[q["question_id"]]}) for q in questions]
            write_atomic(artifacts / f"{bench}_answers.jsonl", "\n".join(lines) + "\n")
            metrics[f"{bench}_rouge_l"] = rouge_l(answers, refs)
            asked[bench] = len(questions)
        return Outcome(self.loss, {
            "main_metric": "mt_bench", "metrics": metrics, "questions": asked, "judge": None,
            "epochs": [{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]})

    def finish(self, result, artifacts):
        """Judge the saved answers (nothing to do with judge=none)."""
        if self.judge is None:
            return result
        bench_dir = find_bench_dir(self.cfg.data.bench_dir, self.cfg.data.bench_fallback_dirs)
        prompts = load_prompts(bench_dir)
        metrics = dict(result["metrics"])
        for bench in self.cfg.task.benches:
            questions, refs = self.bench(bench_dir, bench)
            answers = {a["question_id"]: a["turns"] for a in read_jsonl(artifacts / f"{bench}_answers.jsonl")}
            graded = grade(self.judge, prompts, questions, answers, refs)
            write_atomic(artifacts / f"{bench}_judgments.jsonl", "".join(json.dumps(g) + "\n" for g in graded))
            valid = [g["score"] for g in graded if g["score"] >= 0]
            metrics[bench] = statistics.mean(valid) if valid else None
            metrics[f"{bench}_unrated"] = len(graded) - len(valid)
        log.info("instruct %s %s: %s", self.cfg.model.name, self.cfg.method.name, metrics)
        return {**result, "metrics": metrics, "judge": getattr(self.judge, "name", None)}

    def bench(self, bench_dir, name):
        return load_bench(bench_dir, name, self.cfg.task.max_questions, self.cfg.task.categories)
