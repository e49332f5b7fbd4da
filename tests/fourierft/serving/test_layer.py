"""The served layer (fourierft/serving/layer.py): each row of a mixed batch equals its adapter alone in any dtype, and
over a 4-bit base."""
import copy

import pytest
import torch
from serving_helpers import make_adapter, padded

import fourierft as ff

from helpers import build, rel_err


def test_a_4bit_base_serves_mixed_rows_as_each_adapter_alone(tmp_path, base_folder):
    from transformers import AutoModelForCausalLM

    from helpers import load_4bit

    float_base = AutoModelForCausalLM.from_pretrained(base_folder)
    folders = {name: make_adapter(float_base, tmp_path / name, seed, scaling=3000.0)
               for seed, name in enumerate(["a", "b"])}
    serve = ff.MixedAdapters(load_4bit(base_folder)[0], folders)
    serve.model.eval()
    batch = {"input_ids": torch.randint(1, 500, (3, 6), generator=torch.Generator().manual_seed(0))}
    names = ["a", ff.BASE, "b"]
    mixed = serve(**batch, adapter_names=names).logits
    with torch.no_grad():
        for row, name in enumerate(names):
            model = load_4bit(base_folder)[0]
            if name != ff.BASE:
                model = ff.load_adapter(model, folders[name])
            model.eval()
            assert rel_err(mixed[row], model(**batch).logits[row]) < 1e-5, name
    assert rel_err(mixed[0], mixed[2]) > 1e-3


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("saved_in", [torch.float32, torch.bfloat16])
def test_any_dtype_serves_each_row_as_its_adapter_alone_in_that_dtype(tmp_path, dtype, tolerance, saved_in):
    # an adapter with a head, saved from a model in one dtype, served on a base in another (and the same)
    bert = build("bert")
    folders = {}
    for i, name in enumerate(["a", "b"]):
        model = ff.apply_fourierft(copy.deepcopy(bert).to(saved_in),
                                   ff.FourierFTConfig(n=10, scaling=40.0, modules_to_save=["classifier"]))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, layer in ff.fourierft_layers(model):
                layer.coefficients.copy_(torch.randn(layer.coefficients.shape, generator=g))
            for p in model.classifier.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype))
        ff.save_adapter(model, tmp_path / name)
        folders[name] = tmp_path / name
    serve = ff.MixedAdapters(copy.deepcopy(bert).to(dtype), folders)
    batch = padded(3, 6, pad_left=False)
    names = ["b", ff.BASE, "a"]
    mixed = serve(**batch, adapter_names=names).logits
    assert mixed.dtype == dtype
    for row, name in enumerate(names):
        single = copy.deepcopy(bert).to(dtype)
        if name != ff.BASE:
            single = ff.load_adapter(single, folders[name])
        with torch.no_grad():
            expected = single.eval()(**{k: v[row:row + 1] for k, v in batch.items()}).logits[0]
        assert rel_err(mixed[row], expected) < tolerance, (name, rel_err(mixed[row], expected))
    n_by_layers = serve.groups[0].bank.shape[1]
    heads = sum(t.numel() * t.element_size() for s in serve.states.values() for k, v in s.items() if k != ff.BASE
                for t in v.values())
    assert serve.resident_bytes() == 2 * n_by_layers * 4 + heads  # the bank stays float32 whatever the base
