"""Drawing the n spectral entries (u, v) of a d_out x d_in spectrum."""
from __future__ import annotations

import math
from typing import Optional

import torch


def sample_entries(d_out: int, d_in: int, n: int, seed: int, fc: Optional[float] = None,
                   bandwidth: float = 200.0) -> torch.Tensor:
    """Return a (2, n) int64 tensor of distinct (row, col) spectrum positions.

    Uniform draws use PEFT's exact rule so that adapters are exchangeable with PEFT. With fc set,
    positions are drawn without replacement with probability p(u, v) = exp(-((D^2 - fc^2) / (D W))^2)
    (Eq. 5), D being the distance to DC in the fftshift-ed spectrum.
    """
    size = d_out * d_in
    if n <= 0 or n > size:
        raise ValueError(f"n={n} entries do not fit a {d_out}x{d_in} spectrum: need 1 <= n <= {size}")
    generator = torch.Generator().manual_seed(seed)
    if fc is None:
        idx = torch.randperm(size, generator=generator)[:n]
    else:
        prob = frequency_bias(d_out, d_in, fc, bandwidth).flatten()
        # below 1e-12 a position is never drawn in practice; counting it would hide a too-narrow band
        prob = torch.where(prob > 1e-12, prob, torch.zeros_like(prob))
        support = int((prob > 0).sum())
        if support < n:
            raise ValueError(
                f"fc={fc}, bandwidth={bandwidth} gives {support} positions of probability > 1e-12 in a "
                f"{d_out}x{d_in} spectrum, fewer than n={n}; widen the bandwidth or move fc "
                f"(the largest radial frequency here is {math.hypot(d_out / 2, d_in / 2):.0f})")
        # weighted sampling without replacement (Efraimidis-Spirakis): the n largest log(U) / p. Unlike
        # torch.multinomial it has no 2^24-category limit, so 4096 x 11008 MLP layers and 13B q/v work too
        keys = torch.rand(size, generator=generator, dtype=torch.float64).log_() / prob
        idx = torch.topk(keys, n, sorted=False).indices
    return torch.stack([idx // d_in, idx % d_in])


def check_entries(entries: torch.Tensor, rows: int, d_in: int, parts: int = 1) -> None:
    """Refuse entries that are not (2, parts * n) integer positions of a rows x d_in spectrum (a fused projection's
    adapted parts each hold n entries relative to their own rows): an edited file's out-of-range entry would index
    another row of the spectrum, or fail deep inside the transform."""
    if entries.dim() != 2 or entries.shape[0] != 2 or entries.shape[1] == 0 or entries.shape[1] % parts:
        raise ValueError(f"entries of shape {tuple(entries.shape)}: expected (2, n) spectrum positions"
                         + (f", n a multiple of the {parts} fused parts" if parts > 1 else ""))
    if entries.is_floating_point() or entries.is_complex():
        raise ValueError(f"entries of dtype {entries.dtype}: spectrum positions are integers")
    for axis, size, what in ((0, rows, "row"), (1, d_in, "column")):
        bad = (entries[axis] < 0) | (entries[axis] >= size)
        if bad.any():
            value = int(entries[axis][bad][0])
            raise ValueError(f"entries hold {what} {value} ({int(bad.sum())} out of range in all), outside the "
                             f"{rows}x{d_in} spectrum (rows 0..{rows - 1}, columns 0..{d_in - 1})")


def frequency_bias(d_out: int, d_in: int, fc: float, bandwidth: float) -> torch.Tensor:
    """Eq. 5 evaluated at every unshifted spectrum position (d_out x d_in, float64)."""
    dist = torch.sqrt(_centred(d_out)[:, None] ** 2 + _centred(d_in)[None, :] ** 2)
    prob = torch.exp(-(((dist**2 - fc**2) / (dist * bandwidth)) ** 2))
    # at DC the formula is 0/0 (fc = 0) or inf (fc > 0); its limits are 1 and 0
    prob[0, 0] = 1.0 if fc == 0 else 0.0
    return prob


def _centred(d: int) -> torch.Tensor:
    """Signed frequency of each unshifted index: its offset from DC after fftshift."""
    return torch.fft.fftfreq(d, 1.0 / d, dtype=torch.float64)


def radial_frequency(entries: torch.Tensor, d_out: int, d_in: int) -> torch.Tensor:
    """Distance of each entry to DC in the centred spectrum (what fc is compared with)."""
    return torch.sqrt(_centred(d_out)[entries[0]] ** 2 + _centred(d_in)[entries[1]] ** 2)
