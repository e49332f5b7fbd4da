"""Saving, loading and exchanging adapters with PEFT."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import fourierft as ff

from helpers import build, inputs


def trained(family="roberta", **kw):
    base = build(family)
    config = ff.FourierFTConfig(n=kw.pop("n", 20), scaling=40.0, **kw)
    model = ff.apply_fourierft(copy.deepcopy(base), config)
    with torch.no_grad():  # stand-in for training: move every trainable number
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return base, model


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


@pytest.mark.parametrize("family", ["roberta", "gpt2", "llama"])
def test_export_to_peft_loads_with_same_outputs(tmp_path, family):
    from peft import PeftModel

    modules = ["classifier"] if family == "roberta" else None
    other_n = {"roberta": "layer.1.attention.self.value", "gpt2": "h.1.attn.c_attn", "llama": "layers.1.self_attn.v_proj"}
    base, model = trained(family, modules_to_save=modules, n_pattern={other_n[family]: 33})
    ff.export_peft(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "FOURIERFT"
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    batch = inputs(family)
    with torch.no_grad():
        assert torch.allclose(peft_model(**batch).logits, model(**batch).logits, rtol=1e-5, atol=1e-6)
    # and back: import_peft gives the same numbers again
    back = ff.import_peft(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        assert torch.allclose(back(**batch).logits, model(**batch).logits, rtol=1e-5, atol=1e-6)


def test_import_adapter_saved_by_peft(tmp_path):
    from peft import FourierFTConfig, get_peft_model

    base = build("bert")
    peft_model = get_peft_model(copy.deepcopy(base), FourierFTConfig(n_frequency=15, scaling=99.0,
                                                                    target_modules=["query", "value"], modules_to_save=["classifier"]))
    with torch.no_grad():
        peft_model.base_model.model.classifier.modules_to_save["default"].weight.add_(1.0)
    peft_model.save_pretrained(tmp_path)
    ours = ff.import_peft(copy.deepcopy(base), tmp_path)
    batch = inputs("bert")
    with torch.no_grad():
        assert torch.allclose(ours(**batch).logits, peft_model(**batch).logits, rtol=1e-5, atol=1e-6)


def test_export_refuses_what_peft_cannot_represent(tmp_path):
    _, biased = trained(fc=2.0, bandwidth=5.0)
    with pytest.raises(ValueError, match="no frequency bias"):
        ff.export_peft(biased, tmp_path)
    _, model = trained()
    layer = next(l for _, l in ff.fourierft_layers(model))
    layer.set_entries(layer.entries.flip(1))
    with pytest.raises(ValueError, match="not what PEFT regenerates"):
        ff.export_peft(model, tmp_path)


def test_written_files_have_ordinary_permissions(tmp_path):
    import os

    from fourierft.files import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "result.json", "{}")
        ff.save_adapter(trained()[1], tmp_path / "adapter")
    finally:
        os.umask(old)
    for file in (tmp_path / "result.json", tmp_path / "adapter" / "adapter.safetensors"):
        assert file.stat().st_mode & 0o777 == 0o644, file  # not mkstemp's 0600


def bert_with_head(kind):
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    cls = {"SEQ_CLS": BertForSequenceClassification, "TOKEN_CLS": BertForTokenClassification}[kind]
    torch.manual_seed(0)
    return cls(BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=40, num_labels=3)).eval()


@pytest.mark.parametrize("kind", ["SEQ_CLS", "TOKEN_CLS"])
def test_classifier_round_trips_with_peft_both_ways(tmp_path, kind):
    import peft

    auto = {"SEQ_CLS": peft.AutoPeftModelForSequenceClassification,
            "TOKEN_CLS": peft.AutoPeftModelForTokenClassification}[kind]
    ids = inputs("bert")
    # ours -> PEFT: the head was not in modules_to_save (it stayed frozen); PEFT's classifier task still loads it
    bert_with_head(kind).save_pretrained(tmp_path / "base")
    model = bert_with_head(kind)
    model.config.name_or_path = str(tmp_path / "base")
    ff.apply_fourierft(model, ff.FourierFTConfig(n=12, scaling=40.0))
    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
        ours = model(**ids).logits
    ff.export_peft(model, tmp_path / "out")
    exported = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert exported["task_type"] == kind and exported["modules_to_save"] == ["classifier"]
    with torch.no_grad():
        assert torch.allclose(auto.from_pretrained(tmp_path / "out").eval()(**ids).logits, ours, atol=1e-5)
    # PEFT -> ours: PEFT trains the head and writes modules_to_save [classifier, score]
    theirs = peft.get_peft_model(bert_with_head(kind), peft.FourierFTConfig(
        n_frequency=12, scaling=40.0, target_modules=["query", "value"], task_type=kind, init_weights=False))
    with torch.no_grad():
        for p in theirs.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # stand-in for training: coefficients and head move
    theirs.save_pretrained(tmp_path / "in")
    saved = json.loads((tmp_path / "in" / "adapter_config.json").read_text())
    assert "score" in saved["modules_to_save"]  # a name this BERT lacks: PEFT lists every classifier name it knows
    imported = ff.import_peft(bert_with_head(kind), tmp_path / "in")
    with torch.no_grad():
        assert torch.allclose(imported(**ids).logits, theirs.eval()(**ids).logits, atol=1e-5)


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
