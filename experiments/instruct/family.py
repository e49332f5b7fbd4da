"""Instruction tuning: Alpaca (loss on the response only), then answers to MT-Bench's two-turn and Vicuna's questions
with the chat template, judged single-answer (FastChat), plus ROUGE-L to reference answers. Judging is the run's
finishing step: a judge failure keeps the adapter and the answers, and a rerun only judges; a run made with
judge=none is judged later by a rerun that names a judge. Runs are selected by the loss on held-out Alpaca examples,
never by the benches."""
from __future__ import annotations

import json
import logging
import statistics
from functools import cached_property

import torch
from hydra.utils import instantiate

from fourierft.files import write_atomic

from ..shared.causal import CausalLMFamily
from ..shared.family import Outcome, Report, Trained, training_losses
from ..shared.prompts import alpaca_prompt, encode_conversation
from ..shared.validate import int_at_least, optional
from .data import find_bench_dir, load_alpaca, load_bench, read_jsonl
from .judge import grade, load_prompts
from .task import InstructTask

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


class Instruct(CausalLMFamily):
    name = "instruct"
    report = Report(
        title="Instruction tuning: mean judge score (1-10) on MT-Bench and Vicuna, ROUGE-L vs GPT-4 answers; the "
              "paper's judge is GPT-4, ours is whatever judge= the run used",
        columns=("mt_bench", "vicuna", "mt_bench_rouge_l", "vicuna_rouge_l"))
    settings = {"max_questions": optional(int_at_least(1)), "max_new_tokens": int_at_least(1),
                "validation_examples": int_at_least(0)}
    sections = ("judge",)
    task: InstructTask

    @cached_property
    def grader(self):
        """The judge built from its config section (None for judge=none), once."""
        return None if self.judge._target_.endswith(".no_judge") else instantiate(self.judge, _convert_="all")

    @cached_property
    def bench_dir(self):
        return find_bench_dir(self.data.bench_dir, self.data.bench_fallback_dirs)

    def check(self):
        if self.grader is not None and hasattr(self.grader, "check"):
            self.grader.check()  # before hours of training

    def unfinished(self, result):
        return result.get("judge") is None and self.grader is not None

    def load_data(self):
        return load_alpaca(self.data.alpaca_file, self.data.alpaca_fallbacks, self.task.hub_id)

    def split(self, data):
        return held_out(data, self.run.max_train_samples, self.options.validation_examples, self.run.seed)

    @staticmethod
    def pair(row):
        return alpaca_prompt(row), row["output"]

    def evaluate(self, trained: Trained, artifacts) -> Outcome:
        metrics, asked = {}, {}
        for bench in self.options.benches:
            questions, refs = self.bench(bench)
            answers = answer(trained.model, trained.processor, questions, self.options.max_new_tokens)
            lines = [json.dumps({"question_id": q["question_id"], "category": q["category"],
                                 "turns": answers[q["question_id"]]}) for q in questions]
            write_atomic(artifacts / f"{bench}_answers.jsonl", "\n".join(lines) + "\n")
            metrics[f"{bench}_rouge_l"] = rouge_l(answers, refs)
            asked[bench] = len(questions)
        return Outcome(trained.collective["loss"], {
            "main_metric": "mt_bench", "metrics": metrics, "questions": asked, "judge": None,
            "epochs": training_losses(trained.trainer)})

    def finish(self, result, artifacts):
        """Judge the saved answers (nothing to do with judge=none)."""
        if self.grader is None:
            return result
        prompts = load_prompts(self.bench_dir)
        metrics = dict(result["metrics"])
        for bench in self.options.benches:
            questions, refs = self.bench(bench)
            answers = {a["question_id"]: a["turns"] for a in read_jsonl(artifacts / f"{bench}_answers.jsonl")}
            graded = grade(self.grader, prompts, questions, answers, refs)
            write_atomic(artifacts / f"{bench}_judgments.jsonl", "".join(json.dumps(g) + "\n" for g in graded))
            valid = [g["score"] for g in graded if g["score"] >= 0]
            metrics[bench] = statistics.mean(valid) if valid else None
            metrics[f"{bench}_unrated"] = len(graded) - len(valid)
        log.info("instruct %s: %s", self.task.name, metrics)
        return {**result, "metrics": metrics, "judge": getattr(self.grader, "name", None)}

    def bench(self, name):
        return load_bench(self.bench_dir, name, self.options.max_questions, self.options.categories)
