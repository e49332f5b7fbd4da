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


def test_training_batches_pad_right_so_positions_do_not_move(tmp_path):
    """GPT-2 numbers positions 0..L-1 whatever the mask: a left-padded training batch would move a short example's
    tokens by the batch's padding and change its loss. Right padding keeps each example's loss what it is alone;
    batched generation (left padding) still gives each prompt's output alone."""
    import torch
    from omegaconf import OmegaConf
    from transformers import DataCollatorForSeq2Seq

    from experiments.e2e.family import generate
    from experiments.shared.backbones import RandomModel, gpt2_tokenizer_folder
    from experiments.shared.causal import load_causal_lm

    backbone = RandomModel(name="tiny_gpt2", model_type="gpt2", tokenizer=gpt2_tokenizer_folder(), target_modules=["c_attn"], head=[],
                           config={"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64})
    model, tok = load_causal_lm(backbone)
    model.eval()
    short = tokenize_pair(tok, "name[The Eagle]", " The Eagle.", 64)
    long = tokenize_pair(tok, "name[The Mill], food[French], area[riverside], near[Café Rouge]",
                         " The Mill is a French place by the river near Café Rouge.", 64)
    batch = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, padding=True)([short, long])
    assert batch["attention_mask"][0, -1] == 0 and batch["attention_mask"][0, 0] == 1  # padded at the end

    def loss(inputs):
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1]
        labels = inputs["labels"][:, 1:]
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")

    alone = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100, padding=True)([short])
    with torch.no_grad():
        in_batch = loss({k: v[:1] for k, v in batch.items()})
        torch.testing.assert_close(in_batch, loss(alone), rtol=1e-5, atol=1e-5)
    prompts = ["name[The Eagle]", "name[The Mill], food[French], area[riverside]"]
    decoding = OmegaConf.create({"num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                                 "repetition_penalty": 1.0, "max_new_tokens": 5})
    torch.manual_seed(0)
    assert generate(model, tok, prompts, decoding, 2) == [generate(model, tok, [p], decoding, 1)[0] for p in prompts]
