"""The serving engine without HTTP (fourierft/serving/engine.py): the memory budget evicts the least recently used
adapter and reloads it on demand; in bf16 each answer equals its adapter alone in bf16."""

import pytest
import torch

import fourierft as ff

from helpers import tiny_llama_folder

pytest.importorskip("ray.serve")

from serving_helpers import NAMES, adapters, alone  # noqa: E402


def test_the_memory_budget_evicts_the_least_recently_used_and_reloads_on_demand(tmp_path):
    from transformers import AutoTokenizer

    from fourierft.serving.engine import Engine

    base = tiny_llama_folder(tmp_path / "tiny-llama")
    folders = adapters(base, tmp_path)
    one = 2 * 2 * 40 * 4  # q and v of two layers, n=40, float32: one adapter's bank row
    engine = Engine(str(base), {n: folders[n] for n in NAMES}, memory_budget_mb=2.5 * one / 2**20)
    assert list(engine.recent) == ["c", "d"] and engine.evictions == 2  # loaded in order, the oldest evicted
    assert engine.serve.resident_bytes() <= 2.5 * one
    ids = AutoTokenizer.from_pretrained(base)("the cat", add_special_tokens=False)["input_ids"]
    for name in ["a", "c", "b"]:  # each evicted one comes back from its folder and answers as before
        [output] = engine.complete([engine.job(name, ids, max_tokens=4, temperature=0)])
        assert output.text == alone(base, folders[name], ids, 4)
    assert list(engine.recent) == ["c", "b"]
    jobs = [engine.job(n, ids, max_tokens=3, temperature=0) for n in NAMES]  # more adapters in one batch than fit
    assert [out.text for out in engine.complete(jobs)] == [alone(base, folders[n], ids, 3) for n in NAMES]


def test_the_engine_in_bf16_answers_as_each_adapter_alone_in_bf16(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fourierft.serving.engine import Engine

    base = tiny_llama_folder(tmp_path / "tiny-llama")
    folders = adapters(base, tmp_path)
    engine = Engine(str(base), {n: folders[n] for n in NAMES[:2]}, dtype="bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = ["the cat sat on", "hello world", "x y z"]
    jobs = [engine.job(model, tokenizer(p, add_special_tokens=False)["input_ids"], max_tokens=5, temperature=0)
            for model, p in zip(["a", "tiny-llama", "b"], prompts)]
    got = [out.text for out in engine.complete(jobs)]
    for job, text in zip(jobs, got):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).eval()
        if job.adapter != ff.BASE:
            model = ff.load_adapter(model, folders[job.adapter])
        with torch.no_grad():
            out = model.generate(torch.tensor([job.prompt_ids]), max_new_tokens=5, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        assert text == tokenizer.decode(out[0, len(job.prompt_ids):], skip_special_tokens=True)


def test_adapters_in_use_are_pinned_and_an_unload_fails_only_its_own_waiting_job(tmp_path):
    """A job pins its adapter from the moment it is checked in: loads beyond the memory budget evict other adapters,
    never it. An adapter unloaded while its job waits fails that job alone (404) in a batch whose other rows answer as
    before, and is removed once nothing needs it."""
    from transformers import AutoTokenizer

    from fourierft.serving.engine import Engine, Failed, RequestError

    base = tiny_llama_folder(tmp_path / "tiny-llama")
    folders = adapters(base, tmp_path)
    one = 2 * 2 * 40 * 4
    engine = Engine(str(base), {"a": folders["a"]}, memory_budget_mb=2.5 * one / 2**20)
    ids = AutoTokenizer.from_pretrained(base)("the cat", add_special_tokens=False)["input_ids"]
    waiting = engine.job("a", ids, max_tokens=3, temperature=0)
    for name in ("b", "c", "d"):  # each load goes over the budget: the oldest unpinned one goes, never "a"
        engine.load(name, folders[name])
    assert "a" in engine.recent and engine.pinned["a"] == 1 and engine.evictions == 2
    [output] = engine.complete([waiting])
    assert output.text == alone(base, folders["a"], ids, 3) and engine.pinned == {}
    queued, other = engine.job("a", ids, max_tokens=3, temperature=0), engine.job("d", ids, max_tokens=3,
                                                                                   temperature=0)
    engine.unload("a")
    assert "a" not in engine.models() and "a" in engine.doomed  # new requests 404; removal waits for its jobs
    with pytest.raises(RequestError, match="'a' does not exist"):
        engine.job("a", ids)
    steps = list(engine.stream([queued, other]))
    assert isinstance(steps[0][0], Failed) and steps[0][0].error.status == 404
    finals = [slot for step in steps for slot in step if isinstance(slot, tuple)]
    assert len(finals) == 1 and finals[0][1].text == alone(base, folders["d"], ids, 3)
    assert engine.pinned == {} and "a" not in engine.doomed and "a" not in engine.recent


def test_a_cancelled_job_stops_at_the_next_step_and_the_others_go_on(tmp_path):
    from transformers import AutoTokenizer

    from fourierft.serving.engine import Engine

    base = tiny_llama_folder(tmp_path / "tiny-llama", context=512)
    folders = adapters(base, tmp_path)
    engine = Engine(str(base), {"a": folders["a"], "b": folders["b"]})
    ids = AutoTokenizer.from_pretrained(base)("the cat", add_special_tokens=False)["input_ids"]
    leaving, staying = (engine.job(n, ids, max_tokens=400, temperature=0) for n in ("a", "b"))
    steps = engine.stream([leaving, staying])
    for _ in range(3):
        next(steps)
    leaving.cancelled = True
    rest = list(steps)
    [(_, left)] = [slot[0] for slot in rest[:2] if isinstance(slot[0], tuple)]
    assert left.finish_reason == "cancelled" and left.tokens <= 4 and engine.cancellations == 1
    [(_, stayed)] = [step[1] for step in rest if isinstance(step[1], tuple)]
    assert stayed.tokens == 400 and stayed.finish_reason == "length"
    alone_leaving = engine.job("a", ids, max_tokens=400, temperature=0)
    steps = engine.stream([alone_leaving])
    next(steps)
    alone_leaving.cancelled = True
    assert len(list(steps)) <= 2  # alone, the generate call itself ends at once
