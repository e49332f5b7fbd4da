"""Prompt / target pairs for the decoder families: the Alpaca template, loss on the response only."""
from experiments.shared.causal import tokenize_pair
from experiments.shared.prompts import alpaca_prompt


def test_alpaca_template_and_response_only_loss():
    from transformers import AutoTokenizer

    from experiments.shared.backbones import gpt2_tokenizer_folder

    tok = AutoTokenizer.from_pretrained(gpt2_tokenizer_folder())
    example = {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"}
    text = alpaca_prompt(example)
    assert text.endswith("### Input:\n2, 3\n\n### Response:\n")
    assert "### Input" not in alpaca_prompt({**example, "input": ""})
    row = tokenize_pair(tok, text, example["output"], 512)
    n_prompt = len(tok(text)["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert row["labels"][n_prompt:] == tok("5")["input_ids"] + [tok.eos_token_id]
