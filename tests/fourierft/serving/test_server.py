"""The OpenAI-compatible server on Ray Serve, driven by the official `openai` client: concurrent requests over four
adapters and the base model are batched and each greedy answer equals that adapter alone's generate, streaming and
chat included; adapters load and unload at runtime; bad requests get 4xx errors that name the problem. The engine's
memory budget (least recently used adapters evicted, reloaded on demand) is tested without Ray."""
import copy
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import fourierft as ff

from helpers import build

openai = pytest.importorskip("openai")
pytest.importorskip("ray.serve")

from serving_helpers import NAMES, PROMPTS, alone, client, start, stop  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url, proc, base, folders = start(tmp_path_factory.mktemp("server"), "--max-batch-size", "16",
                                     "--batch-wait-ms", "100", "--allow-runtime-loading", "--adapter-root",
                                     str(tmp_path_factory.getbasetemp()), context=1024)
    yield url, base, folders
    stop(proc)


def test_concurrent_requests_are_batched_and_each_equals_its_adapter_alone(server):
    from transformers import AutoTokenizer

    url, base, folders = server
    tokenizer = AutoTokenizer.from_pretrained(base)
    models = NAMES + [base.name]
    requests = [(models[i % 5], PROMPTS[i % len(PROMPTS)], 4 + i % 4) for i in range(40)]

    def ask(request):
        model, prompt, max_tokens = request
        answer = client(url).completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
        return answer.choices[0].text, answer.usage.completion_tokens

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(ask, requests))
    expected = {}
    for model, prompt, max_tokens in set(requests):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        expected[model, prompt, max_tokens] = alone(base, folders.get(model), ids, max_tokens)
    assert [text for text, _ in answers] == [expected[r] for r in requests]
    first = [expected[m, PROMPTS[0], 4] for m in models if (m, PROMPTS[0], 4) in expected]
    assert len(first) == 4 and len(set(first)) >= 3  # the adapters answer differently: a mixed-up row would show
    sizes = json.loads(urllib.request.urlopen(f"{url}/stats").read())["batch_sizes"]
    assert max(int(size) for size in sizes) > 1, sizes  # concurrent requests shared decode steps


def test_streaming_and_chat_equal_the_plain_answer(server):
    from transformers import AutoTokenizer

    url, base, folders = server
    api = client(url)
    plain = api.completions.create(model="b", prompt="hello world", max_tokens=6, temperature=0).choices[0].text
    chunks = list(api.completions.create(model="b", prompt="hello world", max_tokens=6, temperature=0, stream=True,
                                         stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    messages = [{"role": "user", "content": "say something"}]
    chat = api.chat.completions.create(model="c", messages=messages, max_tokens=5, temperature=0)
    ids = AutoTokenizer.from_pretrained(base).apply_chat_template(messages, add_generation_prompt=True,
                                                                  tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert chat.choices[0].message.content == alone(base, folders["c"], ids, 5)
    streamed = api.chat.completions.create(model="c", messages=messages, max_tokens=5, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content
    sampled = api.completions.create(model="a", prompt="hello", max_tokens=5, temperature=0.9, top_p=0.8, seed=3)
    assert sampled.choices[0].finish_reason in ("length", "stop") and sampled.usage.completion_tokens <= 5


def post(url, path, data: bytes, kind="application/json"):
    request = urllib.request.Request(f"{url}{path}", data=data, method="POST", headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_adapters_load_and_unload_at_runtime(server):
    url, base, folders = server
    api = client(url)
    assert post(url, "/v1/load_lora_adapter", json.dumps({"lora_name": "e", "lora_path": str(folders["e"])}).encode()
                )[0] == 200
    assert "e" in [m.id for m in api.models.list().data]
    text = api.completions.create(model="e", prompt="one two", max_tokens=5, temperature=0).choices[0].text
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(base)("one two", add_special_tokens=False)["input_ids"]
    assert text == alone(base, folders["e"], ids, 5)
    assert post(url, "/v1/unload_lora_adapter", json.dumps({"lora_name": "e"}).encode())[0] == 200
    with pytest.raises(openai.NotFoundError, match="model 'e' does not exist"):
        api.completions.create(model="e", prompt="one two", max_tokens=5)


def test_bad_requests_get_4xx_errors_that_name_the_problem(server, tmp_path):
    url, base, folders = server
    api = client(url)
    cases = [
        (openai.NotFoundError, r"model 'gpt-5' does not exist: this server has \['tiny-llama', 'a', 'b', 'c', 'd'",
         dict(model="gpt-5", prompt="hi")),
        (openai.BadRequestError, "the prompt is empty", dict(model="a", prompt="")),
        (openai.BadRequestError, "max_tokens=0: give an integer >= 1", dict(model="a", prompt="hi", max_tokens=0)),
        (openai.BadRequestError, r"max_tokens=100000 does not fit: the prompt has 1 tokens of the model's 1024",
         dict(model="a", prompt="hi", max_tokens=100000)),
        (openai.BadRequestError, "temperature=5: give a number with 0 <= temperature <= 2",
         dict(model="a", prompt="hi", temperature=5)),
        (openai.BadRequestError, r"n=2: this server returns one choice", dict(model="a", prompt="hi", n=2)),
    ]
    for error, message, request in cases:
        with pytest.raises(error, match=message):
            api.completions.create(**request)
    status, answer = post(url, "/v1/completions", b"{not json")
    assert status == 400 and "the request body is not valid JSON" in answer["error"]["message"]
    status, answer = post(url, "/v1/completions", b'{"model": "a", "prompt": "hi"}', kind="text/plain")
    assert status == 400 and "sent with 'Content-Type: application/json'" in answer["error"]["message"]
    bert = build("bert")
    ff.save_adapter(ff.apply_fourierft(copy.deepcopy(bert), ff.FourierFTConfig(n=4)), tmp_path / "bert")
    for request, expected_status, message in [
        ({"lora_name": "x", "lora_path": str(tmp_path / "missing")}, 404, "does not exist"),
        ({"lora_name": "x", "lora_path": str(tmp_path / "bert")}, 400,
         "cannot be served on tiny-llama: adapter .* was saved for a BertForSequenceClassification, not a "
         "LlamaForCausalLM"),
        ({"lora_name": "a", "lora_path": str(folders["a"])}, 409, "an adapter named 'a' is loaded already"),
        ({"lora_name": "", "lora_path": str(folders["a"])}, 400, "give a non-empty name"),
    ]:
        status, answer = post(url, "/v1/load_lora_adapter", json.dumps(request).encode())
        assert status == expected_status, answer
        import re

        assert re.search(message, answer["error"]["message"]), answer
        assert "Traceback" not in answer["error"]["message"]
    status, answer = post(url, "/v1/unload_lora_adapter", b'{"lora_name": "zz"}')
    assert status == 404 and "no adapter named 'zz' is loaded" in answer["error"]["message"]


@pytest.mark.parametrize("option,message", [
    (["--memory-budget-mb", "nan"], "--memory-budget-mb=nan: give a finite number > 0"),
    (["--memory-budget-mb", "0"], "--memory-budget-mb=0.0: give a finite number > 0"),
    (["--batch-wait-ms", "-1"], "--batch-wait-ms=-1.0: give a finite number >= 0"),
    (["--max-batch-size", "0"], "--max-batch-size=0: give an integer >= 1"),
    (["--adapter", "a"], "--adapter 'a': give NAME=FOLDER"),
])
def test_bad_server_options_stop_before_ray_starts(option, message, capsys):
    from fourierft.serving.server import main

    with pytest.raises(SystemExit):
        main(["--base", "unused", *option])
    assert message in capsys.readouterr().err


def test_the_request_models_refuse_what_the_api_cannot_answer(server):
    """FastAPI validates the request models: a field of the wrong type is a 400 naming it; logprobs, which the
    answer would silently lack, is refused; /health answers; the OpenAPI page describes the routes."""
    url, base, folders = server
    api = client(url)
    status, answer = post(url, "/v1/completions", json.dumps({"model": "a", "prompt": "hi", "temperature": "hot"})
                          .encode())
    assert status == 400 and "temperature" in answer["error"]["message"], answer
    status, answer = post(url, "/v1/completions", json.dumps({"model": "a"}).encode())
    assert status == 400 and "prompt" in answer["error"]["message"], answer
    with pytest.raises(openai.BadRequestError, match="does not return log probabilities"):
        api.completions.create(model="a", prompt="hi", max_tokens=2, logprobs=2)
    with pytest.raises(openai.BadRequestError, match="does not return log probabilities"):
        api.chat.completions.create(model="a", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                    logprobs=True)
    assert json.loads(urllib.request.urlopen(f"{url}/health").read()) == {"status": "ok"}
    spec = json.loads(urllib.request.urlopen(f"{url}/openapi.json").read())
    assert {"/v1/completions", "/v1/chat/completions", "/health"} <= set(spec["paths"])
    status, answer = post(url, "/v1/completions", json.dumps({"model": "a", "prompt": "x" * (1 << 21)}).encode())
    assert status == 413 and "over this server's 1,048,576 bytes" in answer["error"]["message"]


def test_runtime_loads_read_only_under_the_adapter_roots(server, tmp_path):
    """A path outside --adapter-root, a link out of it, and `..` are refused before anything is read."""
    import os

    url, base, folders = server
    outside = "/etc"
    link = tmp_path / "link"
    os.symlink(outside, link)
    for path, status, message in [(outside, 403, "lies outside the folders this server may read adapters from"),
                                  (str(link), 403, "lies outside"),
                                  (f"{folders['e']}/../e", 400, "holds '..'")]:
        got, answer = post(url, "/v1/load_lora_adapter", json.dumps({"lora_name": "z", "lora_path": path}).encode())
        assert (got, message in answer["error"]["message"]) == (status, True), answer


def test_a_client_that_leaves_frees_its_row_and_delays_nobody(server):
    """A stream closed after two chunks stops decoding (the engine counts it cancelled) and the next request does
    not wait for the abandoned one's 1,000 tokens: it answers in well under the time those take."""
    import time

    url, base, folders = server
    api = client(url)
    started = time.perf_counter()
    whole = api.completions.create(model="a", prompt="hello", max_tokens=1000, temperature=0)
    long = time.perf_counter() - started
    assert whole.usage.completion_tokens == 1000
    before = json.loads(urllib.request.urlopen(f"{url}/stats").read())["cancellations"]
    stream = api.completions.create(model="b", prompt="hello", max_tokens=1000, temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 1:
            break
    stream.close()
    started = time.perf_counter()
    short = api.completions.create(model="c", prompt="hello", max_tokens=8, temperature=0)
    waited = time.perf_counter() - started
    assert short.usage.completion_tokens == 8 and waited < long / 2, (waited, long)
    stats = json.loads(urllib.request.urlopen(f"{url}/stats").read())
    assert stats["cancellations"] == before + 1 and stats["pinned"] == {}


def test_an_unload_during_a_full_batch_fails_no_other_adapters_request(server):
    """16 requests in flight, 4 for a runtime-loaded adapter: unloading it mid-batch lets its running rows finish
    (or answers 404 for one still waiting) and every other request answers in full."""
    import time

    url, base, folders = server
    assert post(url, "/v1/load_lora_adapter", json.dumps({"lora_name": "e", "lora_path": str(folders["e"])}).encode()
                )[0] == 200
    models = ["e", "a", "b", "c"] * 4

    def ask(model):
        try:
            answer = client(url).completions.create(model=model, prompt="one two", max_tokens=300, temperature=0)
            return model, 200, answer.usage.completion_tokens
        except openai.APIStatusError as e:
            return model, e.status_code, 0

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(ask, m) for m in models]
        time.sleep(0.5)  # the batch is running
        assert post(url, "/v1/unload_lora_adapter", json.dumps({"lora_name": "e"}).encode())[0] == 200
        results = [f.result() for f in futures]
    assert all(status == 200 and tokens == 300 for model, status, tokens in results if model != "e"), results
    assert all(status in (200, 404) for model, status, _ in results if model == "e"), results
    assert "e" not in [m.id for m in client(url).models.list().data]
    stats = json.loads(urllib.request.urlopen(f"{url}/stats").read())
    assert stats["pinned"] == {} and "e" not in stats["resident"]
