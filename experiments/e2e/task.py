"""The E2E NLG task as data (conf/task/e2e.yaml builds it)."""
from __future__ import annotations

from dataclasses import dataclass

from ..shared.family import TaskDefinition


@dataclass(frozen=True)
class E2ETask(TaskDefinition):
    """E2E NLG: the official CSVs, or `hub_id` on the hub."""

    family = "experiments.e2e.family.E2E"
    hub_id: str = "tuetschek/e2e_nlg"
