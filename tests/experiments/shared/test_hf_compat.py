"""The one shim over private transformers names: it still matches the installed transformers, raises the flag only
for the check and only for a quantized model with adapters, and refuses a transformers that reads it no more."""
from types import SimpleNamespace

import pytest

from experiments.shared import hf_compat


def test_the_installed_transformers_still_reads_the_flag_where_the_shim_sets_it():
    hf_compat.check_supported()


@pytest.mark.parametrize("quantized,adapted,raised", [(True, True, True), (True, False, False), (False, True, False)])
def test_the_flag_is_raised_for_the_check_only(quantized, adapted, raised):
    model = SimpleNamespace(is_quantized=quantized)
    with hf_compat.quantized_adapters_recognised(model, adapted):
        assert getattr(model, hf_compat.PEFT_FLAG, False) is raised
    assert not getattr(model, hf_compat.PEFT_FLAG, False)  # lowered again: saving stays a plain save


def test_a_transformers_that_no_longer_reads_the_flag_is_refused(monkeypatch):
    monkeypatch.setattr(hf_compat.inspect, "getsource", lambda module: "def check(model): ...")
    with pytest.raises(RuntimeError, match="no longer reads _hf_peft_config_loaded.*hf_compat.py needs updating"):
        with hf_compat.quantized_adapters_recognised(SimpleNamespace(is_quantized=True), adapted=True):
            pass


def test_auto_classes_still_say_what_they_build():
    from transformers import AutoModelForCausalLM, AutoModelForImageClassification, BertConfig, GPT2Config, ViTConfig

    assert hf_compat.auto_class_builds(AutoModelForCausalLM, GPT2Config())
    assert not hf_compat.auto_class_builds(AutoModelForCausalLM, ViTConfig())
    assert hf_compat.auto_class_builds(AutoModelForImageClassification, ViTConfig())
    assert not hf_compat.auto_class_builds(AutoModelForImageClassification, BertConfig())
