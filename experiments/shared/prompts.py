"""Prompt formats: Stanford Alpaca's template (training and base models' conversations) and conversation
encoding through a tokenizer's chat template. Used by the instruction family and by local judges alike."""
from __future__ import annotations

PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def alpaca_prompt(example: dict) -> str:
    return (PROMPT_INPUT if example.get("input") else PROMPT_NO_INPUT).format(**example)


def encode_conversation(tokenizer, messages: list[dict]) -> dict:
    """The tokenizer's chat template; base models without one (LLaMA, GPT-2) get the Alpaca format they were
    tuned on, one Instruction/Response pair per turn."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)
    text = PROMPT_NO_INPUT.split("### Instruction:")[0]
    for m in messages:
        if m["role"] == "user":
            text += f"### Instruction:\n{m['content']}\n\n### Response:\n"
        elif m["role"] == "assistant":
            text += m["content"] + "\n\n"
        else:
            text = m["content"] + "\n\n" + text
    return tokenizer(text, return_tensors="pt")
