"""Alpaca training data (hub or a local JSON) and FastChat's MT-Bench / Vicuna questions (a local folder)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from datasets import Dataset, load_dataset

from ..shared.sources import read_text, resolve_source

BENCHES = {"mt_bench": "mt_bench", "vicuna": "vicuna_bench"}


def read_alpaca(path: Path) -> Dataset:
    """A JSON list of {instruction, input (optional), output} records; the error names the file and record."""
    try:
        records = json.loads(read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): truncated or not an Alpaca file") from e
    if not isinstance(records, list) or not records:
        kind = "an empty list" if isinstance(records, list) else f"a JSON {type(records).__name__}"
        raise ValueError(f"{path} holds {kind}; expected a non-empty list of {{instruction, input, output}} records")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, record {i}: a {type(record).__name__}, expected an object with "
                             "instruction, input (optional) and output")
        bad = [k for k in ("instruction", "output") if not isinstance(record.get(k), str)]
        if bad or not isinstance(record.get("input", ""), str):
            raise ValueError(f"{path}, record {i}: {', '.join(bad or ['input'])} missing or not text "
                             f"(it has {sorted(record)})")
    return Dataset.from_list([{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
                              for r in records])


def load_alpaca(path: Optional[str], fallbacks=(), hub_id: str = "tatsu-lab/alpaca") -> tuple[Dataset, str]:
    return resolve_source(
        "Alpaca", setting="data.alpaca_file", env="FOURIERFT_ALPACA_FILE",
        expects="a JSON list of {instruction, input, output}", configured=path, configured_kind="file",
        local=read_alpaca, hub=lambda: load_dataset(hub_id, split="train"), hub_id=hub_id,
        fallbacks=fallbacks, usable=Path.is_file)


def find_bench_dir(configured: Optional[str], fallbacks=()) -> Path:
    def usable(folder: Path) -> bool:
        return (folder / "judge_prompts.jsonl").is_file()

    folder, _ = resolve_source(
        "MT-Bench/Vicuna questions", setting="data.bench_dir", env="FOURIERFT_BENCH_DIR",
        expects="FastChat's fastchat/llm_judge/data folder (mt_bench/, vicuna_bench/, judge_prompts.jsonl)",
        configured=configured, configured_kind="folder", local=lambda p: p, fallbacks=fallbacks, usable=usable)
    return folder


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_bench(bench_dir: Path, name: str, limit=None, categories=None):
    """(questions, GPT-4 reference answers by question id) of one bench."""
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
