"""Exchanging adapters with PEFT's FourierFT (fourierft/peft_interop.py): exports load in PEFT with the same outputs,
PEFT's files import, and what PEFT cannot represent is refused."""
import copy
import json

import pytest
import torch

import fourierft as ff

from helpers import bert_with_head, build, inputs, trained


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
