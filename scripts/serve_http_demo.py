"""The OpenAI-compatible server on the offline default, end to end: SmolLM2-135M-Instruct with the committed demo
adapters (the instruction-tuned ones and the E2E ones), started on a free port, queried by the official `openai`
client with concurrent requests over every adapter and the base model, each greedy answer checked against that
adapter loaded alone; then stopped.

python -m scripts.serve_http_demo [--results results/demo] [--requests 24] [--max-tokens 12]
`--keep` leaves the server running (Ctrl-C stops it): the command to serve the demo adapters for your own client.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import fourierft as ff
from experiments.shared.backbones import smollm2_folder

# E2E meaning representations go to /v1/completions, questions to /v1/chat/completions (SmolLM2's chat template)
PROMPTS = ["Give three tips for staying healthy.", "name[The Eagle], eatType[coffee shop], food[French]",
           "What is the capital of France?", "name[Zizzi], eatType[pub], area[riverside]"]


def is_chat(prompt: str) -> bool:
    return not prompt.startswith("name[")


def demo_adapters(results: Path) -> dict[str, Path]:
    found = {}
    for family in ("instruct", "e2e"):
        for folder in sorted(results.glob(f"{family}/smollm2/*/fourierft-*/adapter")):
            found[f"{family}-{folder.parent.name.split('-', 1)[1]}"] = folder
    if not found:
        raise SystemExit(f"no SmolLM2 FourierFT adapters under {results}/instruct or {results}/e2e: run make "
                         "demo-instruct / demo-e2e, or pass --results results/demo (the committed ones)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(base: Path, adapters: dict, port: int, keep: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "fourierft.serving.server", "--base", str(base), "--name", "smollm2",
            "--port", str(port), *(f"--adapter={name}={folder}" for name, folder in adapters.items())]
    print("$", " ".join(args), flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    if keep:
        os.execve(sys.executable, args, env)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server exited before it answered: run the command above to see why") from None
            time.sleep(1)
    proc.kill()
    raise SystemExit("the server did not answer within 300 s")


def alone(base: Path, folder, prompt: str, max_tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if folder is not None:
        model = ff.load_adapter(model, folder)
    if is_chat(prompt):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        ids = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
    else:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def main(argv=None) -> int:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--port", type=int, default=None, help="default: 8000 with --keep, else a free port")
    args = parser.parse_args(argv)
    adapters = demo_adapters(args.results)
    base = smollm2_folder()
    port = args.port or (8000 if args.keep else free_port())
    proc = start(base, adapters, port, args.keep)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
        models = [m.id for m in client.models.list().data]
        requests = [(models[i % len(models)], PROMPTS[i % len(PROMPTS)]) for i in range(args.requests)]
        started = time.perf_counter()
        def ask(request):
            model, prompt = request
            if is_chat(prompt):
                answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                        max_tokens=args.max_tokens, temperature=0)
                return answer.choices[0].message.content
            return client.completions.create(model=model, prompt=prompt, max_tokens=args.max_tokens,
                                             temperature=0).choices[0].text

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(ask, requests))
        elapsed = time.perf_counter() - started
        stats = urllib.request.urlopen(f"http://127.0.0.1:{port}/stats").read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    expected = {r: alone(base, adapters.get(r[0]), r[1], args.max_tokens) for r in set(requests)}
    wrong = 0
    for request, answer in zip(requests, answers):
        same = answer == expected[request]
        wrong += not same
        print(f"{'ok  ' if same else 'DIFF'} {request[0]:<22} {request[1][:40]!r:<44} -> {answer!r}")
    print(f"{len(requests)} concurrent requests over {len(models) - 1} adapters and the base model in "
          f"{elapsed:.1f} s; rows per decode step: {stats}")
    print(f"{len(requests) - wrong} of {len(requests)} answers equal their adapter alone's greedy generate")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
