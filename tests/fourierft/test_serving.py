"""Mixed-adapter serving: every row of a mixed batch equals its adapter loaded alone (or the base model), on an
encoder with per-adapter heads and another alpha, on LLaMA with grouped-query attention and GPT-2's fused c_attn
through generate with the KV cache and left padding; bad input is named."""
import copy

import pytest
import torch

import fourierft as ff

from helpers import build, rel_err


def make_adapter(base, folder, seed, scaling=40.0, entry_seed=2024, head=None, fused=None, n=10, **options):
    model = copy.deepcopy(base)
    config = ff.FourierFTConfig(n=n, scaling=scaling, entry_seed=entry_seed, modules_to_save=head or [],
                                fused=fused or {}, **options)
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
    served = [n for n, m in serve.model.named_modules() if isinstance(m, ff.serving.ServedLayer)]
    # b also trains the pooler (which fits) and has entries of its own: a refusal leaves none of it behind
    with pytest.raises(ValueError, match=r"trained classifier with shapes .*\[2, 24\], \[3, 24\].*another number of"):
        serve.add("b", make_adapter(two_labels, tmp_path / "b", 2, head=["bert.pooler", "classifier"], entry_seed=7))
    assert serve.names == [ff.BASE, "a"] and len(serve.groups) == 1
    assert list(serve.modules) == ["classifier"] and list(serve.states) == ["classifier"]
    assert [n for n, m in serve.model.named_modules() if isinstance(m, ff.serving.ServedLayer)] == served


def test_adapters_with_other_entries_n_basis_or_targets_are_grouped_in_one_batch(tmp_path):
    """Five adapters in four groups (another entry seed, another n with another alpha, the random-basis ablation,
    q_proj only) and base rows, through generate with the KV cache: each row as its adapter alone."""
    base = build("llama")
    folders = {"a": make_adapter(base, tmp_path / "a", 1, scaling=300.0),
               "a2": make_adapter(base, tmp_path / "a2", 2, scaling=300.0),  # a's group
               "seed": make_adapter(base, tmp_path / "seed", 3, scaling=300.0, entry_seed=7),
               "n": make_adapter(base, tmp_path / "n", 4, scaling=120.0, n=24),
               "basis": make_adapter(base, tmp_path / "basis", 5, scaling=3.0, basis="random"),
               "q": make_adapter(base, tmp_path / "q", 6, scaling=300.0, target_modules=["q_proj"])}
    serve = ff.MixedAdapters(copy.deepcopy(base), folders)
    serve.model.eval()
    assert len(serve.groups) == 5 and serve.where["a"][0] is serve.where["a2"][0]
    batch = padded(7, 6, pad_left=True, seed=2)
    names = ["seed", "a", "basis", ff.BASE, "n", "q", "a2"]
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    mixed = serve.generate(**batch, adapter_names=names, **settings)
    logits = serve(**batch, adapter_names=names).logits
    references = {name: alone(base, folder) for name, folder in folders.items()}
    references[ff.BASE] = base
    with torch.no_grad():
        for row, name in enumerate(names):
            assert rel_err(logits[row], references[name](**batch).logits[row]) < 1e-5, name
            assert torch.equal(mixed[row], references[name].generate(**batch, **settings)[row]), name
    assert len({tuple(mixed[i].tolist()) for i in range(len(names))}) > 3
    # a group's last adapter gone: its group goes, and a layer no group adapts is the plain module again
    serve.remove("q")
    serve.remove("basis")
    assert len(serve.groups) == 3
    serve.remove("a")  # a2 keeps the group
    assert len(serve.groups) == 3
    for name in ("seed", "n", "a2"):
        serve.remove(name)
    assert not serve.groups and not serve.layers
    assert not any(isinstance(m, ff.serving.ServedLayer) for m in serve.model.modules())


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
    references = {**peft_models, "ours": alone(base, ours), ff.BASE: base}
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
