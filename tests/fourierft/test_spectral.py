"""The spectral math (fourierft/spectral.py) against the dense float64 formula with autograd: DC and Nyquist entries,
half-precision bases."""

import pytest
import torch

from helpers import PATHS, check_layer_against_reference, make_layer


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("d_out,d_in", [(8, 6), (9, 7), (8, 7)])
def test_dc_and_nyquist_entries(path, d_out, d_in):
    # DC, Nyquist in each axis (when even), the corner and the mirror of each
    pos = {(0, 0), (d_out // 2, 0), (0, d_in // 2), (d_out // 2, d_in // 2), (d_out - 1, d_in - 1), (1, d_in - 1)}
    entries = torch.tensor(sorted(pos)).T
    layer = make_layer("linear", d_out, d_in, 0, path=path, entries=entries)
    check_layer_against_reference(layer, torch.float32, 1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_half_precision_bases(path, dtype, tol, kind):
    layer = make_layer(kind, 24, 16, 60, dtype=dtype, path=path)
    assert layer.coefficients.dtype == torch.float32
    check_layer_against_reference(layer, dtype, tol)
