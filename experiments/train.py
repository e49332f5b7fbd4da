"""Entry point: python -m experiments.train experiment=glue/roberta_base/mrpc method=lora [-m sweeps]."""
import os

import hydra
from omegaconf import DictConfig

RUNNERS = {"glue": "experiments.glue", "e2e": "experiments.e2e", "instruct": "experiments.instruct"}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    import importlib

    if cfg.logger.get("wandb_mode"):
        os.environ.setdefault("WANDB_MODE", cfg.logger.wandb_mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
    family = cfg.task.family
    if family not in RUNNERS:
        raise ValueError(f"task family {family!r} has no runner; accepted: {', '.join(RUNNERS)}")
    return importlib.import_module(RUNNERS[family]).run(cfg)


if __name__ == "__main__":
    main()
