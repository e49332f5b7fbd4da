"""Continuous batching (fourierft/serving/scheduler.py): requests that join a running batch at different steps, each
with its adapter, answer exactly as that adapter alone's greedy generate; a request with a seed samples the same text
whatever runs beside it; a cancelled row leaves within a step while the others go on."""
import threading
import time

import pytest

from helpers import tiny_llama_folder

pytest.importorskip("ray.serve")

from serving_helpers import NAMES, PROMPTS, adapters, alone  # noqa: E402


class Collected:
    """A job's items as the decode thread hands them over; `wait()` for its end."""

    def __init__(self):
        self.items, self.ended = [], threading.Event()

    def __call__(self, item):
        self.items.append(item)
        if not isinstance(item, str):
            self.ended.set()

    def wait(self, timeout=120):
        assert self.ended.wait(timeout), "the job did not end"
        return self.items[-1]

    @property
    def text(self):
        return "".join(i if isinstance(i, str) else i[0] for i in self.items)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from transformers import AutoTokenizer

    from fourierft.serving.engine import Engine

    tmp = tmp_path_factory.mktemp("scheduler")
    base = tiny_llama_folder(tmp / "tiny-llama", context=512)
    folders = adapters(base, tmp)
    engine = Engine(str(base), {n: folders[n] for n in NAMES}, max_rows=8)
    return engine, base, folders, AutoTokenizer.from_pretrained(base)


def test_requests_joining_a_running_batch_answer_as_each_adapter_alone(served):
    engine, base, folders, tokenizer = served
    models = NAMES + [engine.name]
    requests = [(models[i % 5], PROMPTS[i % len(PROMPTS)], 3 + 5 * (i % 4)) for i in range(12)]
    sinks = []
    for i, (model, prompt, max_tokens) in enumerate(requests):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        sink = Collected()
        engine.submit(engine.job(model, ids, max_tokens=max_tokens, temperature=0), sink)
        sinks.append((sink, model, ids, max_tokens))
        if i % 3 == 2:
            time.sleep(0.05)  # later requests join a batch already decoding
    for sink, model, ids, max_tokens in sinks:
        _, output = sink.wait()
        assert sink.text == output.text == alone(base, folders.get(model), ids, max_tokens), model
        assert output.finish_reason in ("length", "stop")
    assert max(engine.scheduler.steps) > 1 and engine.pinned == {}


def test_a_seed_samples_the_same_text_whatever_runs_beside_it(served):
    engine, base, folders, tokenizer = served
    ids = tokenizer("once upon a time", add_special_tokens=False)["input_ids"]
    texts = []
    for company in (0, 3):
        neighbours = [Collected() for _ in range(company)]
        for n in neighbours:
            engine.submit(engine.job("b", ids, max_tokens=20, temperature=1.0), n)
        sink = Collected()
        engine.submit(engine.job("a", ids, max_tokens=20, temperature=0.9, top_p=0.8, seed=7), sink)
        sink.wait()
        texts.append(sink.text)
        for n in neighbours:
            n.wait()
    assert texts[0] == texts[1] and texts[0]


def test_a_cancelled_row_leaves_within_a_step(served):
    engine, base, folders, tokenizer = served
    ids = tokenizer("the cat sat on", add_special_tokens=False)["input_ids"]
    leaving, staying = engine.job("a", ids, max_tokens=400, temperature=0), engine.job("c", ids, max_tokens=400,
                                                                                         temperature=0)
    gone, kept = Collected(), Collected()
    engine.submit(leaving, gone)
    engine.submit(staying, kept)
    while len(gone.items) < 3:
        time.sleep(0.001)
    leaving.cancelled = True
    _, output = gone.wait()
    assert output.finish_reason == "cancelled" and output.tokens <= 6
    _, output = kept.wait()
    assert output.tokens == 400 and output.finish_reason == "length"
    assert kept.text == alone(base, folders["c"], ids, 400)


def test_in_bf16_each_row_answers_as_its_adapter_alone_in_bf16(tmp_path):
    """The scheduler on a bf16 model (its KV cache and padding in bf16): rows of two adapters and the base model, sent
    together, each equal that adapter alone's greedy generate in bf16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import fourierft as ff
    from fourierft.serving.engine import Engine

    base = tiny_llama_folder(tmp_path / "tiny-llama")
    folders = adapters(base, tmp_path)
    engine = Engine(str(base), {n: folders[n] for n in NAMES[:2]}, dtype="bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(base)
    sinks = []
    for model, prompt in zip(["a", engine.name, "b"], ["the cat sat on", "hello world", "x y z"]):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        sink = Collected()
        engine.submit(engine.job(model, ids, max_tokens=5, temperature=0), sink)
        sinks.append((sink, model, ids))
    for sink, model, ids in sinks:
        sink.wait()
        reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).eval()
        if model != engine.name:
            reference = ff.load_adapter(reference, folders[model])
        with torch.no_grad():
            out = reference.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False,
                                     pad_token_id=tokenizer.eos_token_id)
        assert sink.text == tokenizer.decode(out[0, len(ids):], skip_special_tokens=True), model
