"""The adapter bank (fourierft/serving/bank.py): adapters come and go while serving at n x layers floats each, and
adapters with other entries, n, basis or targets are grouped into one batch."""
import copy

import pytest
import torch
from serving_helpers import loaded_alone, make_adapter, padded

import fourierft as ff

from helpers import build, rel_err


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
    references = {name: loaded_alone(base, folder) for name, folder in folders.items()}
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
