"""Saving and loading our own adapter files (fourierft/io.py): bit-exact round trips, entries stored once per
shape, the wrong base model refused, folders saved before the rename."""
import copy

import pytest
import torch
from safetensors.torch import load_file

import fourierft as ff

from helpers import build, inputs, trained


def test_round_trip_is_bit_exact(tmp_path):
    base, model = trained(modules_to_save=["classifier"], fc=2.0, bandwidth=5.0)
    size = ff.save_adapter(model, tmp_path / "a")
    assert size == ff.adapter_bytes(tmp_path / "a") and size < 20_000
    loaded = ff.load_adapter(copy.deepcopy(base), tmp_path / "a")
    theirs = dict(ff.fourierft_layers(loaded))
    for name, layer in ff.fourierft_layers(model):
        assert torch.equal(theirs[name].coefficients, layer.coefficients)
        assert torch.equal(theirs[name].entries, layer.entries)
    assert torch.equal(loaded.classifier.dense.weight, model.classifier.dense.weight)
    batch = inputs("roberta")
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
    # a model already wrapped the same way loads in place
    again = ff.apply_fourierft(copy.deepcopy(base), model.fourierft_config)
    ff.load_adapter(again, tmp_path / "a")
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, model(**batch).logits)


def test_entries_are_stored_once_per_shape(tmp_path):
    _, model = trained("llama", target_modules=["q_proj", "k_proj", "v_proj"])
    ff.save_adapter(model, tmp_path)
    stored = load_file(str(tmp_path / "adapter.safetensors"))
    full = [k for k, t in stored.items() if k.startswith("entries/")]
    assert len(full) == 2  # q (24x24) and k/v (12x24)
    assert not any(name.endswith(".pt") or name.endswith(".bin") for name in map(str, tmp_path.iterdir()))


def test_wrong_base_model_is_refused(tmp_path):
    _, model = trained("roberta")
    ff.save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="saved for a RobertaForSequenceClassification, not a BertForSequenceClassification"):
        ff.load_adapter(build("bert"), tmp_path)
    other = build("roberta")
    other.roberta.encoder.layer[1].attention.self.value = torch.nn.Linear(20, 10)
    with pytest.raises(ValueError, match="wrong base model"):
        ff.load_adapter(other, tmp_path)


def test_a_folder_saved_before_the_rename_still_loads(tmp_path):
    base, model = trained()
    ff.save_adapter(model, tmp_path)
    (tmp_path / "fourierft_adapter.json").rename(tmp_path / "adapter_config.json")  # as format version 1 wrote it
    with torch.no_grad():
        assert torch.equal(ff.load_adapter(copy.deepcopy(base), tmp_path)(**inputs("roberta")).logits,
                           model(**inputs("roberta")).logits)
    assert ff.adapter_bytes(tmp_path) == sum(f.stat().st_size for f in tmp_path.iterdir())
    ff.save_adapter(model, tmp_path)  # saved again: one config file, under the new name
    assert sorted(f.name for f in tmp_path.iterdir()) == ["adapter.safetensors", "fourierft_adapter.json"]
