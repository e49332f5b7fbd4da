"""Alpaca files: a damaged one is named by file and record."""
import pytest


@pytest.mark.parametrize("content,match", [
    ('{"instruction": "x", "output": "y"}', "holds a JSON dict; expected a non-empty list"),
    ("[]", "holds an empty list"),
    ('[{"instruction": "x"}]', r"record 0: output missing or not text"),
    ('[{"instruction": "x", "output": "y"}, {"instruction": 3, "output": "y"}]', "record 1: instruction missing"),
    ('[{"instruction": "x", "output": "y"}, "text"]', "record 1: a str, expected an object"),
    ('[{"instruction": "x", "output": "y"', "is not valid JSON"),
])
def test_broken_alpaca_file_names_file_and_record(tmp_path, content, match):
    from experiments.instruct.data import read_alpaca

    path = tmp_path / "alpaca.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_alpaca(path)
