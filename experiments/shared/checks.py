"""What a command gets wrong that Hydra itself accepts, stopped before any job runs, as a Hydra callback
(conf/train.yaml, hydra.callbacks): whatever composes the run (`python -m experiments.train`, `fourierft-train`,
a sweeper, a launcher), the composed config is checked, never the command line's text."""
from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .grid import check_grid, grid_values


def chosen(config: DictConfig, group: str):
    """The option the config composed for `group` (None where it chose none)."""
    choice = config.hydra.runtime.choices.get(group)
    return None if choice in (None, "null") else choice


def sweeper_params(config: DictConfig) -> dict:
    params = config.hydra.sweeper.get("params")
    return OmegaConf.to_container(params) if params else {}


def check_sweep_method(sweep: str, params: dict, overrides: list[str]) -> None:
    """A sweep that sets one method's settings, asked to run another method (sweep=fc method=lora), stops naming
    both (Hydra would suggest appending the other method's settings with +)."""
    method = params.get("method")
    asked = []
    for override in OverridesParser.create().parse_overrides([o for o in overrides if "=" in o]):
        if override.key_or_group == "method":
            asked = list(override.sweep_iterator()) if override.is_discrete_sweep() else [override.value()]
    settings = sorted(k for k in params if k.startswith(("method.", "+method.")))
    other = [m for m in asked if m != method]
    if method and other:
        raise SystemExit(f"sweep={sweep} sweeps method={method}'s settings ({', '.join(settings)}); it cannot run "
                         f"method={other[0]}. Run it without method=, or sweep {other[0]}'s own settings "
                         "(conf/sweep/ lists the committed sweeps)")


class CheckCommand(Callback):
    """A committed sweep without -m (it would write one default run into the sweep's folder), a sweep asked to run
    a method whose settings it does not sweep, an Optuna search of no trials, and an f_c grid whose points the
    model cannot run: each stops with what to change (SystemExit: Hydra turns a callback's Exception into a
    warning and carries on)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        sweep = chosen(config, "sweep")
        if sweep:
            raise SystemExit(f"sweep={sweep} runs several jobs: add -m (python -m experiments.train -m sweep={sweep} "
                             "...)")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        overrides = list(config.hydra.overrides.task)
        params = sweeper_params(config)
        sweep = chosen(config, "sweep")
        if sweep:
            check_sweep_method(sweep, params, overrides)
        trials = config.hydra.sweeper.get("n_trials")
        if trials is not None and not (isinstance(trials, int) and trials >= 1):
            raise SystemExit(f"hydra.sweeper.n_trials={trials} (accepted: an integer >= 1)")
        check_grid(config, grid_values(params, overrides))
