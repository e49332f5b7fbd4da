"""A sweep's f_c grid checked before any job starts: points whose frequency band holds fewer than n spectrum positions
on the chosen model's adapted layers would each fail after launch (and Hydra shows only the first failure), so they
are named together and nothing runs."""
from __future__ import annotations

import itertools

SWEPT = ("method.fc", "method.n", "method.bandwidth")


def grid_values(params: dict, overrides: list[str]) -> dict[str, list]:
    """The values each of SWEPT takes in a multirun's jobs: the sweeper's `params` (what a sweep file sets), then the
    command line's overrides, which win; keys neither sets are absent."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = [f"{k}={v}" for k, v in params.items()] + [a for a in overrides if "=" in a and not a.startswith("-")]
    values = {}
    for override in OverridesParser.create().parse_overrides(texts):
        key = override.key_or_group.lstrip("+")
        if key in SWEPT:
            if override.is_discrete_sweep():
                values[key] = list(override.sweep_iterator())
            elif not override.is_sweep_override():
                values[key] = [override.value()]
    return values


def layer_shapes(cfg) -> set[tuple[int, int]]:
    """(d_out, d_in) of each spectrum the method would draw on the model `cfg` names (a fused projection's parts
    separately), from its config alone (no weights); empty when the config cannot be had offline."""
    import torch
    from hydra.utils import instantiate
    from transformers import AutoModel

    from fourierft.targets import resolve_targets
    from fourierft.wrapped import layer_shape

    backbone = instantiate(cfg.model)
    try:
        config = backbone.model_config()
    except Exception:  # a hub model out of reach: its jobs stop on that, named, before training
        return set()
    if config is None:
        return set()
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    shapes = set()
    for name in resolve_targets(model, backbone.target_modules):
        d_out, d_in = layer_shape(model.get_submodule(name))
        parts = next((p for key, p in backbone.fused.items() if name == key or name.endswith("." + key)), None)
        shapes.add((d_out // len(parts), d_in) if parts else (d_out, d_in))
    return shapes


def impossible_points(cfg, values: dict[str, list]) -> list[str]:
    """Each (f_c, n, bandwidth) point of the grid that some adapted layer cannot draw n entries for."""
    from fourierft.entries import frequency_bias

    fcs = [fc for fc in values.get("method.fc", [cfg.method.get("fc")]) if fc is not None]
    if not fcs:
        return []
    shapes = layer_shapes(cfg)
    bad = []
    for fc, n, bandwidth in itertools.product(fcs, values.get("method.n", [cfg.method.n]),
                                              values.get("method.bandwidth", [cfg.method.bandwidth])):
        for d_out, d_in in sorted(shapes):
            support = int((frequency_bias(d_out, d_in, float(fc), float(bandwidth)) > 1e-12).sum())
            if support < n:
                bad.append(f"method.fc={fc} method.n={n} method.bandwidth={bandwidth}: {support} positions in a "
                           f"{d_out}x{d_in} layer")
                break
    return bad


def check_grid(cfg, values: dict[str, list]) -> None:
    """Stop a multirun whose f_c grid holds points the model of `cfg` (the sweep's composed config) cannot run,
    naming them, before any job starts."""
    if not any(v for v in values.get("method.fc", []) if v is not None) or "fc" not in cfg.method:
        return  # no f_c grid, or a method without a frequency bias (the sweep-method check names that mismatch)
    bad = impossible_points(cfg, values)
    if bad:
        raise SystemExit(f"these grid points cannot run on model {cfg.model.name}: f_c's band holds fewer spectrum "
                         "positions than n (widen method.bandwidth, lower method.n, or leave these f_c out); nothing "
                         "was started:\n  " + "\n  ".join(bad))
