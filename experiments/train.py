"""Entry point: python -m experiments.train experiment=glue/roberta_base/mrpc method=lora [-m sweeps].

Composes the config and hands it to the runner (experiments/runner.py), whose return value, the run's selection
metric on a validation split, is what Hydra's sweepers optimise."""
import logging
import os
import sys

from experiments.shared.provenance import git_commit

git_commit()  # the commit of the code this process loads: before the slow imports and before a sweep's later jobs

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.presets import experiment_names  # noqa: E402


def check_command(argv: list[str]) -> None:
    """What the command line gets wrong stops here, before anything composes or runs: a mistyped experiment= (with
    the available presets: Hydra's own error lists none for nested names), a committed sweep without -m (it would
    write one default run into the sweep's folder), an Optuna search of no trials."""
    available = experiment_names()
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    check_quoting(argv)
    for arg in argv:
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        if key == "sweep" and value not in ("", "null") and not multirun:
            sys.exit(f"sweep={value} runs several jobs: add -m (python -m experiments.train -m sweep={value} ...)")
        if key == "sweep" and value not in ("", "null"):
            check_sweep_method(value, argv)
        if key == "hydra.sweeper.n_trials" and not (value.isdigit() and int(value) >= 1):
            sys.exit(f"hydra.sweeper.n_trials={value} (accepted: an integer >= 1)")
        if key != "experiment" or not value or value.startswith(("glob(", "choice(", "range(")):
            continue
        for name in value.split(","):
            if name and name != "null" and name not in available:
                sys.exit(f"unknown experiment preset {name!r}; available: {', '.join(available)}")
    if multirun:
        from experiments.shared.grid import check_grid

        check_grid([a for a in argv if a not in ("-m", "--multirun")])


def check_quoting(argv: list[str]) -> None:
    """Hydra's override grammar takes unquoted values in ASCII only; its lexer error does not say to quote them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or arg.isascii():
            continue
        try:
            parser.parse_override(arg)
        except HydraException:  # the lexer's, or the parser's OverrideParseException
            key, _, value = arg.partition("=")
            sys.exit(f"{arg}: Hydra reads a value with non-ASCII characters only when it is quoted: write "
                     f"{key}='{value}' (in a shell, \"{key}='{value}'\")")


def check_sweep_method(sweep: str, argv: list[str]) -> None:
    """A committed sweep that sets one method's settings, asked to run another method (sweep=fc method=lora), stops
    naming both (Hydra would suggest appending the other method's settings with +)."""
    from experiments.shared.grid import sweep_params

    params = sweep_params(sweep)  # empty for an unknown sweep: Hydra names it with the available ones
    method = params.get("method")
    asked = [a.partition("=")[2] for a in argv if a.partition("=")[0] == "method"]
    settings = sorted(k for k in params if k.startswith(("method.", "+method.")))
    if method and asked and asked[-1] != method:
        sys.exit(f"sweep={sweep} sweeps method={method}'s settings ({', '.join(settings)}); it cannot run "
                 f"method={asked[-1]}. Run it without method=, or sweep {asked[-1]}'s own settings "
                 f"(conf/sweep/ lists the committed sweeps)")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from experiments.runner import run
    from experiments.shared.identity import process_rank

    if process_rank()[0] != 0:
        logging.getLogger().setLevel(logging.WARNING)  # torchrun / accelerate: rank 0 speaks for the run
    if cfg.logger.get("wandb_mode"):
        os.environ.setdefault("WANDB_MODE", cfg.logger.wandb_mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
    try:
        return run(cfg)
    except BaseException as e:
        # into this job's own train.log: under -m Hydra reports only the first failure, the other jobs' logs
        # must say why they stopped
        logging.getLogger("experiments.train").error("run failed: %s: %s", type(e).__name__, e, exc_info=True)
        raise


if __name__ == "__main__":
    from experiments.shared.secrets import hide_command_line_secrets

    sys.argv[1:] = hide_command_line_secrets(sys.argv[1:])  # before Hydra records the command line anywhere
    check_command(sys.argv[1:])
    main()
