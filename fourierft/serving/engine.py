"""What the server runs, without HTTP or Ray: one base causal LM and its FourierFT adapters (MixedAdapters), requests
checked into `Job`s, a batch of jobs decoded together by transformers' generate (each row with its adapter), text
streamed out step by step (decoded incrementally), a job whose client left stopped at the next step, and the
adapters kept within a memory budget (least recently used evicted, never one a job needs, reloaded from their
folders on demand). fourierft.serving.server puts it behind an OpenAI-compatible API on Ray Serve."""
from __future__ import annotations

import math
import queue
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import torch

from .jobs import DONE, Failed, Job, Output, Progress, RequestError
from .mixed import BASE, MixedAdapters
from .scheduler import Scheduler


def imported(path: str):
    """The class `module:Class` names: another batch backend with MixedAdapters' methods (add, remove, compact,
    resident_bytes, generate(..., adapter_names=...), model), for comparisons (scripts/bench_serve_http.py)."""
    import importlib

    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"backend {path!r}: not 'fourierft' nor an importable module:Class ({e})") from None


class Engine:
    """A base causal LM folder (or hub id) and named adapter folders, served one batch at a time.

    memory_budget_mb: the adapters kept resident (their coefficient banks and heads, `resident_bytes`); beyond it the
    least recently used ones that no queued or running job needs are evicted, and reloaded from their folders when
    asked for. A job pins its adapter from `job` until `release`: an unload makes the adapter unknown to new requests
    at once, fails the jobs still waiting for it (404), lets its running rows finish, and removes it when the last of
    them ends; no other job is touched.
    """

    def __init__(self, base: str, adapters: Optional[dict] = None, memory_budget_mb: float = 1024.0,
                 dtype: str = "auto", name: Optional[str] = None, max_tokens_limit: int = 4096,
                 backend: str = "fourierft", max_rows: int = 64, gather_ms: float = 10.0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[dtype]
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).eval()
        self.name = name or Path(str(base).rstrip("/")).name
        self.serve = MixedAdapters(model) if backend == "fourierft" else imported(backend)(model)
        # MixedAdapters decodes step by step under the continuous-batching scheduler (submit); a comparison backend
        # has generate only, and serves batches formed by the server (stream)
        self.continuous = backend == "fourierft"
        self.max_rows, self.gather_s = max_rows, gather_ms / 1000
        self.scheduler = None  # started by the first submit
        self.device = next(model.parameters()).device
        self.eos = self.tokenizer.eos_token_id
        self.folders: dict[str, Path] = {}  # every adapter the server knows, resident or not
        self.recent: OrderedDict[str, None] = OrderedDict()  # the resident ones, least recently used first
        self.budget = memory_budget_mb * 2**20
        self.context = getattr(model.config, "max_position_embeddings", None) or max_tokens_limit
        self.max_tokens_limit = max_tokens_limit
        self.batch_sizes: Counter = Counter()  # rows per generate call, for the record
        self.evictions = 0
        self.cancellations = 0
        self.pinned: Counter = Counter()  # adapter -> jobs queued or running that need it
        self.doomed: set = set()  # unloaded while pinned: removed when its last job ends
        self.lock = threading.Lock()  # the registry: loads, unloads, evictions, pins
        for adapter, folder in (adapters or {}).items():
            self.load(adapter, folder)

    # ---------------------------------------------------------------- adapters
    def models(self) -> list[str]:
        return [self.name, *self.folders]

    def load(self, name: str, folder) -> None:
        """Make the adapter at `folder` available as `name` (checked now: read, and resident until evicted)."""
        if not isinstance(name, str) or not name.strip() or name in (self.name, BASE):
            raise RequestError(400, f"adapter name {name!r}: give a non-empty name other than the base model's "
                                    f"({self.name!r})")
        path = Path(str(folder)).expanduser()
        if not path.is_dir():
            raise RequestError(404, f"adapter folder {folder} does not exist (or is not a folder) on the server")
        with self.lock:
            if name in self.folders:
                raise RequestError(409, f"an adapter named {name!r} is loaded already; unload it first to replace it")
            if name in self.doomed:
                raise RequestError(409, f"adapter {name!r} was unloaded and still finishes its running requests; load "
                                        "it again once they end")
            try:
                self.serve.add(name, path)
            except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
                raise RequestError(400, f"adapter {name!r} cannot be served on {self.name}: {e}") from None
            self.folders[name] = path
            self.recent[name] = None
            self._evict(keep={name})

    def unload(self, name: str) -> None:
        """Unknown to new requests at once; removed now, or when the last running job that needs it ends."""
        with self.lock:
            if name not in self.folders:
                raise RequestError(404, f"no adapter named {name!r} is loaded (loaded: {list(self.folders)})")
            del self.folders[name]
            if self.pinned[name]:
                self.doomed.add(name)
            elif name in self.recent:
                self.serve.remove(name)
                del self.recent[name]

    def release(self, job: Job) -> None:
        """The job is over (finished, failed or cancelled): its pin on the adapter goes; an adapter unloaded meanwhile
        is removed once nothing needs it. Idempotent. May wait for a generate call in progress: call it off the event
        loop."""
        with self.lock:
            if job.released or job.adapter == BASE:
                job.released = True
                return
            job.released = True
            self.pinned[job.adapter] -= 1
            if self.pinned[job.adapter] > 0:
                return
            del self.pinned[job.adapter]
            if job.adapter in self.doomed:
                self.doomed.discard(job.adapter)
                if job.adapter in self.recent:
                    self.serve.remove(job.adapter)
                    del self.recent[job.adapter]

    def _resident(self, names: set) -> set:
        """Every adapter of a batch that is still loaded made resident (reloaded from its folder if evicted), then the
        budget restored; the names unloaded while their jobs waited are returned (those jobs fail alone)."""
        gone = set()
        with self.lock:
            for name in names:
                if name not in self.folders:
                    gone.add(name)
                    continue
                if name not in self.recent:
                    self.serve.add(name, self.folders[name])
                self.recent[name] = None
                self.recent.move_to_end(name)
            self._evict(keep=names)
        return gone

    def _evict(self, keep: set) -> None:
        self.serve.compact()  # the banks at their adapters' size, not the room an add grew them by
        for name in list(self.recent):
            if self.serve.resident_bytes() <= self.budget:
                return
            if name not in keep and not self.pinned[name] and name not in self.doomed:
                self.serve.remove(name)
                del self.recent[name]
                self.evictions += 1
                self.serve.compact()

    # ---------------------------------------------------------------- requests
    def job(self, model, prompt_ids: list[int], max_tokens=16, temperature=1.0, top_p=1.0, stop=None,
            seed=None) -> Job:
        """A request checked into a Job; what is wrong with it is a RequestError naming the field."""
        if not isinstance(model, str) or model not in self.models():
            raise RequestError(404, f"model {model!r} does not exist: this server has {self.models()} (the base "
                                    "model by its own name, each adapter by its name)")
        if not prompt_ids:
            raise RequestError(400, "the prompt is empty: give at least one token of text")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, f"max_tokens={max_tokens!r}: give an integer >= 1")
        room = min(self.context - len(prompt_ids), self.max_tokens_limit)
        if max_tokens > room:
            raise RequestError(400, f"max_tokens={max_tokens} does not fit: the prompt has {len(prompt_ids)} tokens "
                                    f"of the model's {self.context}, so at most {max(room, 0)} can be generated")
        for key, value, low, high in (("temperature", temperature, 0.0, 2.0), ("top_p", top_p, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high or (key == "top_p" and value == 0):
                bounds = "0 < top_p <= 1" if key == "top_p" else "0 <= temperature <= 2"
                raise RequestError(400, f"{key}={value!r}: give a number with {bounds}")
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise RequestError(400, f"stop={stop!r}: give up to 4 non-empty strings")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RequestError(400, f"seed={seed!r}: give an integer")
        adapter = BASE if model == self.name else model
        with self.lock:
            if adapter != BASE and adapter not in self.folders:  # unloaded since the check above
                raise RequestError(404, f"model {model!r} does not exist: it was unloaded")
            if adapter != BASE:
                self.pinned[adapter] += 1  # until release: no eviction, and an unload waits for its rows
        return Job(adapter, list(prompt_ids), max_tokens, float(temperature), float(top_p), stop, seed)

    def encode(self, prompt) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            if any(not 0 <= t < len(self.tokenizer) for t in prompt):
                raise RequestError(400, f"prompt token ids must lie in 0..{len(self.tokenizer) - 1}")
            return prompt
        raise RequestError(400, "prompt: give one string (or a list of token ids); one prompt per request")

    def chat(self, messages) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError(400, f"model {self.name} has no chat template: use /v1/completions")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise RequestError(400, "messages: give a non-empty list of {\"role\": ..., \"content\": ...} objects")
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    # ---------------------------------------------------------------- decoding
    def new_cache(self, layers=None):
        """A KV cache for the served model, empty or holding (keys, values) per layer."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=layers, config=self.serve.model.config)

    def submit(self, job: Job, sink) -> None:
        """Continuous batching: the job joins the running batch at the next decode step; `sink` receives, from the
        decode thread, its new text per step, (last text, Output) at its end, or Failed (scheduler.py)."""
        with self.lock:
            if self.scheduler is None:
                self.scheduler = Scheduler(self, self.max_rows, self.gather_s)
        self.scheduler.submit(job, sink)

    def stream(self, jobs: list[Job]) -> Iterator[list]:
        """Decode `jobs` together: per step a list with, for each job, its new text while it runs, (new text, its
        Output) in the step it finishes, and DONE after; a job that cannot run alone (its adapter unloaded while it
        waited) gets Failed in the first step. Jobs with other sampling settings decode in their own generate call,
        one group after the other (the others' slots hold "" meanwhile). Every job is released at the end."""
        try:
            gone = self._resident({j.adapter for j in jobs if j.adapter != BASE})
            failed = {i for i, job in enumerate(jobs) if job.adapter in gone}
            if failed:
                yield [Failed.unloaded(jobs[i]) if i in failed else "" for i in range(len(jobs))]
            groups: dict[tuple, list[int]] = {}
            for i, job in enumerate(jobs):
                if i not in failed:
                    groups.setdefault(job.sampling(), []).append(i)
            finished = set(failed)
            for members in groups.values():
                for step in self._decode([jobs[i] for i in members]):
                    row = [DONE if i in finished else "" for i in range(len(jobs))]
                    for i, slot in zip(members, step):
                        row[i] = slot
                        if isinstance(slot, tuple):
                            finished.add(i)
                    yield row
        finally:
            for job in jobs:
                self.release(job)

    def complete(self, jobs: list[Job]) -> list[Output]:
        """Decode `jobs` together to the end: each one's Output."""
        outputs: list = [None] * len(jobs)
        for step in self.stream(jobs):
            for i, slot in enumerate(step):
                if isinstance(slot, tuple):
                    outputs[i] = slot[1]
        return outputs

    def _decode(self, jobs: list[Job]) -> Iterator[list]:
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        tokenizer, eos = self.tokenizer, self.tokenizer.eos_token_id
        steps: queue.Queue = queue.Queue()
        rows = [Progress(job, tokenizer) for job in jobs]

        class Streamer(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # the prompt
                    self.first = False
                    return
                steps.put(value.reshape(-1).tolist())

            def end(self):
                steps.put(None)

        class Finished(StoppingCriteria):  # a row stops once done or its client has left
            def __call__(self, input_ids, scores, **kwargs):
                return torch.tensor([row.done or row.job.cancelled for row in rows], device=input_ids.device)

        batch = tokenizer.pad({"input_ids": [j.prompt_ids for j in jobs]}, return_tensors="pt")
        device = next(self.serve.model.parameters()).device
        first = jobs[0]
        options = dict(max_new_tokens=max(j.max_tokens for j in jobs), pad_token_id=tokenizer.pad_token_id,
                       streamer=Streamer(), stopping_criteria=StoppingCriteriaList([Finished()]))
        if first.temperature == 0:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            options.update(do_sample=True, temperature=first.temperature, top_p=first.top_p, top_k=None)
        self.batch_sizes[len(jobs)] += 1
        failure = []

        def run():
            try:
                if first.seed is not None:
                    torch.manual_seed(first.seed)
                self.serve.generate(**{k: v.to(device) for k, v in batch.items()},
                                    adapter_names=[j.adapter for j in jobs], **options)
            except BaseException as e:  # raised again in the caller's thread
                failure.append(e)
                steps.put(None)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        while (tokens := steps.get()) is not None:
            deltas = []
            for row, token in zip(rows, tokens):
                if row.done:
                    deltas.append(DONE)
                    continue
                item = row.advance(token, eos)
                if row.output.finish_reason == "cancelled":
                    self.cancellations += 1
                deltas.append("" if item is None else item)
            yield deltas
        worker.join()
        if failure:
            raise failure[0]
        # generate stopped without our criteria firing: the rows still open end ("length")
        last = [DONE if row.done else row.close() for row in rows]
        if any(slot is not DONE for slot in last):
            yield last
