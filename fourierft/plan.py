"""The interface every plan offers the autograd functions, the training layer and the served layer (one abstract
class, imported by each plan): a plan missing one of its methods fails when it is built, not mid-forward."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Plan(ABC):
    """Index arrays (or basis columns) derived once from a layer's n entries, for a d_out x d_in weight.

    Coefficients: `delta_weight` and `dense_delta_weight` take one adapter's (n,) vector. `apply` also takes a
    batch of them, (rows, 1, ..., 1, n) against x's (rows, ..., d_in): row i of x then uses coefficient row i
    (how serving gives each batch row its own adapter); everything broadcasts over x's other leading axes."""

    d_out: int
    d_in: int
    n: int
    device: torch.device

    @abstractmethod
    def delta_weight(self, coef: torch.Tensor, scaling: float) -> torch.Tensor:
        """scaling * dW as a dense (d_out, d_in) float32 matrix (the fast construction)."""

    @abstractmethod
    def dense_delta_weight(self, coef: torch.Tensor, scaling: float) -> torch.Tensor:
        """The same matrix by the reference formula, differentiable by autograd as it stands."""

    @abstractmethod
    def apply(self, x: torch.Tensor, coef: torch.Tensor, scaling: float, transpose: bool = False) -> torch.Tensor:
        """scaling * dW @ x (or dW^T @ x with `transpose`) along x's last axis, in float32, without forming dW."""

    @abstractmethod
    def coef_grad(self, x: torch.Tensor, grad_out: torch.Tensor, scaling: float) -> torch.Tensor:
        """dL/dc (n,) from the layer's input x (..., d_in) and output gradient (..., d_out)."""

    @abstractmethod
    def costs(self, tokens: int) -> tuple[float, float]:
        """(merged, spectral) flop counts of a training step over `tokens` tokens."""

    def cheaper_path(self, tokens: int) -> str:
        """"spectral" or "merged", whichever `costs` says is cheaper for this many tokens."""
        merged, spectral = self.costs(tokens)
        return "spectral" if spectral < merged else "merged"
