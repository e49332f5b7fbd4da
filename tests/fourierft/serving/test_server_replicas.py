"""The same server with two replicas on a local Ray cluster, locked with an API key (its own module: the
single-replica server of test_server.py is stopped by then, and two Ray instances never share the cores)."""
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("ray.serve")

from serving_helpers import NAMES, PROMPTS, alone, client, start, stop  # noqa: E402

KEY = "sk-test-4f1c"
ROUTES = [("GET", "/v1/models"), ("GET", "/health"), ("GET", "/stats"), ("GET", "/docs"), ("GET", "/openapi.json"),
          ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("POST", "/v1/load_lora_adapter"),
          ("POST", "/v1/unload_lora_adapter")]


def status(url, method, path, key=None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key is not None else {})}
    data = json.dumps({"model": "a", "prompt": "hi", "max_tokens": 1}).encode() if method == "POST" else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data=data, method=method, headers=headers)) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_two_replicas_on_a_local_cluster_serve_the_same_answers_to_their_key_holder_only(tmp_path):
    from transformers import AutoTokenizer

    url, proc, base, folders = start(tmp_path, "--replicas", "2", "--num-cpus", "0.5", env={"FOURIERFT_API_KEY": KEY})
    try:
        for method, path in ROUTES:  # no route answers without the key, nor with a wrong one
            assert status(url, method, path) == 401, (method, path)
            assert status(url, method, path, "sk-wrong") == 401, (method, path)
        assert status(url, "GET", "/health", KEY) == 200 and status(url, "GET", "/docs", KEY) == 200
        with pytest.raises(openai.AuthenticationError):
            client(url).models.list()
        requests = [(NAMES[i % 4], PROMPTS[i % len(PROMPTS)]) for i in range(12)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda r: client(url, KEY).completions.create(
                model=r[0], prompt=r[1], max_tokens=4, temperature=0).choices[0].text, requests))
        # the server answers once one replica is up; the other may still be loading the model on a busy machine (one
        # CI run saw one replica through 320 requests in a second): ask in rounds, many at once (Ray's router picks
        # a replica per request), until both answered or three minutes passed
        replicas, deadline = set(), time.monotonic() + 180
        with ThreadPoolExecutor(16) as pool:
            while len(replicas) < 2 and time.monotonic() < deadline:
                replicas |= set(pool.map(lambda _: json.loads(urllib.request.urlopen(urllib.request.Request(
                    f"{url}/stats", headers={"Authorization": f"Bearer {KEY}"})).read())["replica"], range(32)))
                time.sleep(1)
    finally:
        stop(proc)
    tokenizer = AutoTokenizer.from_pretrained(base)
    for (model, prompt), answer in zip(requests, answers):
        assert answer == alone(base, folders[model], tokenizer(prompt, add_special_tokens=False)["input_ids"], 4)
    assert len(replicas) == 2  # both replicas answered
