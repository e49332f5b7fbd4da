"""Mixed-adapter serving: every row of a mixed batch equals its adapter loaded alone (or the base model), on an
encoder with per-adapter heads and another alpha, on LLaMA with grouped-query attention and GPT-2's fused c_attn
through generate with the KV cache and left padding; bad input is named."""
import copy

import pytest
import torch

import fourierft as ff

from helpers import build, rel_err


def make_adapter(base, folder, seed, scaling=40.0, entry_seed=2024, head=None, fused=None, n=10):
    model = copy.deepcopy(base)
    config = ff.FourierFTConfig(n=n, scaling=scaling, entry_seed=entry_seed, modules_to_save=head or [],
                                fused=fused or {})
    model = ff.apply_fourierft(model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in ff.fourierft_layers(model):
            layer.coefficients.copy_(torch.randn(layer.coefficients.shape, generator=g))
        for module in head or []:
            for p in model.get_submodule(module).parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    ff.save_adapter(model, folder)
    return folder


def alone(base, folder):
    model = ff.load_adapter(copy.deepcopy(base), folder)
    model.eval()
    return model


def padded(batch, seq, pad_left, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    for row in range(batch):
        cut = row % 3  # rows of three lengths
        if cut:
            if pad_left:
                ids[row, :cut], mask[row, :cut] = 0, 0
            else:
                ids[row, -cut:], mask[row, -cut:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("path", ["auto", "spectral"])  # auto: one group per adapter here; spectral: per-row
def test_encoder_rows_equal_each_adapter_alone_with_its_own_head_and_alpha(tmp_path, path):
    base = build("bert")
    folders = {"a": make_adapter(base, tmp_path / "a", 1, scaling=40.0, head=["classifier"]),
               "b": make_adapter(base, tmp_path / "b", 2, scaling=90.0, head=["classifier"]),
               "c": make_adapter(base, tmp_path / "c", 3, scaling=40.0)}  # no head of its own: the base's
    serve = ff.MixedAdapters(copy.deepcopy(base), folders)
    serve.model.eval()
    ff.set_path(serve.model, path)
    batch = padded(7, 9, pad_left=False)
    names = ["a", ff.BASE, "b", "a", "c", "b", ff.BASE]
    mixed = serve(**batch, adapter_names=names).logits
    references = {name: alone(base, folder) for name, folder in folders.items()}
    references[ff.BASE] = base
    worst = 0.0
    with torch.no_grad():
        for row, name in enumerate(names):
            expected = references[name](**batch).logits[row]
            worst = max(worst, rel_err(mixed[row], expected))
    assert worst < 1e-5, worst
    # the heads differ, so the rows of different adapters are really different
    assert rel_err(mixed[0], mixed[2]) > 1e-2 and rel_err(mixed[1], mixed[0]) > 1e-2


@pytest.mark.parametrize("family,fused,beams", [("llama", None, 1), ("gpt2", {"c_attn": ["q", "k", "v"]}, 2)])
def test_decoder_generate_rows_equal_each_adapter_alone(tmp_path, family, fused, beams):
    """LLaMA (GQA k/v 24 -> 12) greedy, GPT-2 (q and v slices of the fused c_attn) with two beams: generate with
    the KV cache and left padding, token for token as each adapter alone; the first step's logits within 1e-5."""
    base = build(family)
    folders = {name: make_adapter(base, tmp_path / name, seed, scaling=300.0, fused=fused)
               for seed, name in enumerate(["a", "b", "c"])}
    serve = ff.MixedAdapters(copy.deepcopy(base), folders)
    serve.model.eval()
    batch = padded(6, 7, pad_left=True, seed=1)
    names = ["b", "a", ff.BASE, "c", "a", "b"]
    settings = dict(max_new_tokens=6, do_sample=False, num_beams=beams, pad_token_id=0)
    mixed = serve.generate(**batch, adapter_names=names, **settings)
    logits = serve(**batch, adapter_names=names).logits[:, -1]
    references = {name: alone(base, folder) for name, folder in folders.items()}
    references[ff.BASE] = base
    with torch.no_grad():
        for row, name in enumerate(names):
            expected = references[name].generate(**batch, **settings)[row]
            assert torch.equal(mixed[row], expected), (row, name)
            assert rel_err(logits[row], references[name](**batch).logits[row, -1]) < 1e-5
    assert len({tuple(mixed[i].tolist()) for i in range(len(names))}) > 2  # the adapters really differ


def test_adapters_come_and_go_while_serving_and_cost_n_by_layers_floats(tmp_path):
    base = build("llama")
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1, n=16)})
    layers = len(serve.layers)
    assert serve.resident_bytes() == 16 * layers * 4
    serve.add("b", make_adapter(base, tmp_path / "b", 2, n=16))
    assert serve.resident_bytes() == 2 * 16 * layers * 4
    batch = padded(2, 5, pad_left=True)
    before = serve(**batch, adapter_names=["a", "b"]).logits
    serve.remove("a")
    with pytest.raises(KeyError, match=r"adapter_names \['a'\] are not loaded \(loaded: \['b'\]"):
        serve(**batch, adapter_names=["a", "b"])
    after = serve(**batch, adapter_names=[ff.BASE, "b"]).logits
    torch.testing.assert_close(after[1], before[1], rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(after[0], base(**batch).logits[0], rtol=1e-5, atol=1e-5)


def test_bad_input_is_named(tmp_path):
    base = build("llama")
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1)})
    batch = padded(2, 5, pad_left=True)
    with pytest.raises(ValueError, match="sees 2 rows for 3 adapter_names"):
        serve(**batch, adapter_names=["a", "a", "a"])
    with pytest.raises(TypeError, match="one name per batch row"):
        serve(**batch, adapter_names="a")
    with pytest.raises(ValueError, match="already loaded"):
        serve.add("a", tmp_path / "a")
    with pytest.raises(ValueError, match="other than 'base'"):
        serve.add(ff.BASE, tmp_path / "a")
    other_entries = make_adapter(base, tmp_path / "seed", 2, entry_seed=7)
    with pytest.raises(ValueError, match="other spectral entries than the served adapters"):
        serve.add("s", other_entries)
    bert = make_adapter(build("bert"), tmp_path / "bert", 1)
    with pytest.raises(ValueError, match="saved for a BertForSequenceClassification, not a LlamaForCausalLM"):
        serve.add("bert", bert)
    with pytest.raises(ValueError, match="already has FourierFT layers"):
        ff.MixedAdapters(serve.model)
    # serving leaves no per-row state behind, and outside serve() the model is the base model
    assert all(layer.row_coefficients is None for layer in serve.layers.values())
    with torch.no_grad():
        torch.testing.assert_close(serve.model(**batch).logits, base(**batch).logits, rtol=1e-6, atol=1e-6)


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


def test_a_head_of_another_shape_is_refused(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    base = build("bert")  # 3 labels
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1, head=["classifier"])})
    torch.manual_seed(0)
    two_labels = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=40, num_labels=2))
    with pytest.raises(ValueError, match=r"trained classifier with shapes .*\[2, 24\], \[3, 24\].*another number of"):
        serve.add("b", make_adapter(two_labels, tmp_path / "b", 2, head=["classifier"]))
    assert serve.names == [ff.BASE, "a"]
