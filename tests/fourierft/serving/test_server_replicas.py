"""The same server with two replicas on a local Ray cluster (its own module: the single-replica server of
test_server.py is stopped by then, and two Ray instances never share the cores)."""
import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("openai")
pytest.importorskip("ray.serve")

from serving_helpers import NAMES, PROMPTS, alone, client, start, stop  # noqa: E402


def test_two_replicas_on_a_local_cluster_serve_the_same_answers(tmp_path):
    from transformers import AutoTokenizer

    url, proc, base, folders = start(tmp_path, "--replicas", "2", "--num-cpus", "0.5")
    try:
        requests = [(NAMES[i % 4], PROMPTS[i % len(PROMPTS)]) for i in range(12)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda r: client(url).completions.create(
                model=r[0], prompt=r[1], max_tokens=4, temperature=0).choices[0].text, requests))
        # the server answers once one replica is up; the other may still be loading the model on a busy machine (one
        # CI run saw one replica through 320 requests in a second): ask in rounds, many at once (Ray's router picks
        # a replica per request), until both answered or three minutes passed
        replicas, deadline = set(), time.monotonic() + 180
        with ThreadPoolExecutor(16) as pool:
            while len(replicas) < 2 and time.monotonic() < deadline:
                replicas |= set(pool.map(lambda _: json.loads(urllib.request.urlopen(f"{url}/stats").read())[
                    "replica"], range(32)))
                time.sleep(1)
    finally:
        stop(proc)
    tokenizer = AutoTokenizer.from_pretrained(base)
    for (model, prompt), answer in zip(requests, answers):
        assert answer == alone(base, folders[model], tokenizer(prompt, add_special_tokens=False)["input_ids"], 4)
    assert len(replicas) == 2  # both replicas answered
