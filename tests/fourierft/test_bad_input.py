"""Library bad input, tried as a careless or hostile user would: each ends in a clear error that names the setting,
file or field, or in a correct result."""
import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import fourierft as ff
from fourierft.entries import radial_frequency

from helpers import build, inputs


@pytest.mark.parametrize("kwargs,match", [
    ({"target_modules": "(["}, r"target_modules='\(\[' is a string, so a regular expression.*does not compile"),
    ({"target_modules": 5}, "target_modules must be a list of module-name suffixes"),
    ({"modules_to_save": [1]}, r"modules_to_save must hold module names"),
    ({"entry_seed": "x"}, "entry_seed must be an integer"),
    ({"scaling": float("nan")}, "scaling must be a finite non-zero number, got nan"),
    ({"scaling": 0.0}, r"scaling must be a finite non-zero number, got 0.0 \(at 0, dW is zero"),
    ({"scaling": True}, "scaling must be a finite non-zero number, got True"),
    ({"fused": {"c_attn": []}}, r"fused\['c_attn'\] must list distinct part names"),
    ({"fused": {"c_attn": ["q", "k"]}, "fused_targets": ["v"]}, r"fused_targets=\['v'\]: \['v'\] is not a part of fused"),
])
def test_bad_config_fields_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ff.FourierFTConfig(**kwargs)


def test_modules_to_save_as_one_string_is_one_module():
    config = ff.FourierFTConfig(n=4, modules_to_save="classifier")
    assert config.modules_to_save == ["classifier"]
    model = ff.apply_fourierft(build("bert"), config)
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_n_pattern_key_matching_nothing():
    with pytest.raises(ValueError, match=r"n_pattern keys \['layer.7.value'\] match none of the adapted modules"):
        ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4, n_pattern={"layer.7.value": 8}))


def test_mpnet_is_detected_and_nothing_matched_is_grouped():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    def mpnet():
        return MPNetForSequenceClassification(MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                          num_attention_heads=2, intermediate_size=20))
    model = ff.apply_fourierft(mpnet(), ff.FourierFTConfig(n=4))
    assert [n.rpartition(".")[2] for n, _ in ff.fourierft_layers(model)] == ["q", "v"] * 3
    with pytest.raises(ValueError) as e:
        ff.apply_fourierft(mpnet(), ff.FourierFTConfig(n=4, target_modules=["nope"]))
    assert "mpnet.encoder.layer.*.attention.attn.q (3)" in str(e.value) and "layer.0" not in str(e.value)


def test_frequency_bias_on_a_layer_above_multinomials_limit():
    # 4100 x 4100 = 16.8M positions > 2^24: torch.multinomial refuses it
    entries = ff.sample_entries(4100, 4100, 500, seed=0, fc=50.0, bandwidth=200.0)
    assert entries.shape == (2, 500) and len({tuple(e) for e in entries.T.tolist()}) == 500
    radius = radial_frequency(entries, 4100, 4100)
    assert radius.median() < 400  # drawn around fc, not uniformly (a uniform draw's median radius is ~1900)


def test_merged_path_gives_the_frozen_weight_its_gradient_when_trainable():
    grads = {}
    for path in ("dense", "merged", "spectral"):
        torch.manual_seed(0)
        base = nn.Linear(6, 5)
        layer = ff.FourierFTLayer(base, ff.sample_entries(5, 6, 7, seed=1), scaling=3.0, path=path)
        base.weight.requires_grad_(True)
        layer(torch.randn(4, 6, generator=torch.Generator().manual_seed(2))).pow(2).sum().backward()
        grads[path] = base.weight.grad
    assert grads["merged"] is not None
    assert torch.allclose(grads["merged"], grads["dense"], atol=1e-5)
    assert torch.allclose(grads["spectral"], grads["dense"], atol=1e-5)


def test_model_to_bf16_keeps_coefficients_float32():
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=4)).to(torch.bfloat16)
    for _, layer in ff.fourierft_layers(model):
        assert layer.coefficients.dtype == torch.float32 and layer.base_layer.weight.dtype == torch.bfloat16


def trained_bert(n=6, scaling=50.0, **kwargs):
    torch.manual_seed(0)
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=n, scaling=scaling, **kwargs))
    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
    return model


def logits(model):
    with torch.no_grad():
        return model(**inputs("bert")).logits


def test_loading_into_a_wrapped_or_merged_model_applies_the_files_settings(tmp_path):
    saved = trained_bert(scaling=50.0, modules_to_save=["classifier"])
    with torch.no_grad():
        saved.classifier.weight.add_(1.0)
    ff.save_adapter(saved, tmp_path)
    expected = logits(saved)
    other = trained_bert(scaling=7.0)  # its own alpha, no modules_to_save
    ff.load_adapter(other, tmp_path)
    assert torch.allclose(logits(other), expected, atol=1e-6)
    assert other.fourierft_config.scaling == 50.0 and all(p.requires_grad for p in other.classifier.parameters())
    merged = ff.merge(trained_bert(scaling=7.0))
    ff.load_adapter(merged, tmp_path)
    assert torch.allclose(logits(merged), expected, atol=1e-5)
    assert not any(layer.merged for _, layer in ff.fourierft_layers(merged))


def rewrite_meta(path, **changes):
    meta = json.loads((path / "fourierft_adapter.json").read_text())
    meta.update(changes)
    (path / "fourierft_adapter.json").write_text(json.dumps(meta))
    return meta


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
    from fourierft.reader import described_sha256 as _described_sha256
    from fourierft.reader import file_sha256 as _sha256

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
    from fourierft.reader import described_sha256 as _described_sha256

    meta["config_sha256"] = _described_sha256(meta)  # as a hand-written file: the field checks must still catch it
    (tmp_path / "fourierft_adapter.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        ff.load_adapter(build("bert"), tmp_path)


def test_export_records_the_task_type_for_auto_classes(tmp_path):
    from peft import AutoPeftModelForCausalLM

    base = build("llama")
    base.save_pretrained(tmp_path / "base")
    model = copy.deepcopy(base)
    model.config.name_or_path = str(tmp_path / "base")
    ff.apply_fourierft(model, ff.FourierFTConfig(n=10, scaling=40.0))
    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.normal_()
    ff.export_peft(model, tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs("llama")).logits, model(**inputs("llama")).logits, atol=1e-5)


def test_merge_unmerge_is_exact_in_float32():
    model = trained_bert()
    weights = {n: layer.base_layer.weight.clone() for n, layer in ff.fourierft_layers(model)}
    ff.unmerge(ff.merge(model))
    for name, layer in ff.fourierft_layers(model):
        assert torch.allclose(layer.base_layer.weight, weights[name], atol=1e-6)


def test_quantized_base_layers_refuse_merging():
    class Packed(nn.Linear):  # as bitsandbytes' Linear4bit: an nn.Linear whose weight is packed integers
        def __init__(self):
            super().__init__(8, 8)
            self.weight = nn.Parameter(torch.zeros(32, 1, dtype=torch.uint8), requires_grad=False)

    with pytest.raises(ValueError, match="path='merged'.*quantized base layer \\(Packed\\)"):
        ff.apply_fourierft(nn.Sequential(Packed()), ff.FourierFTConfig(n=4, target_modules=["0"], path="merged"))
    model = ff.apply_fourierft(nn.Sequential(Packed()), ff.FourierFTConfig(n=4, target_modules=["0"]))
    assert model[0].quantized  # adapted beside the packed weight (tests/test_quantized.py trains such a base)
    with pytest.raises(TypeError, match="base layer is quantized \\(Packed\\): dW cannot be added to packed"):
        ff.merge(model)
    with pytest.raises(TypeError, match="cannot dequantize a Packed weight of dtype torch.uint8"):
        ff.merge(model, dequantize=True)


def resign(path, tensors):
    """Rewrite an adapter's weights and recompute both checksums, as a deliberate tamperer would."""
    from fourierft.reader import described_sha256 as _described_sha256
    from fourierft.reader import file_sha256 as _sha256

    save_file(tensors, str(path / "adapter.safetensors"), metadata={"format": "fourierft-adapter"})
    meta = rewrite_meta(path, sha256=_sha256(path / "adapter.safetensors"))
    rewrite_meta(path, config_sha256=_described_sha256(meta))


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


def test_entries_given_by_hand_are_range_checked():
    with pytest.raises(ValueError, match="entries hold row 5 .* outside the 5x6 spectrum"):
        ff.FourierFTLayer(nn.Linear(6, 5), torch.tensor([[5, 0], [0, 0]]), scaling=1.0)
    with pytest.raises(ValueError, match=r"entries of shape \(3, 2\): expected \(2, n\)"):
        ff.FourierFTLayer(nn.Linear(6, 5), torch.zeros(3, 2, dtype=torch.long), scaling=1.0)
    layer = ff.FourierFTLayer(nn.Linear(6, 5), ff.sample_entries(5, 6, 4, seed=0), scaling=1.0)
    with pytest.raises(ValueError, match="entries hold column -1"):
        layer.set_entries(torch.tensor([[0, 1, 2, 3], [0, 1, 2, -1]]))


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


def test_coefficients_edited_while_merged_are_refused_and_unmerge_restores_the_base_exactly():
    model = trained_bert()
    weights = {n: layer.base_layer.weight.clone() for n, layer in ff.fourierft_layers(model)}
    ff.merge(model).eval()
    logits(model)  # merged, unedited: serves
    layer = next(layer for _, layer in ff.fourierft_layers(model))
    with torch.no_grad():
        layer.coefficients.add_(1.0)
    with pytest.raises(RuntimeError, match=r"changed after merge\(\).*call fourierft.unmerge\(model\)"):
        logits(model)
    ff.unmerge(model)
    for name, other in ff.fourierft_layers(model):
        assert torch.allclose(other.base_layer.weight, weights[name], atol=1e-6, rtol=0), name
    merged_again = logits(ff.merge(model))
    assert torch.allclose(merged_again, logits(ff.unmerge(model)), atol=1e-5)  # the new coefficients, merged


def test_a_merged_model_cast_to_bf16_still_serves():
    model = ff.merge(trained_bert()).eval()
    expected = {n: layer.coefficients.detach().clone() for n, layer in ff.fourierft_layers(model)}
    model.to(torch.bfloat16)
    for name, layer in ff.fourierft_layers(model):
        assert torch.equal(layer.coefficients, expected[name])  # float32, and the values themselves
    with torch.no_grad():
        model(**{k: v for k, v in inputs("bert").items()})
