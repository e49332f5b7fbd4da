"""The instruction-tuning task as data (conf/task/alpaca.yaml builds it)."""
from __future__ import annotations

from dataclasses import dataclass

from ..shared.family import TaskDefinition


@dataclass(frozen=True)
class InstructTask(TaskDefinition):
    """Instruction tuning on Alpaca: a local JSON, or `hub_id` on the hub; the benches come from data.bench_dir."""

    family = "experiments.instruct.family.Instruct"
    hub_id: str = "tatsu-lab/alpaca"
