"""The same server with two replicas on a local Ray cluster (its own module: the single-replica server of
test_server.py is stopped by then, and two Ray instances never share the cores)."""
import json
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
        replicas = set()
        with ThreadPoolExecutor(16) as pool:
            for _ in range(10):  # Ray's router picks a replica per request: ask, many at once, until both answered
                replicas |= set(pool.map(lambda _: json.loads(urllib.request.urlopen(f"{url}/stats").read())[
                    "replica"], range(32)))
                if len(replicas) == 2:
                    break
    finally:
        stop(proc)
    tokenizer = AutoTokenizer.from_pretrained(base)
    for (model, prompt), answer in zip(requests, answers):
        assert answer == alone(base, folders[model], tokenizer(prompt, add_special_tokens=False)["input_ids"], 4)
    assert len(replicas) == 2  # both replicas answered
