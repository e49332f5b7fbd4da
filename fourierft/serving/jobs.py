"""What a request becomes inside the server: a checked `Job`, its `Output` and text (decoded incrementally), the
markers a decode hands back (DONE, Failed), and the refusal a request gets (RequestError, with its HTTP status).
Shared by the engine (engine.py) and the continuous-batching scheduler (scheduler.py)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Optional

DONE = None  # a job's slot in the steps after the one it finished in


@dataclass
class Failed:
    """A job's slot when that job alone cannot run (its adapter was unloaded while it waited): the others go on."""
    error: Exception

    @classmethod
    def unloaded(cls, job) -> Failed:
        return cls(RequestError(404, f"adapter {job.adapter!r} was unloaded while the request waited"))


class RequestError(ValueError):
    """A request the server refuses: `status` is its HTTP status (400 bad request, 404 unknown, 409 conflict)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One request, checked: the adapter (or BASE), the prompt's token ids, and how to decode."""
    adapter: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: Optional[int] = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    cancelled: bool = False  # its client left: the row stops at the next decode step
    released: bool = False   # its pin on the adapter is dropped (Engine.release)

    def sampling(self) -> tuple:
        """Jobs with equal sampling settings decode in one generate call."""
        return (self.temperature == 0, self.temperature, self.top_p, self.seed)


@dataclass
class Output:
    """A job's result so far: its text, token count and why it stopped ("stop", "length", "cancelled"; None while
    running)."""
    text: str = ""
    tokens: int = 0
    finish_reason: Optional[str] = None


class Text:
    """A row's text as its tokens arrive, decoded incrementally: each step decodes a few tokens around the new one
    (the window before it gives a word-leading space its context), not the whole text again. A piece ending in
    half of a multi-byte character waits for the rest."""

    def __init__(self, tokenizer):
        self.tokenizer, self.text, self.prefix, self.read = tokenizer, "", 0, 0

    def add(self, tokens: list[int]) -> str:
        decode = self.tokenizer.decode
        before = decode(tokens[self.prefix:self.read], skip_special_tokens=True)
        after = decode(tokens[self.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(tokens)
        return self.text + ("\ufffd" if after.endswith("\ufffd") and len(tokens) > self.read else "")

    def flush(self, tokens: list[int]) -> str:
        return self.text + self.tokenizer.decode(tokens[self.read:], skip_special_tokens=True)


class Progress:
    """One job's decoding, token by token: the rules both decoders follow (EOS and stop strings end it with "stop",
    max_tokens with "length", its client leaving with "cancelled"; half of a multi-byte character waits for the
    rest) and the text handed out so far."""

    def __init__(self, job: Job, tokenizer):
        self.job, self.output, self.text = job, Output(), Text(tokenizer)
        self.tokens: list[int] = []
        self.sent = ""
        self.done = False

    def advance(self, token: int, eos: int):
        """What the job gets for its new `token`: new text, (last text, Output) when it ends (also when cancelled), or
        None while a character waits for its second half."""
        job, out = self.job, self.output
        if job.cancelled:
            self.done, out.finish_reason = True, "cancelled"
            return "", out
        out.tokens += 1
        if token == eos:
            self.done, out.finish_reason = True, "stop"
        else:
            self.tokens.append(token)
        text = self.text.add(self.tokens)
        cut = min((text.find(s) for s in job.stop if s in text), default=-1)
        if cut >= 0:
            text, self.done, out.finish_reason = text[:cut], True, "stop"
        elif not self.done and out.tokens >= job.max_tokens:
            self.done, out.finish_reason = True, "length"
        if text.endswith("\ufffd"):
            if not self.done:
                return None
            text = self.text.flush(self.tokens)
        return self.handed(text)

    def close(self):
        """(last text, Output) of a job its decoder stopped without a rule firing: "length"."""
        self.done, self.output.finish_reason = True, self.output.finish_reason or "length"
        return self.handed(self.text.flush(self.tokens))

    def handed(self, text: str):
        delta, self.sent = text[len(self.sent):], text
        self.output.text = text
        return (delta, self.output) if self.done else delta
