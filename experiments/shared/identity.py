"""A run's identity: which settings make it comparable (hashed into its config id), which process writes, and where
its files live. Paths only; nothing here touches the disk."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .family import check_name

# the task's definition (dataset ids, columns, display names) is code-like data, recorded in the result's config and
# its git commit; the identity hashes the settings a user varies
DEFINITION_KEY = "definition"


def process_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun / accelerate launch (their RANK and WORLD_SIZE), (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def comparable_settings(config: dict, world_size: int = 1) -> dict:
    """The settings that make two runs comparable: task (less its definition), model, method and trainer, and the
    process count when above one (a per-device batch is another global batch on two processes). The seed is not
    among them: seeds of one configuration share a config id."""
    settings = {k: config[k] for k in ("task", "model", "method", "trainer")}
    settings["task"] = {k: v for k, v in settings["task"].items() if k != DEFINITION_KEY}
    if world_size > 1:
        settings["world_size"] = world_size
    return settings


def config_id(settings: dict) -> str:
    """Short stable hash of the comparable settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class RunIdentity:
    family: str
    task: str
    model: str
    method: str
    seed: int
    config_id: str
    rank: int
    world_size: int
    results_dir: Path
    checkpoint_dir: Path

    @classmethod
    def of(cls, cfg: DictConfig, family: str, task: str) -> RunIdentity:
        """The identity of the run `cfg` describes; names that become folders are checked first."""
        for setting, value in (("family", family), ("task.name", task), ("model.name", cfg.model.name),
                               ("method.name", cfg.method.name)):
            check_name(setting, value)
        for setting in ("results_dir", "checkpoint_dir"):
            check_folder(setting, Path(cfg[setting]))
        rank, world_size = process_rank()
        settings = comparable_settings(OmegaConf.to_container(cfg, resolve=True), world_size)
        return cls(family, task, cfg.model.name, cfg.method.name, cfg.seed, config_id(settings), rank, world_size,
                   Path(cfg.results_dir), Path(cfg.checkpoint_dir))

    @property
    def writer(self) -> bool:
        """Rank 0 writes results, adapters and locks; the other ranks train beside it."""
        return self.rank == 0

    @property
    def stem(self) -> str:
        return f"{self.method}-{self.config_id}-seed{self.seed}"

    @property
    def result_file(self) -> Path:
        return within(self.results_dir, self.results_dir / self.family / self.model / self.task / f"{self.stem}.json")

    @property
    def artifacts(self) -> Path:
        """The adapter and the family's files (predictions, answers) sit in a folder named like the result."""
        return self.result_file.with_suffix("")

    @property
    def checkpoints(self) -> Path:
        return within(self.checkpoint_dir,
                      self.checkpoint_dir / f"{self.family}-{self.model}-{self.task}-{self.stem}")

    @property
    def run_name(self) -> str:
        return f"{self.model}-{self.task}-{self.method}-s{self.seed}"


def check_folder(setting: str, folder: Path) -> None:
    """A folder setting whose path, or a parent of it, is an existing file stops here, named (rather than as a
    NotADirectoryError once a run has trained)."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                where = "is" if path == folder else f"lies under {path}, which is"
                raise ValueError(f"{setting}={folder} {where} a file, not a folder: choose a folder path")
            return


def within(root: Path, path: Path) -> Path:
    """`path`, proven to lie under `root` (after resolving links and ".."), else an error."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        lexical, lexical_root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
        if lexical == lexical_root or lexical_root in lexical.parents:  # the names stay inside: a link leads out
            link = lexical_root
            for part in lexical.relative_to(lexical_root).parts:
                link = link / part
                if link.is_symlink():
                    break
            raise ValueError(f"{link} is a symbolic link to {link.resolve()}, outside {root}: the run would write "
                             "its files there; replace the link by a real folder, or choose another folder")
        raise ValueError(f"{path} would lie outside {root}: a name in the config is not a plain folder name")
    return path
