"""What the server tests share: a tiny LLaMA with a chat template and adapters a-e, the server started on a free port
and stopped, the openai client, and the reference answer (the adapter loaded alone, greedy generate)."""
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch

import fourierft as ff

from helpers import ROOT, tiny_llama_folder

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
NAMES = ["a", "b", "c", "d"]
PROMPTS = ["hello world", "the cat sat on", "x y z", "once upon a time", "FourierFT is", "one two"]


def adapters(base_folder, folder):
    from transformers import AutoModelForCausalLM

    made = {}
    for i, name in enumerate(NAMES + ["e"]):
        model = ff.apply_fourierft(AutoModelForCausalLM.from_pretrained(base_folder),
                                   ff.FourierFTConfig(n=40, scaling=3000.0))  # strong: each adapter answers its own
        with torch.no_grad():
            for _, layer in ff.fourierft_layers(model):
                layer.coefficients.normal_(generator=torch.Generator().manual_seed(i))
        ff.save_adapter(model, folder / name)
        made[name] = folder / name
    return made


def start(tmp, *options, env=None, context=64):
    """The server on a free port over a tiny LLaMA (with a chat template and a `context`-token position table) and
    adapters a-d: (url, process, base, adapter folders). `env`: more environment variables for it."""
    base = tiny_llama_folder(tmp / "tiny-llama", context)
    config = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    folders = adapters(base, tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "fourierft.serving.server", "--base", str(base), "--port", str(port), *options,
            *(f"--adapter={n}={folders[n]}" for n in NAMES)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2)
            break
        except urllib.error.HTTPError:  # it answered (401 where a key is needed): it is up
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {proc.stdout.read()[-3000:]}")
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("the server did not answer within 180 s")
    return url, proc, base, folders


def stop(proc):
    proc.send_signal(signal.SIGTERM)  # the server deletes its application and the Ray instance it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def client(url, key="unused"):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def alone(base, folder, prompt_ids, max_tokens):
    """The adapter (or the base model, folder None) loaded alone, greedy generate, the new text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    if folder is not None:
        model = ff.load_adapter(model, folder)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True)


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


def loaded_alone(base, folder):
    """A copy of `base` with the adapter in `folder` loaded alone, for eval."""
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

