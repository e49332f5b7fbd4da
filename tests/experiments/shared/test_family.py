"""The family contract (experiments/shared/family.py): an incomplete family fails when it is built, before data or a
model loads; a task definition names a Family; families return what they find instead of keeping it; task
definitions import no family (no import circle, not even for type checkers)."""
import ast
from dataclasses import dataclass

import pytest

from experiments.runner import build_family
from experiments.shared.family import Family, RunLimits, TaskDefinition

from helpers import ROOT, compose_config


class NoPrepare(Family):
    name = "incomplete"
    selection = None

    def load_data(self):
        raise AssertionError("data loaded")

    def load_model(self, backbone, data):
        raise AssertionError("model loaded")

    def evaluate(self, trained, artifacts):
        raise AssertionError("evaluated")


@dataclass(frozen=True)
class IncompleteTask(TaskDefinition):
    family = f"{__name__}.NoPrepare"


@dataclass(frozen=True)
class NotAFamilyTask(TaskDefinition):
    family = "experiments.shared.family.RunLimits"


def test_a_family_missing_a_method_fails_when_built():
    cfg = compose_config("task=mrpc")
    cfg.task.definition = {"_target_": f"{__name__}.IncompleteTask", "name": "toy", "display_name": "Toy"}
    with pytest.raises(TypeError, match="abstract class NoPrepare with abstract method prepare"):
        build_family(cfg)


def test_a_task_definition_must_name_a_family():
    with pytest.raises(TypeError, match="RunLimits' is not a Family subclass"):
        NotAFamilyTask("toy", "Toy").family_class()


def test_a_family_gets_its_own_section_and_the_sections_it_names():
    cfg = compose_config("task=alpaca", "judge=local", "seed=3", "trainer.max_train_samples=7")
    family = build_family(cfg)
    assert family.options is cfg.task or family.options == cfg.task
    assert family.judge == cfg.judge and family.run == RunLimits(3, cfg.trainer.max_length, 7, None)
    with pytest.raises(TypeError, match=r"Instruct needs the config sections \['judge'\]"):
        type(family)(family.task, cfg.task, cfg.data, family.run)


FAMILY_MODULES = sorted(p for p in (ROOT / "experiments").glob("*/family.py") if p.parent.name != "shared")


@pytest.mark.parametrize("module", [*FAMILY_MODULES, ROOT / "experiments/shared/causal.py"],
                         ids=lambda p: p.parent.name if p.name == "family.py" else p.stem)
def test_families_return_what_they_find(module):
    """A family's methods return their findings to the runner, which passes them on: nothing is set on self."""
    families = [c for c in ast.walk(ast.parse(module.read_text())) if isinstance(c, ast.ClassDef)
                and any("Family" in ast.unparse(b) for b in c.bases)]
    assert families, module
    stored = [ast.unparse(node) for family in families for node in ast.walk(family)
              if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign))
              and any(isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self"
                      for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))]
    assert not stored, (module, stored)
