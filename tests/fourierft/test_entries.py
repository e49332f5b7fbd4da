"""Entry draws: uniform draws are PEFT's own (checked against PEFT's layer), the frequency bias follows Eq. 5."""
import pytest
import torch
from torch import nn

import fourierft as ff
from fourierft.entries import radial_frequency


def peft_indices(d_out: int, d_in: int, n: int, seed: int) -> torch.Tensor:
    """The entries PEFT's own FourierFT layer draws for a d_out x d_in Linear."""
    import peft
    from torch import nn

    model = peft.get_peft_model(nn.Sequential(nn.Linear(d_in, d_out)),
                                peft.FourierFTConfig(n_frequency=n, random_loc_seed=seed, target_modules=["0"]))
    return model.base_model.model[0].indices["default"]


@pytest.mark.parametrize("d_out,d_in,n,seed", [(24, 40, 100, 2024), (40, 24, 7, 0), (9, 9, 81, 5)])
def test_uniform_draw_is_peft_rule_and_seeded(d_out, d_in, n, seed):
    assert torch.equal(ff.sample_entries(d_out, d_in, n, seed=seed), peft_indices(d_out, d_in, n, seed))
    e = ff.sample_entries(24, 40, 100, seed=2024)
    assert torch.equal(e, ff.sample_entries(24, 40, 100, seed=2024))
    assert not torch.equal(e, ff.sample_entries(24, 40, 100, seed=2025))
    assert len({tuple(p) for p in e.T.tolist()}) == 100


@pytest.mark.parametrize("fc", [0.0, 10.0, 30.0, 60.0])
def test_biased_draw_is_distinct_and_tracks_fc(fc):
    d_out, d_in, n = 128, 160, 400
    e = ff.sample_entries(d_out, d_in, n, seed=1, fc=fc, bandwidth=20.0)
    assert e.shape == (2, n)
    assert len({tuple(p) for p in e.T.tolist()}) == n
    assert (e[0] < d_out).all() and (e[1] < d_in).all() and (e >= 0).all()
    radius = radial_frequency(e, d_out, d_in)
    # the median radius of the exact distribution Eq. 5 puts on the grid
    grid = torch.cartesian_prod(torch.arange(d_out), torch.arange(d_in)).T
    weight = ff.frequency_bias(d_out, d_in, fc, 20.0).flatten()
    order = radial_frequency(grid, d_out, d_in).argsort()
    cdf = weight[order].cumsum(0) / weight.sum()
    expected = radial_frequency(grid, d_out, d_in)[order][(cdf >= 0.5).nonzero()[0, 0]].item()
    assert abs(radius.median().item() - expected) < 2.5
    if fc >= 30:  # far from DC the band-pass is centred on fc
        assert abs(radius.median().item() - fc) < 5.0
    assert torch.equal(e, ff.sample_entries(d_out, d_in, n, seed=1, fc=fc, bandwidth=20.0))


def test_biased_draw_increases_with_fc_and_differs_from_uniform():
    medians = [radial_frequency(ff.sample_entries(64, 64, 200, 0, fc=fc, bandwidth=10.0), 64, 64).median().item()
               for fc in (5.0, 15.0, 25.0)]
    assert medians[0] < medians[1] < medians[2]
    uniform = radial_frequency(ff.sample_entries(64, 64, 200, 0), 64, 64).median().item()
    assert abs(uniform - 5.0) > 10


def test_frequency_bias_matches_eq5_pointwise():
    p = ff.frequency_bias(8, 10, fc=3.0, bandwidth=2.0)
    u, v = 6, 7  # centred offsets -2 and -3
    d = (4 + 9) ** 0.5
    assert p[u, v].item() == pytest.approx(torch.exp(torch.tensor(-(((d * d - 9) / (d * 2)) ** 2), dtype=torch.float64)).item())
    assert p[0, 0] == 0
    assert ff.frequency_bias(8, 10, fc=0.0, bandwidth=2.0)[0, 0] == 1


@pytest.mark.parametrize("n", [0, -3, 4 * 5 + 1])
def test_bad_n(n):
    with pytest.raises(ValueError, match="1 <= n <= 20"):
        ff.sample_entries(4, 5, n, seed=0)


def test_too_narrow_band_is_refused():
    with pytest.raises(ValueError, match="fewer than n=500"):
        ff.sample_entries(32, 32, 500, seed=0, fc=3.0, bandwidth=0.5)


def test_frequency_bias_on_a_layer_above_multinomials_limit():
    # 4100 x 4100 = 16.8M positions > 2^24: torch.multinomial refuses it
    entries = ff.sample_entries(4100, 4100, 500, seed=0, fc=50.0, bandwidth=200.0)
    assert entries.shape == (2, 500) and len({tuple(e) for e in entries.T.tolist()}) == 500
    radius = radial_frequency(entries, 4100, 4100)
    assert radius.median() < 400  # drawn around fc, not uniformly (a uniform draw's median radius is ~1900)


def test_entries_given_by_hand_are_range_checked():
    with pytest.raises(ValueError, match="entries hold row 5 .* outside the 5x6 spectrum"):
        ff.FourierFTLayer(nn.Linear(6, 5), torch.tensor([[5, 0], [0, 0]]), scaling=1.0)
    with pytest.raises(ValueError, match=r"entries of shape \(3, 2\): expected \(2, n\)"):
        ff.FourierFTLayer(nn.Linear(6, 5), torch.zeros(3, 2, dtype=torch.long), scaling=1.0)
    layer = ff.FourierFTLayer(nn.Linear(6, 5), ff.sample_entries(5, 6, 4, seed=0), scaling=1.0)
    with pytest.raises(ValueError, match="entries hold column -1"):
        layer.set_entries(torch.tensor([[0, 1, 2, 3], [0, 1, 2, -1]]))
