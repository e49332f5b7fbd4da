"""Task definitions by name, read from conf/task/<name>.yaml outside a Hydra run (tables, the `evaluate` metric
modules): the same data the runner instantiates."""
from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from .family import TaskDefinition, check_name

CONF = Path(__file__).resolve().parents[2] / "conf"
TASK_CONF = CONF / "task"


def task_names() -> list[str]:
    return sorted(p.stem for p in TASK_CONF.glob("*.yaml"))


def load_task(name: str) -> TaskDefinition:
    """The TaskDefinition of conf/task/<name>.yaml; an unknown name lists the known ones."""
    check_name("task", name)
    file = TASK_CONF / f"{name}.yaml"
    if not file.is_file():
        raise ValueError(f"unknown task {name!r}; known: {', '.join(task_names())}")
    # the task file alone, with the default paths its definition may name (a local copy under paths.data_dir)
    config = OmegaConf.create({"task": OmegaConf.load(file), "paths": OmegaConf.load(CONF / "paths" / "default.yaml")})
    return instantiate(config.task.definition, _convert_="all")
