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


def check_quoting(argv: list[str]) -> None:
    """Hydra's override grammar takes unquoted values in ASCII only; its lexer error does not say to quote them.
    (This rewords a parse error Hydra raises before any config exists; every check of what a command asks for is
    made on the composed config, by experiments/shared/checks.py.)"""
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


def cli() -> None:
    """`fourierft-train`, the same as `python -m experiments.train`."""
    from experiments.shared.secrets import hide_command_line_secrets

    sys.argv[1:] = hide_command_line_secrets(sys.argv[1:])  # before Hydra records the command line anywhere
    check_quoting(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
