"""The paper's basis ablation (Table 6): the same entries and coefficients, with the inverse-DFT bases B_M, B_N
swapped for seeded random Gaussian or random orthogonal matrices:

    dW = alpha * sum_k c_k b_M[:, u_k] b_N[:, v_k]^T

Columns are scaled to the inverse DFT's column norm (1/sqrt(d)), so that alpha means the same for every basis.
`BasisPlan` has SpectralPlan's interface, so the merged, spectral and dense paths all run on it.
"""
from __future__ import annotations

import math

import torch

from .plan import Plan


def basis_matrix(d: int, kind: str, seed: int, role: str) -> torch.Tensor:
    """A d x d float32 basis ("random": Gaussian, "orthogonal": Q of a Gaussian's QR), columns of norm ~1/sqrt(d).
    role ("out" for B_M, "in" for B_N) keeps the two bases of a square layer different; the same (d, kind, seed,
    role) always gives the same matrix, so layers of one shape share their bases as they share their entries."""
    if kind not in ("random", "orthogonal"):
        raise ValueError(f"basis={kind!r} has no random matrix; accepted: random, orthogonal")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 2 * d + (role == "in"))
    gaussian = torch.randn(d, d, generator=generator, dtype=torch.float64)
    if kind == "random":
        return (gaussian / d).float()
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))  # the unique Q with a positive-diagonal R: a Haar-random orthogonal matrix
    return (q / math.sqrt(d)).float()


class BasisPlan(Plan):
    """dW = alpha * B_M[:, u] diag(c) B_N[:, v]^T, applied without forming dW where possible."""

    def __init__(self, entries: torch.Tensor, d_out: int, d_in: int, kind: str, seed: int):
        u, v = entries[0].long(), entries[1].long()
        self.d_out, self.d_in, self.n, self.device = d_out, d_in, u.numel(), entries.device
        self.bm_u = basis_matrix(d_out, kind, seed, "out")[:, u.cpu()].to(entries.device)  # (d_out, n)
        self.bn_v = basis_matrix(d_in, kind, seed, "in")[:, v.cpu()].to(entries.device)  # (d_in, n)

    def delta_weight(self, coef: torch.Tensor, scaling: float) -> torch.Tensor:
        return (self.bm_u * coef.float()) @ self.bn_v.T * scaling

    dense_delta_weight = delta_weight  # plain tensor ops: autograd differentiates it as it stands

    def apply(self, x: torch.Tensor, coef: torch.Tensor, scaling: float, transpose: bool = False) -> torch.Tensor:
        into, out = (self.bm_u, self.bn_v) if transpose else (self.bn_v, self.bm_u)
        return ((x.float() @ into) * coef.float()) @ out.T * scaling

    def coef_grad(self, x: torch.Tensor, grad_out: torch.Tensor, scaling: float) -> torch.Tensor:
        xs = x.reshape(-1, self.d_in).float() @ self.bn_v
        gs = grad_out.reshape(-1, self.d_out).float() @ self.bm_u
        return (gs * xs).sum(0) * scaling

    def costs(self, tokens: int) -> tuple[float, float]:
        """(merged, spectral) flops, as SpectralPlan.costs counts them."""
        merged = 2 * 2 * self.d_out * self.d_in * self.n
        spectral = 2 * 2 * tokens * self.n * (self.d_out + self.d_in)
        return merged, spectral
