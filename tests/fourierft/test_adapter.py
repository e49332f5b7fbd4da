"""The adapter format (fourierft/adapter.py): saved and loaded bit-exactly, entries stored once per shape, folders
saved before the rename read; and read as a careless or hostile user would hand them over: truncated,
edited, re-signed, NaN, another checkpoint or format; each ends in a clear error that names the file and field."""
import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import fourierft as ff

from helpers import build, inputs, logits, trained, trained_bert


def rewrite_meta(path, **changes):
    meta = json.loads((path / "fourierft_adapter.json").read_text())
    meta.update(changes)
    (path / "fourierft_adapter.json").write_text(json.dumps(meta))
    return meta


def resign(path, tensors):
    """Rewrite an adapter's weights and recompute both checksums, as a deliberate tamperer would."""
    from fourierft.adapter import described_sha256 as _described_sha256
    from fourierft.adapter import file_sha256 as _sha256

    save_file(tensors, str(path / "adapter.safetensors"), metadata={"format": "fourierft-adapter"})
    meta = rewrite_meta(path, sha256=_sha256(path / "adapter.safetensors"))
    rewrite_meta(path, config_sha256=_described_sha256(meta))


def test_edited_config_is_refused(tmp_path):
    ff.save_adapter(trained_bert(), tmp_path)
    meta = json.loads((tmp_path / "fourierft_adapter.json").read_text())
    meta["config"]["scaling"] = 500.0
    (tmp_path / "fourierft_adapter.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="was edited after it was saved"):
        ff.load_adapter(build("bert"), tmp_path)


def test_an_edit_that_also_deletes_config_sha256_is_refused(tmp_path):
    ff.save_adapter(trained_bert(), tmp_path)
    meta = json.loads((tmp_path / "fourierft_adapter.json").read_text())
    meta["config"]["fused"] = {"query": ["q", "k"]}
    del meta["config_sha256"]
    (tmp_path / "fourierft_adapter.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="lacks config_sha256, which save_adapter always writes: the file was edited"):
        ff.load_adapter(build("bert"), tmp_path)


def test_other_checkpoint_is_refused_unless_asked(tmp_path):
    model = trained_bert()
    model.config.name_or_path = "google-bert/bert-base-uncased"
    ff.save_adapter(model, tmp_path)
    other = build("bert")
    other.config.name_or_path = "/models/bert-base-cased"
    with pytest.raises(ValueError, match=r"trained on 'google-bert/bert-base-uncased'.*check_base=False"):
        ff.load_adapter(other, tmp_path)
    assert not list(ff.fourierft_layers(other))  # refused before anything was changed
    same = build("bert")
    same.config.name_or_path = "/local/copies/bert-base-uncased/"  # a local copy of the same checkpoint
    assert torch.equal(logits(ff.load_adapter(same, tmp_path)), logits(model))
    forced = ff.load_adapter(other, tmp_path, check_base=False)
    assert torch.equal(logits(forced), logits(model))  # build() draws the same weights: same outputs when forced


def test_nan_coefficients_are_neither_saved_nor_loaded(tmp_path):
    model = trained_bert()
    layer = next(layer for _, layer in ff.fourierft_layers(model))
    with torch.no_grad():
        layer.coefficients[0] = float("nan")
    with pytest.raises(ValueError, match="hold NaN or inf.*training diverged; the adapter was not saved"):
        ff.save_adapter(model, tmp_path)
    # a file another tool wrote with NaN inside (checksums made to agree)
    ff.save_adapter(trained_bert(), tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    key = next(k for k in tensors if k.startswith("coefficients/"))
    tensors[key][0] = float("inf")
    save_file(tensors, str(tmp_path / "adapter.safetensors"), metadata={"format": "fourierft-adapter"})
    from fourierft.adapter import described_sha256 as _described_sha256
    from fourierft.adapter import file_sha256 as _sha256

    meta = rewrite_meta(tmp_path, sha256=_sha256(tmp_path / "adapter.safetensors"))
    rewrite_meta(tmp_path, config_sha256=_described_sha256(meta))
    with pytest.raises(ValueError, match="holds NaN or inf in coefficients/"):
        ff.load_adapter(build("bert"), tmp_path)


@pytest.mark.parametrize("content,match", [
    ("[1, 2]", "is not a fourierft-adapter file"),
    ('{"format": "fourierft-adapter"}', "lacks version, config, base_model, sha256"),
    ("{not json", "is not valid JSON"),
])
def test_malformed_adapter_json(tmp_path, content, match):
    ff.save_adapter(trained_bert(), tmp_path)
    (tmp_path / "fourierft_adapter.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        ff.load_adapter(build("bert"), tmp_path)


@pytest.mark.parametrize("field,value,match", [
    ("version", "one", r"adapter format version 'one' \(a JSON str\) is not one this library reads \(the integers"),
    ("version", 2, "adapter format version 2 is not one this library reads .*a newer fourierft wrote it"),
    ("version", 0, "adapter format version 0 is not one this library reads"),
    ("base_model", ["BertForSequenceClassification"], "base_model must record the model class and its layers"),
    ("config", {"n": "many"}, r"FourierFTConfig.n must be a positive integer, got 'many'"),
    ("config", {"alpha": 3}, r"unknown FourierFTConfig fields \['alpha'\]"),
    ("config", [1], "a FourierFTConfig is a JSON object of fields, got list"),
])
def test_wrongly_typed_adapter_fields(tmp_path, field, value, match):
    ff.save_adapter(trained_bert(), tmp_path)
    meta = json.loads((tmp_path / "fourierft_adapter.json").read_text())
    meta[field] = value
    from fourierft.adapter import described_sha256 as _described_sha256

    meta["config_sha256"] = _described_sha256(meta)  # as a hand-written file: the field checks must still catch it
    (tmp_path / "fourierft_adapter.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        ff.load_adapter(build("bert"), tmp_path)


@pytest.mark.parametrize("axis,value,match", [
    (0, -16368, r"entries hold row -16368 \(1 out of range in all\), outside the 24x24 spectrum"),
    (1, 24, r"entries hold column 24 \(1 out of range in all\), outside the 24x24 spectrum"),
])
def test_resigned_entries_out_of_range_are_refused_by_every_reader(tmp_path, axis, value, match):
    ff.save_adapter(trained_bert(), tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    key = next(k for k in tensors if k.startswith("entries/"))
    tensors[key][axis, 2] = value
    resign(tmp_path, tensors)
    model = build("bert")
    with pytest.raises(ValueError, match=f"adapter {tmp_path}, module .*{match}.*the file was edited or is corrupted"):
        ff.load_adapter(model, tmp_path)
    assert not list(ff.fourierft_layers(model))  # refused before anything was wrapped
    with pytest.raises(ValueError, match=f"adapter {tmp_path}, module .*{match}.*the file was edited or is corrupted"):
        ff.MixedAdapters(build("bert"), {"a": tmp_path})


@pytest.mark.parametrize("modules_to_save,bias,key", [
    (None, "none", "bert.embeddings.word_embeddings.weight"),  # nothing declared: no base weight may be written
    (["classifier"], "none", "bert.pooler.dense.weight"),  # a head declared, another module written
    (None, "all", "bert.pooler.dense.weight"),  # every bias declared, not the weights beside them
])
def test_resigned_trained_tensors_outside_the_declared_modules_are_refused(tmp_path, modules_to_save, bias, key):
    model = trained_bert(modules_to_save=modules_to_save, bias=bias)
    ff.save_adapter(model, tmp_path)
    tensors = load_file(str(tmp_path / "adapter.safetensors"))
    tensors[f"trained/{key}"] = torch.full_like(dict(model.named_parameters())[key], 7.0)
    resign(tmp_path, tensors)
    declared = re.escape(f"(modules_to_save={modules_to_save}, bias='{bias}')")
    for load in (ff.load_adapter, lambda m, p: ff.MixedAdapters(m, {"a": p})):
        model = build("bert")
        with pytest.raises(ValueError, match=f"holds trained tensors for {key}, outside what the adapter declares "
                                             f"it trains {declared}"):
            load(model, tmp_path)
        assert not any(isinstance(m, (ff.FourierFTLayer, ff.serving.ServedLayer)) for m in model.modules())


def test_a_resigned_peft_file_cannot_write_undeclared_weights(tmp_path):
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=6, scaling=50.0))
    ff.export_peft(model, tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors["base_model.model.bert.embeddings.word_embeddings.weight"] = torch.zeros(64, 24)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="holds trained tensors for bert.embeddings.word_embeddings.weight, outside"):
        ff.import_peft(build("bert"), tmp_path)


def test_a_folder_holds_one_adapter_format(tmp_path):
    model = trained_bert()
    ff.export_peft(ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=6, scaling=50.0)), tmp_path / "peft")
    with pytest.raises(ValueError, match="holds a PEFT adapter .*save_adapter would put a second adapter beside it"):
        ff.save_adapter(model, tmp_path / "peft")
    assert sorted(p.name for p in (tmp_path / "peft").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    ff.save_adapter(model, tmp_path / "ours")
    with pytest.raises(ValueError, match="holds a fourierft adapter .*export_peft would put a second adapter"):
        ff.export_peft(model, tmp_path / "ours")
    # a folder that holds both already (written by hand, or by an older version): every reader refuses it, naming both
    for file in ("adapter.safetensors", "fourierft_adapter.json"):
        (tmp_path / "peft" / file).write_bytes((tmp_path / "ours" / file).read_bytes())
    for read in (ff.load_adapter, ff.import_peft, lambda m, p: ff.MixedAdapters(m, {"a": p})):
        with pytest.raises(ValueError, match="holds two adapters, one of fourierft .* and one of PEFT"):
            read(build("bert"), tmp_path / "peft")


def test_a_peft_lora_folder_is_sent_to_peft(tmp_path):
    import peft

    lora = peft.get_peft_model(build("bert"), peft.LoraConfig(r=2, target_modules=["query", "value"]))
    lora.save_pretrained(tmp_path)
    advice = r"holds a PEFT LORA adapter .*load it with PEFT itself: peft.PeftModel.from_pretrained\(model, folder\)"
    with pytest.raises(ValueError, match=advice):
        ff.load_adapter(build("bert"), tmp_path)
    with pytest.raises(ValueError, match=r"holds a 'LORA' adapter, not FOURIERFT.*peft.PeftModel.from_pretrained"):
        ff.import_peft(build("bert"), tmp_path)


def test_truncated_or_corrupted_file_is_refused(tmp_path):
    _, model = trained()
    ff.save_adapter(model, tmp_path)
    weights = tmp_path / "adapter.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        ff.load_adapter(build("roberta"), tmp_path)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        ff.load_adapter(build("roberta"), tmp_path)
    (tmp_path / "fourierft_adapter.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ff.load_adapter(build("roberta"), tmp_path)
    with pytest.raises(FileNotFoundError, match="needs fourierft_adapter.json"):
        ff.load_adapter(build("roberta"), tmp_path / "missing")


def test_each_format_is_named_by_the_other_loader(tmp_path):
    from peft import PeftModel

    base, model = trained()
    ff.save_adapter(model, tmp_path / "ours")
    assert not (tmp_path / "ours" / "adapter_config.json").exists()  # no PEFT loader takes our folder for its own
    with pytest.raises(ValueError, match="Can't find 'adapter_config.json'"):
        PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    ff.export_peft(model, tmp_path / "peft")
    with pytest.raises(ValueError, match=r"holds a PEFT FourierFT adapter \(adapter_config.json\): load it with "
                                         r"fourierft.import_peft"):
        ff.load_adapter(copy.deepcopy(base), tmp_path / "peft")
    with pytest.raises(ValueError, match="holds an adapter of fourierft itself: load it with fourierft.load_adapter"):
        ff.import_peft(copy.deepcopy(base), tmp_path / "ours")


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
