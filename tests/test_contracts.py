"""pyproject.toml's import contracts (checked by lint-imports in make lint) cover the whole tree: every library
module sits on a floor, every family is named where families are kept apart. A module or family added without
its line would escape the rules unnoticed."""
import pytest

from helpers import ROOT

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")


def contracts() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def on_floors(contract: dict) -> set[str]:
    return {name.strip() for layer in contract["layers"] for name in layer.split("|")}


def test_every_library_module_sits_on_a_floor():
    found = contracts()
    library = next(c for c in found.values() if c.get("containers") == ["fourierft"])
    serving = next(c for c in found.values() if c.get("containers") == ["fourierft.serving"])
    modules = {p.stem for p in (ROOT / "fourierft").glob("*.py") if p.stem != "__init__"} | {"serving"}
    assert modules == on_floors(library)
    assert {p.stem for p in (ROOT / "fourierft" / "serving").glob("*.py") if p.stem != "__init__"} == on_floors(serving)


def test_every_family_is_named_where_families_are_kept_apart():
    families = {f"experiments.{p.parent.name}" for p in (ROOT / "experiments").glob("*/task.py")}
    assert families  # found by their task.py: a new family fails here until pyproject.toml names it
    found = contracts().values()
    independent = next(c for c in found if c["type"] == "independence")
    assert set(independent["modules"]) == families
    for contract in (c for c in found if c["type"] == "forbidden" and "experiments.glue.family" in
                     " ".join(c["forbidden_modules"]) + " ".join(c["forbidden_modules"])):
        named = {m.rpartition(".family")[0] if m.endswith(".family") else m for m in contract["forbidden_modules"]}
        assert named == families, contract["name"]
