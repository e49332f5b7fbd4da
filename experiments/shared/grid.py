"""A sweep's f_c grid checked before any job starts: points whose frequency band holds fewer than n spectrum positions
on the chosen model's adapted layers would each fail after launch (and Hydra shows only the first failure), so they
are named together and nothing runs."""
from __future__ import annotations

import itertools
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[2] / "conf"
SWEPT = ("method.fc", "method.n", "method.bandwidth")


def sweep_params(sweep: str) -> dict:
    """A committed sweep's `hydra.sweeper.params` (empty for a name that is no committed sweep)."""
    file = CONF / "sweep" / f"{sweep}.yaml"
    if not file.is_file():
        return {}
    data = yaml.safe_load(file.read_text()) or {}
    return data.get("hydra", {}).get("sweeper", {}).get("params", {}) or {}


def grid_values(argv: list[str]) -> dict[str, list]:
    """The values each of SWEPT takes in this command's jobs (a committed sweep's list, or the command line's,
    which wins); keys neither sets are absent."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweep = next((a.partition("=")[2] for a in argv if a.lstrip("+").partition("=")[0] == "sweep"), None)
    texts = [f"{k}={v}" for k, v in sweep_params(sweep).items()] if sweep else []
    texts += [a for a in argv if "=" in a and not a.startswith("-")]
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


def check_grid(argv: list[str]) -> None:
    """Stop a multirun whose f_c grid holds points the model cannot run, naming them, before any job starts."""
    values = grid_values(argv)
    if not any(v for v in values.get("method.fc", []) if v is not None):
        return
    from hydra import compose, initialize_config_dir

    fixed = [a for a in argv if "=" in a and not a.startswith("-") and "," not in a.partition("=")[2]
             and not a.lstrip("+").startswith(("hydra", "sweep="))]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=fixed)
    if "fc" not in cfg.method:
        return  # a method without a frequency bias: check_sweep_method has named the mismatch
    bad = impossible_points(cfg, values)
    if bad:
        raise SystemExit(f"these grid points cannot run on model {cfg.model.name}: f_c's band holds fewer spectrum "
                         "positions than n (widen method.bandwidth, lower method.n, or leave these f_c out); nothing "
                         "was started:\n  " + "\n  ".join(bad))
