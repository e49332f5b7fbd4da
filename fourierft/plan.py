"""The interface every plan offers the autograd functions and the layer (one class, imported by each plan)."""
from __future__ import annotations


class Plan:
    """What every plan offers the autograd functions: delta_weight, dense_delta_weight, apply, coef_grad, and the
    flop counts (`costs`) that choose between the merged and the spectral path."""

    def costs(self, tokens: int) -> tuple[float, float]:
        raise NotImplementedError

    def cheaper_path(self, tokens: int) -> str:
        """"spectral" or "merged", whichever `costs` says is cheaper for this many tokens."""
        merged, spectral = self.costs(tokens)
        return "spectral" if spectral < merged else "merged"
