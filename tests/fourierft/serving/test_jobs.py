"""fourierft/serving/jobs.py: a row's text decoded incrementally equals the whole decode at every step, a character
split over tokens waits for its second half, and flush gives what is left."""
from experiments.shared.backbones import gpt2_tokenizer_folder


def test_incremental_text_equals_the_whole_decode_at_every_step():
    from transformers import AutoTokenizer

    from fourierft.serving.jobs import Text

    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_folder())
    tokens = tokenizer("Crème brûlée, naïve café — 東京 🙂 done.", add_special_tokens=False)["input_ids"]
    text = Text(tokenizer)
    for n in range(1, len(tokens) + 1):
        shown = text.add(tokens[:n])
        whole = tokenizer.decode(tokens[:n])
        if whole.endswith("\ufffd"):  # half of a character: the text waits, marked as incomplete
            assert shown.endswith("\ufffd") and whole.startswith(shown[:-1])
        else:
            assert shown == whole, n
    assert text.flush(tokens) == tokenizer.decode(tokens)
