"""The suite's FourierFT method warns when alpha puts |dW| / |W| at init far outside what the paper's presets start
from, and names the alpha that brings it back."""
import logging

import pytest

from experiments.shared.methods import ALPHA_RANGE, FourierFT, init_delta_ratios

from helpers import build


class Backbone:
    target_modules, head, fused = ["query", "value"], ["classifier"], {}


def apply(scaling):
    method = FourierFT(name="fourierft", lr=0.1, head_lr=0.01, n=40, scaling=scaling)
    return method.apply(build("bert"), Backbone())


@pytest.mark.parametrize("scaling", [1e5, 1e-3])
def test_alpha_far_from_the_presets_range_is_named_with_one_that_fits(caplog, scaling):
    with caplog.at_level(logging.WARNING, logger="experiments.shared.methods"):
        apply(scaling)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    suggested = float(warning.split("method.scaling=")[1].split()[0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="experiments.shared.methods"):
        model = apply(suggested)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    ratios = sorted(init_delta_ratios(model))
    assert ALPHA_RANGE[0] <= ratios[len(ratios) // 2] <= ALPHA_RANGE[1]
