"""MT-Bench / Vicuna single-answer grading as FastChat's llm_judge does it, with a pluggable judge:
any OpenAI-compatible chat endpoint, or a local Hugging Face model."""
from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..shared.causal import load_causal_lm
from ..shared.prompts import encode_conversation

NEED_REF_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")  # FastChat's list
SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def parse_rating(judgment: str) -> float:
    """FastChat's parse: [[x]], else [x]; -1 when the judge gave no rating."""
    match = SCORE.search(judgment) or SCORE_BACKUP.search(judgment)
    return float(match.group(1)) if match else -1.0


def load_prompts(bench_dir: Path) -> dict:
    with open(bench_dir / "judge_prompts.jsonl") as f:
        return {p["name"]: p for p in map(json.loads, f)}


def judge_messages(prompts: dict, question: dict, answers: list[str], turn: int, reference=None) -> list[dict]:
    """The chat messages FastChat sends the judge for one answer turn (1 or 2)."""
    needs_ref = question["category"] in NEED_REF_CATEGORIES and reference is not None
    name = ("single-math-v1" if needs_ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
    prompt = prompts[name]
    fields = {}
    if turn == 1:
        fields.update(question=question["turns"][0], answer=answers[0])
    else:
        fields.update(question_1=question["turns"][0], question_2=question["turns"][1],
                      answer_1=answers[0], answer_2=answers[1])
    if needs_ref:
        fields["ref_answer_1"] = reference[0]
        if turn == 2:
            fields["ref_answer_2"] = reference[1]
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)}]


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIJudge:
    """Chat completions at base_url (OpenAI, vLLM, llama.cpp server, ...), temperature 0 as FastChat."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 max_tokens: int = 2048, retries: int = 5, backoff: float = 2.0, allow_insecure_http: bool = False):
        if not base_url or not model:
            raise ValueError("judge=openai needs judge.base_url and judge.model (or OPENAI_BASE_URL / JUDGE_MODEL)")
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"judge.base_url={base_url!r} is not an http(s) URL (e.g. https://api.openai.com/v1)")
        if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
            raise ValueError(f"judge.base_url={base_url!r} is plain http to another machine: the API key and the "
                             "answers would cross the network unencrypted. Use https, a loopback address, or set "
                             "judge.allow_insecure_http=true if that network is yours")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_tokens = model, timeout, max_tokens
        self.retries, self.backoff = retries, backoff
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        self.name = f"openai:{model}"

    def check(self) -> None:
        """Does the endpoint answer a chat completion at all? One request of one token, asked before training, so
        that a typo in the URL, the model or the key costs seconds, not a run; a server that is up but not an
        OpenAI-compatible chat endpoint (a plain web server) is named as such."""
        parts = urllib.parse.urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        fix = ("set judge.base_url (or OPENAI_BASE_URL) to a running OpenAI-compatible server, or judge=none to judge "
               "the saved answers later")
        try:
            socket.create_connection((parts.hostname, port), timeout=10).close()
        except OSError as e:
            raise RuntimeError(f"judge endpoint {self.url} cannot be reached ({e}); {fix}") from e
        try:
            reply = self.request([{"role": "user", "content": "Reply with OK."}], max_tokens=1, timeout=60)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"judge endpoint {self.url} refused a one-token chat request with {e.code}: "
                               f"{e.read()[:300]!r} (check judge.model={self.model!r} and the API key); {fix}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise RuntimeError(f"judge endpoint {self.url} failed a one-token chat request ({e}); {fix}") from e
        if not isinstance(reply, dict) or not reply.get("choices"):
            raise RuntimeError(f"judge endpoint {self.url} answered, but not as an OpenAI-compatible chat endpoint "
                               f"(no 'choices' in {str(reply)[:200]!r}); {fix}")

    def request(self, messages: list[dict], max_tokens: int, timeout: float):
        """One chat-completion request; its decoded JSON answer (None when the answer is not JSON)."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            try:
                return json.load(response)
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None

    def __call__(self, messages: list[dict]) -> str:
        for attempt in range(self.retries + 1):
            try:
                reply = self.request(messages, self.max_tokens, self.timeout)
                if not isinstance(reply, dict) or not reply.get("choices"):
                    raise RuntimeError(f"judge endpoint {self.url} answered without 'choices': {str(reply)[:200]!r}")
                return reply["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as e:
                transient = e.code in (429, 500, 502, 503, 504)  # overload and restarts pass; 501 and 4xx do not
                error = RuntimeError(f"judge endpoint {self.url} answered {e.code}: {e.read()[:300]!r}")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                transient, error = True, RuntimeError(f"judge endpoint {self.url} failed: {e}")
            if not transient or attempt == self.retries:
                raise error
            time.sleep(self.backoff * 2**attempt)  # rate limits and restarts pass; wait longer each time


class LocalJudge:
    """A local chat model as judge, for offline runs. Small models rarely keep FastChat's "[[rating]]" format,
    so when the free judgment holds no rating, the rating is read off the model's likelihood instead: after the
    judgment and "Rating: [[", the k in 1..10 whose "k]]" is most probable. Far weaker than GPT-4."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, name: str = "local"):
        self.model, self.tokenizer, self.max_new_tokens, self.name = model, tokenizer, max_new_tokens, name

    @classmethod
    def load(cls, backbone, max_new_tokens: int = 256) -> LocalJudge:
        """A judge from a backbone (shared.backbones), e.g. the untuned SmolLM2 offline."""
        model, tokenizer = load_causal_lm(backbone)
        return cls(model, tokenizer, max_new_tokens, name=f"local:{backbone.name}")

    def __call__(self, messages: list[dict]) -> str:
        import torch

        ids = encode_conversation(self.tokenizer, messages)["input_ids"].to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        judgment = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        if parse_rating(judgment) < 0:
            judgment += f"\n[rating read from the judge's likelihood] Rating: [[{self.likeliest_rating(out[0])}]]"
        return judgment

    def likeliest_rating(self, context) -> int:
        import torch

        prefix = torch.cat([context, self._ids("\nRating: [[").to(context.device)])
        scores = []
        for k in range(1, 11):
            cont = self._ids(f"{k}]]").to(context.device)
            seq = torch.cat([prefix, cont])[None]
            with torch.no_grad():
                logp = torch.log_softmax(self.model(input_ids=seq).logits[0, -len(cont) - 1:-1].float(), -1)
            scores.append(logp.gather(1, cont[:, None]).sum().item())
        return 1 + max(range(10), key=scores.__getitem__)

    def _ids(self, text: str):
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


def no_judge():
    """judge=none: answers are saved, nothing is graded."""
    return None


def grade(judge, prompts: dict, questions: list[dict], answers: dict, references: dict) -> list[dict]:
    """One judgment per answered turn: {question_id, turn, category, score, judgment}."""
    graded = []
    for q in questions:
        turns = answers[q["question_id"]]
        for turn in range(1, len(turns) + 1):
            messages = judge_messages(prompts, q, turns, turn, references.get(q["question_id"]))
            judgment = judge(messages)
            graded.append({"question_id": q["question_id"], "turn": turn, "category": q["category"],
                           "score": parse_rating(judgment), "judgment": judgment})
    return graded
