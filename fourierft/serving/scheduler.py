"""Continuous batching over MixedAdapters: one decode loop in its own thread, where requests join the running batch
at the next step and leave it when they finish, each row with its own adapter, sampling settings (a per-request
generator), stop strings and length.

Per step the rows that run decode one token together through transformers' KV cache (`DynamicCache`), each row
left-padded to the batch's length and positioned by its own tokens, as generate pads a batch. Newcomers are
prefilled together, then joined to the running rows' cache (the shorter side padded on the left); rows that finish
or whose client left are dropped from it. The engine (engine.py) checks requests into jobs and owns the adapters;
this module only schedules and decodes."""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .jobs import Failed, Output, Progress
from .mixed import BASE

Sink = Callable[[object], None]  # receives a job's items: new text, (last text, Output) at its end, or Failed


class Row(Progress):
    """One running request: its decoding (Progress), where its items go, and its own random generator."""

    def __init__(self, job, sink: Sink, tokenizer, generator: torch.Generator):
        super().__init__(job, tokenizer)
        self.sink, self.generator = sink, generator
        self.ended = False  # its request is over: its slot is dropped at the next copy of the cache


class Scheduler:
    """The decode loop. `submit(job, sink)` queues a job; the loop takes every waiting job at the start of a step
    (up to `max_rows` running), decodes, and calls each job's sink from its thread with its new text. Idle, it waits
    `gather_s` after the first arrival, so that requests sent together are prefilled together."""

    def __init__(self, engine, max_rows: int = 64, gather_s: float = 0.01):
        self.engine, self.max_rows, self.gather_s = engine, max_rows, gather_s
        self.waiting: queue.Queue = queue.Queue()
        self.rows: list[Row] = []
        self.cache = None  # the running rows' DynamicCache
        self.mask = None  # (rows, length): 1 for a real token, 0 for left padding
        self.kept = None  # (row index, first column) a drop selected, applied at the cache's next copy
        self.steps: Counter = Counter()  # rows per decode step, for the record
        self.thread = threading.Thread(target=self.loop, name="fourierft-decode", daemon=True)
        self.thread.start()

    def submit(self, job, sink: Sink) -> None:
        self.waiting.put((job, sink))

    # ---------------------------------------------------------------- the loop
    def loop(self) -> None:
        while True:
            new = []
            if not self.rows:  # idle: wait for work, then a moment for the requests arriving with it
                new.append(self.waiting.get())
                time.sleep(self.gather_s)
            while len(self.rows) + len(new) < self.max_rows:
                try:
                    new.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                if new:
                    self.admit(new)
                if self.rows:
                    self.step()
            except Exception as e:  # a failure of the model itself: every running row ends with it
                for row in self.rows:
                    row.sink(Failed(e))
                    self.engine.release(row.job)
                self.rows, self.cache, self.mask, self.kept = [], None, None, None

    def admit(self, new: list) -> None:
        """Prefill the newcomers together, emit their first tokens, and join them to the running rows."""
        engine = self.engine
        gone = engine._resident({job.adapter for job, _ in new if job.adapter != BASE and not job.cancelled})
        rows = []
        for job, sink in new:
            if job.cancelled or job.adapter in gone:
                if job.adapter in gone:
                    sink(Failed.unloaded(job))
                else:
                    engine.cancellations += 1
                    sink(("", Output(finish_reason="cancelled")))
                engine.release(job)
                continue
            generator = torch.Generator()
            generator.manual_seed(job.seed if job.seed is not None else int(torch.randint(2**62, ()).item()))
            rows.append(Row(job, sink, engine.tokenizer, generator))
        if not rows:
            return
        device = engine.device
        width = max(len(r.job.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), engine.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.job.prompt_ids)
            ids[i, width - n:] = torch.tensor(r.job.prompt_ids)
            mask[i, width - n:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = engine.new_cache()
        out = engine.serve(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           past_key_values=cache, use_cache=True, adapter_names=[r.job.adapter for r in rows])
        self.steps[len(rows)] += 1
        tokens = self.sample(out.logits[:, -1], rows)
        self.join(rows, out.past_key_values, mask)
        self.emit(rows, tokens)

    def step(self) -> None:
        """One token for every running row."""
        engine = self.engine
        device = engine.device
        last = torch.tensor([[r.tokens[-1] if r.tokens else engine.eos] for r in self.rows])
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long)], 1)
        positions = (self.mask.sum(-1, keepdim=True) - 1)
        out = engine.serve(input_ids=last.to(device), attention_mask=self.mask.to(device),
                           position_ids=positions.to(device), past_key_values=self.cache, use_cache=True,
                           adapter_names=[r.job.adapter for r in self.rows])
        self.cache = out.past_key_values
        self.steps[len(self.rows)] += 1
        self.emit(list(self.rows), self.sample(out.logits[:, -1], self.rows))

    # ---------------------------------------------------------------- rows
    def sample(self, logits: torch.Tensor, rows: list[Row]) -> list[int]:
        """Each row's next token: greedy where temperature is 0, else top-p sampling with the row's generator."""
        logits = logits.float().cpu()
        tokens = logits.argmax(-1).tolist()
        for i, r in enumerate(rows):
            if r.job.temperature == 0:
                continue
            probs = F.softmax(logits[i] / r.job.temperature, -1)
            if r.job.top_p < 1:
                ordered, order = probs.sort(descending=True)
                keep = ordered.cumsum(0) - ordered < r.job.top_p  # the smallest set whose mass reaches top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
            tokens[i] = int(torch.multinomial(probs, 1, generator=r.generator).item())
        return tokens

    def emit(self, rows: list[Row], tokens: list[int]) -> None:
        """Hand each row its new text (or its end), then drop the rows that ended or whose client left."""
        engine = self.engine
        ended = set()
        for r, token in zip(rows, tokens):
            if r.ended:
                continue
            item = r.advance(token, engine.eos)
            if item is None:  # half of a multi-byte character: nothing to hand out yet
                continue
            r.sink(item)
            if r.done:
                if r.output.finish_reason == "cancelled":
                    engine.cancellations += 1
                ended.add(id(r))
        for r in rows:
            if id(r) in ended:
                r.ended = True
                engine.release(r.job)
        # ended rows leave the cache with the next join (one copy for both), or once a quarter of the rows have ended
        gone = sum(r.ended for r in self.rows)
        if gone and (gone == len(self.rows) or gone >= len(self.rows) / 4):
            self.drop([i for i, r in enumerate(self.rows) if not r.ended])

    def join(self, rows: list[Row], cache, mask: torch.Tensor) -> None:
        """The newcomers' cache and mask joined to the running rows' (the shorter side padded on the left)."""
        if any(r.ended for r in self.rows):
            self.drop([i for i, r in enumerate(self.rows) if not r.ended], copy=False)
        if not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)

        def padded(t: torch.Tensor, have: int) -> torch.Tensor:  # (rows, heads, time, dim) or (rows, time)
            return F.pad(t, (0, 0, width - have, 0) if t.dim() == 4 else (width - have, 0))

        layers = [(torch.cat([padded(keys, old), padded(b.keys, new)]), torch.cat([padded(values, old),
                                                                                   padded(b.values, new)]))
                  for (keys, values), b in zip(self.layers(), cache.layers)]
        self.cache = self.engine.new_cache(layers)
        self.mask = torch.cat([padded(self.mask, old), padded(mask, new)])
        self.rows = self.rows + rows

    def drop(self, keep: list[int], copy: bool = True) -> None:
        """Keep rows `keep` only, and trim the left columns every remaining row pads. copy=False leaves the cache's
        selection to the caller's next copy (`layers()`), which join makes anyway."""
        if not keep:
            self.rows, self.cache, self.mask, self.kept = [], None, None, None
            return
        self.rows = [self.rows[i] for i in keep]
        index = torch.tensor(keep)
        self.mask = self.mask[index]
        start = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-padding columns
        self.mask = self.mask[:, start:]
        self.kept = (index, start)
        if copy:
            self.cache = self.engine.new_cache(self.layers())

    def layers(self) -> list[tuple]:
        """The cache's (keys, values) per layer, less the rows and columns a drop left out."""
        layers = [(layer.keys, layer.values) for layer in self.cache.layers]
        if self.kept is None:
            return layers
        index, start = self.kept
        self.kept = None
        return [(k[index.to(k.device), :, start:], v[index.to(v.device), :, start:]) for k, v in layers]
