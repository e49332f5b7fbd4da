"""Instruction tuning recipe: Alpaca (loss on the response only), then answers to MT-Bench's two-turn and
Vicuna's questions with the chat template, judged single-answer (FastChat), plus ROUGE-L to reference answers."""
from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from omegaconf import DictConfig
from transformers import DataCollatorForSeq2Seq, set_seed

from .causal_models import load_adapted_causal_lm, load_causal_lm
from .e2e import tokenize_pair
from .hub import hub_reachable
from .judge import LocalJudge, OpenAIJudge, grade, load_prompts
from .methods import save_trained
from .training import Run, TwoRateTrainer, subsample, write_result

log = logging.getLogger(__name__)

# Stanford Alpaca's template
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
BENCHES = {"mt_bench": "mt_bench", "vicuna": "vicuna_bench"}


def alpaca_prompt(example: dict) -> str:
    return (PROMPT_INPUT if example.get("input") else PROMPT_NO_INPUT).format(**example)


def load_alpaca(path, fallbacks=()) -> tuple[Dataset, str]:
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"data.alpaca_file={path} is not a file")
        return Dataset.from_list(json.loads(Path(path).read_text())), str(path)
    if hub_reachable():
        return load_dataset("tatsu-lab/alpaca", split="train"), "hub:tatsu-lab/alpaca"
    for candidate in fallbacks:
        if Path(candidate).is_file():
            return Dataset.from_list(json.loads(Path(candidate).read_text())), str(Path(candidate).resolve())
    raise FileNotFoundError("Alpaca: the hub is unreachable and no local JSON was found; set data.alpaca_file=/path "
                            "or FOURIERFT_ALPACA_FILE to a JSON list of {instruction, input, output}")


def find_bench_dir(configured, fallbacks=()) -> Path:
    for candidate in ([configured] if configured else []) + list(fallbacks):
        if candidate and (Path(candidate) / "judge_prompts.jsonl").is_file():
            return Path(candidate)
    raise FileNotFoundError("MT-Bench/Vicuna questions not found: set data.bench_dir=/path or FOURIERFT_BENCH_DIR "
                            "to FastChat's fastchat/llm_judge/data folder (mt_bench/, vicuna_bench/, judge_prompts.jsonl)")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_bench(bench_dir: Path, name: str, limit=None, categories=None):
    folder = bench_dir / BENCHES[name]
    questions = read_jsonl(folder / "question.jsonl")
    if categories:  # the first `limit` of each listed category
        questions = [q for c in categories for q in [q for q in questions if q["category"] == c][:limit]]
    else:
        questions = questions[:limit]
    refs = {}
    ref_file = folder / "reference_answer" / "gpt-4.jsonl"
    if ref_file.is_file():
        refs = {r["question_id"]: r["choices"][0]["turns"] for r in read_jsonl(ref_file)}
    return questions, refs


def encode_conversation(tokenizer, messages: list[dict]) -> dict:
    """The tokenizer's chat template; base models without one (LLaMA, GPT-2) get the Alpaca format they were
    tuned on, one Instruction/Response pair per turn."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    text = PROMPT_NO_INPUT.split("### Instruction:")[0]
    for m in messages:
        if m["role"] == "user":
            text += f"### Instruction:\n{m['content']}\n\n### Response:\n"
        elif m["role"] == "assistant":
            text += m["content"] + "\n\n"
        else:
            text = m["content"] + "\n\n" + text
    return tokenizer(text, return_tensors="pt")


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


def make_judge(cfg, model, tokenizer):
    j = cfg.judge
    if j.kind == "openai":
        return OpenAIJudge(j.base_url, j.model, j.api_key)
    if j.kind == "local":
        if j.model_source == "self":  # the tuned model judges (smoke test only: it grades itself)
            return LocalJudge(model, tokenizer, j.max_new_tokens, name=f"self:{cfg.model.name}")
        from omegaconf import OmegaConf

        judge_model, judge_tok = load_causal_lm(OmegaConf.create(j.local_model))
        return LocalJudge(judge_model, judge_tok, j.max_new_tokens, name=f"local:{j.local_model.name}")
    if j.kind == "none":
        return None
    raise ValueError(f"judge.kind={j.kind!r} is not one of openai, local, none")


def run(cfg: DictConfig) -> float:
    run_ = Run(cfg, "instruct", cfg.task.name)
    done = run_.finished()
    if done:
        return done["metrics"].get("mt_bench", -1.0)
    started = time.time()
    set_seed(cfg.seed)
    data, source = load_alpaca(cfg.data.alpaca_file, cfg.data.alpaca_fallbacks)
    model, tokenizer, trainable, total = load_adapted_causal_lm(cfg)
    train = subsample(data, cfg.trainer.max_train_samples, cfg.seed)
    train = train.map(lambda r: tokenize_pair(tokenizer, alpaca_prompt(r), r["output"], cfg.trainer.max_length),
                      remove_columns=train.column_names)
    trainer = TwoRateTrainer(model=model, args=run_.training_args(), train_dataset=train, method=cfg.method,
                             head=cfg.model.head,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True))
    run_.train(trainer)

    bench_dir = find_bench_dir(cfg.data.bench_dir, cfg.data.bench_fallback_dirs)
    prompts = load_prompts(bench_dir)
    judge = make_judge(cfg, model, tokenizer)
    metrics, counts = {}, {}
    run_.artifacts.mkdir(parents=True, exist_ok=True)
    for bench in cfg.task.benches:
        questions, refs = load_bench(bench_dir, bench, cfg.task.max_questions, cfg.task.categories)
        answers = answer(model, tokenizer, questions, cfg.task.max_new_tokens)
        with open(run_.artifacts / f"{bench}_answers.jsonl", "w") as f:
            for q in questions:
                f.write(json.dumps({"question_id": q["question_id"], "category": q["category"],
                                    "turns": answers[q["question_id"]]}) + "\n")
        metrics[f"{bench}_rouge_l"] = rouge_l(answers, refs)
        counts[bench] = len(questions)
        if judge is not None:
            graded = grade(judge, prompts, questions, answers, refs)
            with open(run_.artifacts / f"{bench}_judgments.jsonl", "w") as f:
                f.writelines(json.dumps(g) + "\n" for g in graded)
            valid = [g["score"] for g in graded if g["score"] >= 0]
            metrics[bench] = statistics.mean(valid) if valid else None
            metrics[f"{bench}_unrated"] = len(graded) - len(valid)
    write_result(run_, started=started, trainable=trainable, total=total, head_params=0,
                 adapter_bytes=save_trained(model, cfg.method, run_.artifacts / "adapter") if cfg.save_adapter else None,
                 main_metric="mt_bench", metrics=metrics, questions=counts, judge=getattr(judge, "name", None),
                 train_examples=len(train), data_source=source,
                 epochs=[{"epoch": e["epoch"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e])
    log.info("instruct %s %s: %s", cfg.model.name, cfg.method.name, metrics)
    return metrics.get("mt_bench") or -1.0
