"""Mixed-adapter serving: every row of a mixed batch equals its adapter loaded alone (or the base model), on an
encoder with per-adapter heads and another alpha, on LLaMA with grouped-query attention and GPT-2's fused c_attn
through generate with the KV cache and left padding; bad input is named."""
import copy

import pytest
import torch
from serving_helpers import loaded_alone, make_adapter, padded

import fourierft as ff

from helpers import build, rel_err


@pytest.mark.parametrize("strategy", ["auto", "shared", "per_adapter"])
def test_encoder_rows_equal_each_adapter_alone_with_its_own_head_and_alpha(tmp_path, strategy):
    base = build("bert")
    folders = {"a": make_adapter(base, tmp_path / "a", 1, scaling=40.0, head=["classifier"]),
               "b": make_adapter(base, tmp_path / "b", 2, scaling=90.0, head=["classifier"]),
               "c": make_adapter(base, tmp_path / "c", 3, scaling=40.0)}  # no head of its own: the base's
    serve = ff.MixedAdapters(copy.deepcopy(base), folders, strategy=strategy)
    serve.model.eval()
    batch = padded(7, 9, pad_left=False)
    names = ["a", ff.BASE, "b", "a", "c", "b", ff.BASE]
    mixed = serve(**batch, adapter_names=names).logits
    references = {name: loaded_alone(base, folder) for name, folder in folders.items()}
    references[ff.BASE] = base
    worst = 0.0
    with torch.no_grad():
        for row, name in enumerate(names):
            expected = references[name](**batch).logits[row]
            worst = max(worst, rel_err(mixed[row], expected))
    assert worst < 1e-5, worst
    # the heads differ, so the rows of different adapters are really different
    assert rel_err(mixed[0], mixed[2]) > 1e-2 and rel_err(mixed[1], mixed[0]) > 1e-2


@pytest.mark.parametrize("family,fused,beams,strategy", [("llama", None, 1, "auto"),
                                                         ("gpt2", {"c_attn": ["q", "k", "v"]}, 2, "auto"),
                                                         ("gpt2", {"c_attn": ["q", "k", "v"]}, 2, "per_adapter")])
def test_decoder_generate_rows_equal_each_adapter_alone(tmp_path, family, fused, beams, strategy):
    """LLaMA (GQA k/v 24 -> 12) greedy, GPT-2 (q and v slices of the fused c_attn) with two beams: generate with
    the KV cache and left padding, token for token as each adapter alone; the first step's logits within 1e-5."""
    base = build(family)
    folders = {name: make_adapter(base, tmp_path / name, seed, scaling=300.0, fused=fused)
               for seed, name in enumerate(["a", "b", "c"])}
    serve = ff.MixedAdapters(copy.deepcopy(base), folders, strategy=strategy)
    serve.model.eval()
    batch = padded(6, 7, pad_left=True, seed=1)
    names = ["b", "a", ff.BASE, "c", "a", "b"]
    settings = dict(max_new_tokens=6, do_sample=False, num_beams=beams, pad_token_id=0)
    mixed = serve.generate(**batch, adapter_names=names, **settings)
    logits = serve(**batch, adapter_names=names).logits[:, -1]
    references = {name: loaded_alone(base, folder) for name, folder in folders.items()}
    references[ff.BASE] = base
    with torch.no_grad():
        for row, name in enumerate(names):
            expected = references[name].generate(**batch, **settings)[row]
            assert torch.equal(mixed[row], expected), (row, name)
            assert rel_err(logits[row], references[name](**batch).logits[row, -1]) < 1e-5
    assert len({tuple(mixed[i].tolist()) for i in range(len(names))}) > 2  # the adapters really differ


def test_bad_input_is_named(tmp_path):
    base = build("llama")
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1)})
    batch = padded(4, 5, pad_left=True)
    one_per_row = "adapter_names takes a list of one adapter name per batch row"
    # every wrong length, a divisor of the rows (once read as beams) included, for a call and for generate
    for names in (["a"], ["a", "a"], ["a"] * 3, ["a"] * 5, ["a"] * 8, []):
        for call in (serve, serve.generate):
            with pytest.raises(ValueError, match=f"{one_per_row}: got {len(names)} names for a batch of 4 rows"):
                call(**batch, adapter_names=names, max_new_tokens=1) if call is serve.generate else \
                    call(**batch, adapter_names=names)
    for names in (None, "a", 7):
        with pytest.raises(ValueError, match=f"{one_per_row}, got {names!r}"):
            serve(**batch, adapter_names=names)
    # a layer that sees another row count than the names (inputs the batch check cannot see) is refused too
    with pytest.raises(ValueError, match="sees 4 rows for 2 adapter_names: give one name per batch row"):
        with serve.rows(["a", "a"]), torch.no_grad():
            serve.model(**batch)
    with pytest.raises(ValueError, match="already loaded"):
        serve.add("a", tmp_path / "a")
    with pytest.raises(ValueError, match="other than 'base'"):
        serve.add(ff.BASE, tmp_path / "a")
    bert = make_adapter(build("bert"), tmp_path / "bert", 1)
    with pytest.raises(ValueError, match="saved for a BertForSequenceClassification, not a LlamaForCausalLM"):
        serve.add("bert", bert)
    with pytest.raises(ValueError, match="already has FourierFT layers"):
        ff.MixedAdapters(serve.model)
    # serving leaves no per-row state behind, and outside serve() the model is the base model
    assert all(layer.requests is None for layer in serve.layers.values())
    with torch.no_grad():
        torch.testing.assert_close(serve.model(**batch).logits, base(**batch).logits, rtol=1e-6, atol=1e-6)


def test_a_head_of_another_shape_is_refused(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    base = build("bert")  # 3 labels
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1, head=["classifier"])})
    torch.manual_seed(0)
    two_labels = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=24, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=40, num_labels=2))
    served = [n for n, m in serve.model.named_modules() if isinstance(m, ff.serving.ServedLayer)]
    # b also trains the pooler (which fits) and has entries of its own: a refusal leaves none of it behind
    with pytest.raises(ValueError, match=r"trained classifier with shapes .*\[2, 24\], \[3, 24\].*another number of"):
        serve.add("b", make_adapter(two_labels, tmp_path / "b", 2, head=["bert.pooler", "classifier"], entry_seed=7))
    assert serve.names == [ff.BASE, "a"] and len(serve.groups) == 1
    assert list(serve.modules) == ["classifier"] and list(serve.states) == ["classifier"]
    assert [n for n, m in serve.model.named_modules() if isinstance(m, ff.serving.ServedLayer)] == served


def test_peft_fourierft_folders_are_served_as_peft_runs_them(tmp_path):
    """PEFT FourierFT adapters (saved by PEFT, with trained heads) served in one batch beside one of ours with the
    same seed and n: each row equals PEFT's own model; ours and PEFT's share one group."""
    from peft import FourierFTConfig, get_peft_model

    base = build("bert")
    peft_models = {}
    for seed, name in ((1, "p1"), (2, "p2")):
        model = get_peft_model(copy.deepcopy(base), FourierFTConfig(
            n_frequency=10, scaling=50.0 * seed, random_loc_seed=2024, target_modules=["query", "value"],
            modules_to_save=["classifier"]))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "fourierft_spectrum" in pname or "modules_to_save" in pname:
                    p.copy_(torch.randn(p.shape, generator=g))
        model.save_pretrained(tmp_path / name)
        peft_models[name] = model.eval()
    ours = make_adapter(base, tmp_path / "ours", 3, entry_seed=2024, head=["classifier"])
    serve = ff.MixedAdapters(copy.deepcopy(base), {"p1": tmp_path / "p1", "ours": ours, "p2": tmp_path / "p2"})
    serve.model.eval()
    assert len(serve.groups) == 1
    batch = padded(5, 8, pad_left=False, seed=3)
    names = ["p2", "ours", ff.BASE, "p1", "p2"]
    mixed = serve(**batch, adapter_names=names).logits
    references = {**peft_models, "ours": loaded_alone(base, ours), ff.BASE: base}
    with torch.no_grad():
        for row, name in enumerate(names):
            assert rel_err(mixed[row], references[name](**batch).logits[row]) < 1e-5, name
    assert rel_err(mixed[0], mixed[3]) > 1e-2
    # a diverged PEFT adapter is refused, as a diverged adapter of ours is
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "p1" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    next(t for k, t in tensors.items() if "spectrum" in k)[0] = float("nan")
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="holds NaN or inf in .*fourierft_spectrum.*diverged"):
        serve.add("nan", tmp_path / "p1")


def test_bias_trained_inside_an_adapted_layer_and_unknown_strategies_are_refused(tmp_path):
    base = build("llama")
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1)})
    with pytest.raises(ValueError, match="strategy 'fast' is not one of"):
        ff.MixedAdapters(copy.deepcopy(base), strategy="fast")
    bert = build("bert")
    serve = ff.MixedAdapters(copy.deepcopy(bert))
    with pytest.raises(ValueError, match=r"trains .*query.base_layer.bias inside an adapted layer \(bias='all'\)"):
        serve.add("b", make_adapter(bert, tmp_path / "b", 1, bias="all"))
    assert serve.names == [ff.BASE] and not serve.groups


def test_calls_from_many_threads_never_mix_rows(tmp_path):
    import random
    from concurrent.futures import ThreadPoolExecutor

    base = build("llama")
    names = ["a", "b", "c", "d"]
    serve = ff.MixedAdapters(copy.deepcopy(base), {n: make_adapter(base, tmp_path / n, i) for i, n in enumerate(names)})
    rng = random.Random(0)
    calls = []
    for i in range(48):  # different orders, batch sizes and lengths, the base model among them
        rows = rng.randint(1, 4)
        calls.append(([rng.choice(names + [ff.BASE]) for _ in range(rows)], padded(rows, rng.randint(3, 7), True, i)))
    expected = [serve(**batch, adapter_names=order).logits for order, batch in calls]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda call: serve(**call[1], adapter_names=call[0]).logits, calls))
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_add_and_remove_wait_for_the_call_in_progress(tmp_path):
    import threading

    base = build("llama")
    serve = ff.MixedAdapters(copy.deepcopy(base), {"a": make_adapter(base, tmp_path / "a", 1)})
    other = make_adapter(base, tmp_path / "b", 2)
    batch = padded(2, 5, pad_left=True)
    expected = serve(**batch, adapter_names=["a", "a"]).logits
    inside, done = threading.Event(), []

    def remove_while_serving():
        inside.wait()
        serve.remove("a")
        serve.add("b", other)
        done.append(True)

    worker = threading.Thread(target=remove_while_serving)
    worker.start()
    with serve.rows(["a", "a"]), torch.no_grad():
        inside.set()
        worker.join(timeout=0.5)
        assert not done  # still waiting: the call in progress keeps its adapters
        got = serve.model(**batch).logits
    worker.join(timeout=10)
    assert done and torch.equal(got, expected) and serve.names == [ff.BASE, "b"]
