"""The one result schema: what ran (config, commit), what it cost (parameters, bytes, time, memory), what it scored,
and how tables show it. Every family's runs are written by `ResultStore`; tables, figures and the comparison script
read them back through `read_results`."""
from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from fourierft.files import atomic_path

from .identity import RunIdentity


@dataclass
class RunResult:
    """One run. `selection` ({metric, split, mode, value}) chooses among configurations and is never a test score;
    `report` says how tables show it; `outcome` holds the family's own fields (metrics, epochs, best, last, ...),
    stored at the top level of the JSON."""

    family: str
    task: str
    model: str
    method: str
    variant: str
    seed: int
    config_id: str
    trainable_params: int
    head_params: int
    total_params: int
    adapter_bytes: Optional[int]
    selection: dict
    report: dict
    world_size: int
    effective_batch_size: int
    wall_time_s: float
    peak_memory: dict
    git_commit: str
    git_dirty: bool
    versions: dict
    device: str
    config: dict
    # the config groups Hydra composed the run from (experiment: the preset or your experiment file, method, task,
    # sweep, ...); absent (None) where no Hydra app composed it, and in results written before it was recorded
    composed_from: Optional[dict] = None
    outcome: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        outcome = data.pop("outcome")
        clash = set(outcome) & set(data)
        if clash:
            raise ValueError(f"a family's outcome may not set the result's own fields {sorted(clash)}")
        return {**data, **outcome}

    @classmethod
    def from_json(cls, data: dict) -> RunResult:
        names = {f.name for f in fields(cls)} - {"outcome"}
        missing = names - set(data) - {"composed_from"}
        if missing:
            raise ValueError(f"not a result of this suite's schema: it lacks {sorted(missing)}")
        return cls(**{k: data[k] for k in names if k in data},
                   outcome={k: v for k, v in data.items() if k not in names})

    @property
    def display_name(self) -> str:
        return self.report.get("display_name", self.task)


def peak_memory_mb() -> dict:
    import torch

    peak = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def environment() -> dict:
    import torch
    import transformers

    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {"versions": versions, "device": device}


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


class ResultStore:
    """The results file of one run and its pending twin (evaluated, not yet finished: a judge that failed)."""

    def __init__(self, identity: RunIdentity):
        self.file = identity.result_file
        self.pending_file = identity.artifacts / "pending.json"

    def read(self) -> Optional[dict]:
        """The stored result, or None when there is none (no side effects)."""
        return json.loads(self.file.read_text()) if self.file.is_file() else None

    def read_pending(self) -> Optional[dict]:
        return json.loads(self.pending_file.read_text()) if self.pending_file.is_file() else None

    def remove_stale_temporaries(self) -> None:
        """Temporary files a kill left during an earlier write."""
        for stale in self.file.parent.glob(f".{self.file.name}.*.tmp"):
            stale.unlink()

    def write_pending(self, result: dict) -> None:
        write_json_atomic(self.pending_file, result)

    def write(self, result: dict) -> None:
        write_json_atomic(self.file, result)
        self.pending_file.unlink(missing_ok=True)


def read_results(folder: Path, sweeps: bool = False) -> list[RunResult]:
    """Every run's results file under `folder`; runs under a `sweeps/` folder only when asked (they have their own
    figures and never mix into the main tables). Files that are not results are skipped with a word."""
    runs = []
    for file in sorted(Path(folder).rglob("*seed*.json")):
        if not sweeps and "sweeps" in file.relative_to(folder).parts[:-1]:
            continue
        try:
            runs.append(RunResult.from_json(json.loads(file.read_text())))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as e:
            print(f"skipping {file}: {e}", file=sys.stderr)
    return runs
