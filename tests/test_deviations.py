"""docs/deviations.md: every override a row gives to restore the reference composes, passes the settings checks, and
reaches the run's config with the value the row states."""
import re

import pytest
import yaml
from omegaconf import OmegaConf

from experiments.runner import build_family, check_settings

from helpers import ROOT, compose_config


def restore_commands() -> list[str]:
    rows = [line for line in (ROOT / "docs" / "deviations.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| where") and not line.startswith("|---")]
    assert len(rows) > 20
    commands = []
    for row in rows:
        restore = row.strip().strip("|").split(" | ")[-1]
        commands += [c for c in re.findall(r"`([^`]+)`", restore) if "experiment=" in c]
    return commands


@pytest.mark.parametrize("command", restore_commands())
def test_each_restore_override_composes_and_reaches_the_run(command):
    overrides = command.split()
    cfg = compose_config(*overrides)
    check_settings(cfg, build_family(cfg))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        if key == "experiment":
            continue
        node = resolved
        for part in key.split("."):
            node = node[part] if part in node else node[key.split(".")[0]]  # a group choice (judge=openai)
        if isinstance(node, dict):  # a config group chosen by name
            assert node.get("name", value) == value or node.get("_target_"), override
        else:
            expected = yaml.safe_load(value)
            if isinstance(expected, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", expected):
                expected = float(expected)  # Hydra reads 3e-3 as a number, PyYAML as text
            assert node == pytest.approx(expected) if isinstance(expected, float) else node == expected, override
