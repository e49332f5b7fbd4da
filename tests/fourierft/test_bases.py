"""The basis ablation: random and orthogonal bases, exact on every path against the dense float64 formula
dW = alpha * sum_k c_k b_M[:, u_k] b_N[:, v_k]^T, stored in the adapter, refused by PEFT export."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import fourierft as ff
from fourierft.bases import basis_matrix

from helpers import PATHS, assert_round_trip, build, reference_delta, rel_err


def basis_reference(entries, coef, d_out, d_in, scaling, kind, seed):
    bm = basis_matrix(d_out, kind, seed, "out").double()[:, entries[0]]
    bn = basis_matrix(d_in, kind, seed, "in").double()[:, entries[1]]
    return scaling * torch.einsum("ik,k,jk->ij", bm, coef, bn)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["random", "orthogonal"])
@pytest.mark.parametrize("d_out,d_in,n", [(12, 12, 20), (10, 14, 30)])
def test_random_bases_exact_on_every_path(path, kind, d_out, d_in, n):
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out).requires_grad_(False)
    entries = ff.sample_entries(d_out, d_in, n, seed=3)
    layer = ff.FourierFTLayer(base, entries, scaling=5.0, path=path, basis=kind, basis_seed=7)
    coef = layer.coefficients.detach().double().clone().requires_grad_(True)
    x = torch.randn(3, 4, d_in, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    y_ref = x_ref @ (base.weight.double() + basis_reference(entries, coef, d_out, d_in, 5.0, kind, 7)).T
    y_ref = y_ref + base.bias.double()
    g = torch.randn_like(y_ref)
    (y_ref * g).sum().backward()
    x_ours = x.float().requires_grad_(True)
    (layer(x_ours) * g.float()).sum().backward()
    assert rel_err(layer(x.float()), y_ref) < 1e-5
    assert rel_err(x_ours.grad, x_ref.grad) < 1e-5
    assert rel_err(layer.coefficients.grad, coef.grad) < 1e-5


def test_the_fourier_basis_is_the_inverse_dft_in_this_form():
    """alpha * Re(B_M S B_N^T) with the inverse-DFT bases equals what every FourierFT path computes."""
    d_out, d_in, n = 6, 8, 10
    entries = ff.sample_entries(d_out, d_in, n, seed=0)
    coef = torch.randn(n, dtype=torch.float64)
    def inv_dft(d):
        k = torch.arange(d, dtype=torch.float64)
        return torch.exp(2j * torch.pi * torch.outer(k, k) / d) / d

    s = torch.zeros(d_out, d_in, dtype=torch.complex128)
    s[entries[0], entries[1]] = coef.to(torch.complex128)
    via_bases = 3.0 * (inv_dft(d_out) @ s @ inv_dft(d_in).T).real
    assert torch.allclose(via_bases, reference_delta(entries, coef, d_out, d_in, 3.0), atol=1e-12)


def test_basis_scale_and_orthogonality():
    q = basis_matrix(64, "orthogonal", 0, "out").double()
    assert torch.allclose(q.T @ q, torch.eye(64, dtype=torch.float64) / 64, atol=1e-6)  # orthogonal, norm 1/sqrt(d)
    g = basis_matrix(64, "random", 0, "out").double()
    assert abs((g ** 2).sum(0).mean().item() - 1 / 64) < 0.2 / 64  # the inverse DFT's column norm, on average
    assert not torch.equal(basis_matrix(64, "random", 0, "in"), basis_matrix(64, "random", 0, "out"))
    assert not torch.equal(basis_matrix(64, "random", 5, "in"), basis_matrix(64, "random", 6, "in"))


def test_a_basis_is_the_same_in_a_fresh_process_whatever_the_global_seed():
    """A saved adapter names its basis by (kind, seed) only: the matrix must not depend on the process or on torch's
    global random state, or a loaded adapter would compute another dW."""
    code = ("import sys, torch; torch.manual_seed(int(sys.argv[1])); torch.randn(7); "
            "from fourierft.bases import basis_matrix; "
            "sys.stdout.write(' '.join(basis_matrix(24, k, 5, 'in').double().numpy().tobytes().hex() "
            "for k in ('random', 'orthogonal')))")
    here = {}
    for kind in ("random", "orthogonal"):
        torch.manual_seed(99)
        state = torch.get_rng_state()
        here[kind] = basis_matrix(24, kind, 5, "in").double()
        assert torch.equal(torch.get_rng_state(), state)  # the global generator is not drawn from
    for global_seed in ("0", "12345"):  # one fresh process per global seed, both kinds in each
        out = subprocess.run([sys.executable, "-c", code, global_seed], capture_output=True, text=True,
                             check=True).stdout.split()
        for kind, hexed in zip(("random", "orthogonal"), out):
            there = torch.from_numpy(np.frombuffer(bytes.fromhex(hexed), dtype=np.float64).reshape(24, 24).copy())
            assert torch.equal(there, here[kind]), (kind, global_seed)


def test_basis_is_saved_and_peft_export_refused(tmp_path):
    model = ff.apply_fourierft(build("bert"), ff.FourierFTConfig(n=8, basis="orthogonal", basis_seed=11))
    loaded = assert_round_trip(model, "bert", tmp_path / "a")
    assert loaded.fourierft_config.basis == "orthogonal" and loaded.fourierft_config.basis_seed == 11
    with pytest.raises(ValueError, match="only the Fourier basis"):
        ff.export_peft(model, tmp_path / "peft")
    with pytest.raises(ValueError, match="basis='hadamard' is not one of"):
        ff.FourierFTConfig(basis="hadamard")
