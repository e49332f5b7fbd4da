"""The served layer: a frozen Linear / Conv1D whose rows, inside MixedAdapters.rows, each get their adapter's dW;
and one group's share of a batch (which rows, which bank rows), expanded for generate's beams."""
from __future__ import annotations

import torch
from torch import nn

from ..wrapped import WrappedLayer
from .bank import Group


class ServedLayer(WrappedLayer):
    """A frozen Linear / Conv1D whose rows, inside `MixedAdapters.rows`, get each their adapter's dW; outside, the
    base layer itself."""

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer)
        self.requests: list | None = None  # [(plan, columns, Rows)] while serving

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.requests:
            return self.base_layer(x)
        tokens_per_row = x[0].numel() // self.d_in
        shared, own = [], []  # (plan, rows, coefficients) for the shared transforms; (rows, plan, coef) per adapter
        for plan, columns, rows in self.requests:
            picked = rows.for_batch(x.shape[0])
            if picked is None:
                continue
            if rows.per_adapter(plan, picked, tokens_per_row, self.quantized):
                own += [(index, plan, coef) for index, coef in picked.each_adapter(columns)]
            else:
                shared.append((plan, picked.index, picked.coefficients(columns)))
        out = self._base_and_own(x, own)
        for plan, index, coef in shared:
            rows = x if index is None else x[index]
            delta = plan.apply(rows, coef.view(coef.shape[0], *([1] * (x.dim() - 2)), -1), 1.0).to(out.dtype)
            if index is None:
                out += delta
            else:
                out.index_add_(0, index, delta)
        return out

    def _base_and_own(self, x: torch.Tensor, own: list) -> torch.Tensor:
        """The base layer's output on every row, with the rows of `own` adapters through W + dW_a instead."""
        if not own:
            return self.base_layer(x)
        if len(own) == 1 and own[0][0] is None:  # one adapter on every row: one GEMM, no gathers
            _, plan, coef = own[0]
            return self.through(x, plan.delta_weight(coef, 1.0))
        taken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        out = None
        for index, plan, coef in own:
            y = self.through(x[index], plan.delta_weight(coef, 1.0))
            out = y.new_empty(x.shape[0], *y.shape[1:]) if out is None else out
            out[index] = y
            taken[index] = True
        rest = (~taken).nonzero().squeeze(1)
        if rest.numel():
            out[rest] = self.base_layer(x[rest]).to(out.dtype)
        return out


class Rows:
    """One group's share of a batch: which rows use it and their bank rows; expanded on demand for generate's beams
    (which repeat each request's row), and the gathered coefficients cached per batch size."""

    def __init__(self, group: Group, keys: list[int], strategy: str, expand: int = 1):
        self.group, self.strategy, self.expand = group, strategy, expand
        device = group.bank.device
        self.keys = torch.tensor(keys, device=device)  # per request: bank row, -1 for rows of other groups
        self.cache: dict[int, Picked | None] = {}

    def for_batch(self, size: int):
        if size not in self.cache:
            keys = expand_rows(self.keys, size, self.expand, "a served layer")
            mine = keys >= 0
            if not mine.any():
                self.cache[size] = None
            else:
                index = None if mine.all() else mine.nonzero().squeeze(1)
                self.cache[size] = Picked(self.group.bank, keys if index is None else keys[index], index)
        return self.cache[size]

    def per_adapter(self, plan, picked: Picked, tokens_per_row: int, quantized: bool) -> bool:
        if self.strategy != "auto":
            return self.strategy == "per_adapter"
        if quantized:  # a packed weight cannot take dW into its GEMM: per adapter would add a GEMM
            return False
        merged, spectral = plan.costs(picked.rows * tokens_per_row)
        # both counts are of a training step (two dW builds, two transforms per token): their halves are a forward's
        return picked.adapters * merged <= spectral


class Picked:
    """The rows of a batch that one group serves: `index` into the batch (None: every row) and their bank rows."""

    def __init__(self, bank: torch.Tensor, keys: torch.Tensor, index):
        self.keys, self.index, self.rows = keys, index, keys.numel()
        self.gathered = bank[keys]  # one gather for every layer of the group
        self.unique = keys.unique()
        self.adapters = self.unique.numel()
        self.split = None  # per adapter present: (batch index, one of its rows), made on first use

    def coefficients(self, columns: slice) -> torch.Tensor:
        return self.gathered[:, columns]

    def each_adapter(self, columns: slice):
        """(batch index or None, coefficients) per adapter present."""
        if self.adapters == 1:
            return [(self.index, self.gathered[0, columns])]
        if self.split is None:  # once per batch, not per layer
            self.split = []
            for key in self.unique:
                mine = (self.keys == key).nonzero().squeeze(1)
                self.split.append((mine if self.index is None else self.index[mine], int(mine[0])))
        return [(index, self.gathered[first, columns]) for index, first in self.split]


def expand_rows(index: torch.Tensor, rows: int, expand: int, what: str) -> torch.Tensor:
    """`index` (one entry per request) for a tensor of `rows` rows: the requests themselves, or each repeated
    `expand` times in a row (generate's beams or returned sequences; MixedAdapters.generate knows how many). Any
    other count is an error: a divisor of the rows is never taken for a repetition."""
    if rows == len(index):
        return index
    if expand > 1 and rows == len(index) * expand:
        return index.repeat_interleave(expand)
    raise ValueError(f"{what} sees {rows} rows for {len(index)} adapter_names"
                     + (f" (x{expand} for generate's beams or sequences)" if expand > 1 else "")
                     + ": give one name per batch row")
