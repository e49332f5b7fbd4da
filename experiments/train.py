"""Entry point: python -m experiments.train experiment=glue/roberta_base/mrpc method=lora [-m sweeps].

The task config names its recipe (`task.recipe._target_`); this file only composes and calls it."""
import os

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    if cfg.logger.get("wandb_mode"):
        os.environ.setdefault("WANDB_MODE", cfg.logger.wandb_mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
    return instantiate(cfg.task.recipe)(cfg)


if __name__ == "__main__":
    main()
