"""Entry point: python -m experiments.train experiment=glue/roberta_base/mrpc method=lora [-m sweeps].

Composes the config and hands it to the runner (experiments/runner.py), whose return value, the run's selection
metric on a validation split, is what Hydra's sweepers optimise."""
import logging
import os
import sys
from pathlib import Path

from experiments.shared.provenance import git_commit

git_commit()  # the commit of the code this process loads: before the slow imports and before a sweep's later jobs

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def check_presets(argv: list[str]) -> None:
    """A mistyped experiment= stops here with the available presets (Hydra's own error lists none for nested
    names), before anything composes or runs."""
    available = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                       for p in (CONF / "experiment").rglob("*.yaml"))
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") != "experiment" or not value or value.startswith(("glob(", "choice(", "range(")):
            continue
        for name in value.split(","):
            if name and name != "null" and name not in available:
                sys.exit(f"unknown experiment preset {name!r}; available: {', '.join(available)}")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from experiments.runner import run
    from experiments.shared.identity import process_rank

    if process_rank()[0] != 0:
        logging.getLogger().setLevel(logging.WARNING)  # torchrun / accelerate: rank 0 speaks for the run
    if cfg.logger.get("wandb_mode"):
        os.environ.setdefault("WANDB_MODE", cfg.logger.wandb_mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
    return run(cfg)


if __name__ == "__main__":
    check_presets(sys.argv[1:])
    main()
