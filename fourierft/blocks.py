"""Which plan a layer gets: one spectrum (the inverse DFT, or a random basis of the ablation), or a fused
projection's parts, each its own spectrum (BlockPlan)."""
from __future__ import annotations

import torch

from .bases import BasisPlan
from .plan import Plan
from .spectral import SpectralPlan


def make_plan(entries: torch.Tensor, d_out: int, d_in: int, basis: str = "fourier", basis_seed: int = 0):
    """The plan of one spectrum: the inverse DFT (SpectralPlan), or a random basis of the ablation (BasisPlan)."""
    if basis == "fourier":
        return SpectralPlan(entries, d_out, d_in)
    return BasisPlan(entries, d_out, d_in, basis, basis_seed)


class BlockPlan(Plan):
    """A fused projection (GPT-2's c_attn, timm's qkv) whose output rows split into parts: each adapted part is an
    independent spectrum over its own rows (its own d_part x d_in normalisation), the other rows get no dW.
    `coef` is the parts' coefficients one after the other."""

    def __init__(self, entries: torch.Tensor, d_out: int, d_in: int, blocks: list[tuple[int, int]],
                 basis: str = "fourier", basis_seed: int = 0):
        self.d_out, self.d_in, self.blocks = d_out, d_in, [tuple(b) for b in blocks]
        width = entries.shape[1] // len(self.blocks)
        self.plans = [make_plan(entries[:, i * width:(i + 1) * width], size, d_in, basis, basis_seed)
                      for i, (_, size) in enumerate(self.blocks)]
        self.n, self.device = entries.shape[1], entries.device
        self.width = width

    def _parts(self, coef: torch.Tensor):
        for i, ((start, size), plan) in enumerate(zip(self.blocks, self.plans)):
            yield start, size, plan, coef[..., i * self.width:(i + 1) * self.width]

    def _assemble(self, parts: list[tuple[int, int, torch.Tensor]], lead: tuple, like: torch.Tensor):
        """Rows of each part at their offsets, zeros elsewhere (differentiable through torch.cat)."""
        pieces, row = [], 0
        for start, size, value in parts:
            if start > row:
                pieces.append(like.new_zeros(*lead, start - row, *value.shape[len(lead) + 1:]))
            pieces.append(value)
            row = start + size
        if row < self.d_out:
            pieces.append(like.new_zeros(*lead, self.d_out - row, *parts[-1][2].shape[len(lead) + 1:]))
        return torch.cat(pieces, dim=len(lead))

    def delta_weight(self, coef, scaling):
        parts = [(start, size, plan.delta_weight(c, scaling)) for start, size, plan, c in self._parts(coef)]
        return self._assemble(parts, (), parts[0][2])

    def dense_delta_weight(self, coef, scaling):
        parts = [(start, size, plan.dense_delta_weight(c, scaling)) for start, size, plan, c in self._parts(coef)]
        return self._assemble(parts, (), parts[0][2])

    def apply(self, x, coef, scaling, transpose=False):
        if transpose:  # x is dL/dy (..., d_out): each part's rows feed back through its own spectrum
            return sum(plan.apply(x[..., start:start + size], c, scaling, transpose=True)
                       for start, size, plan, c in self._parts(coef))
        parts = [(start, size, plan.apply(x, c, scaling).movedim(-1, 0)) for start, size, plan, c in self._parts(coef)]
        return self._assemble(parts, (), parts[0][2]).movedim(0, -1)

    def coef_grad(self, x, grad_out, scaling):
        g = grad_out.reshape(-1, self.d_out)
        return torch.cat([plan.coef_grad(x, g[:, start:start + size], scaling)
                          for (start, size), plan in zip(self.blocks, self.plans)])

    def costs(self, tokens):
        merged = spectral = 0.0
        for plan in self.plans:
            m, s = plan.costs(tokens)
            merged, spectral = merged + m, spectral + s
        return merged, spectral
