"""The library's shape: an adapter API in __all__ and nothing else, and a config module that needs no torch. Who
imports whom is pyproject.toml's import contracts (lint-imports, make lint); tests/test_contracts.py checks they
cover every module."""
import re
import subprocess
import sys
from pathlib import Path

import fourierft as ff

from helpers import ROOT

PACKAGE = ROOT / "fourierft"


def test_config_imports_no_torch():
    code = ("import sys, importlib.util; spec = importlib.util.spec_from_file_location('c', 'fourierft/config.py'); "
            "m = importlib.util.module_from_spec(spec); sys.modules['c'] = m; spec.loader.exec_module(m); "
            "print('torch' in sys.modules, m.FourierFTConfig(n=3).basis)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "fourier"]


def test_the_documented_api_is_the_exported_one():
    """What the README and the docs call as `ff.<name>` is exported, and every export has its entry in the API
    reference (docs/api.md, rendered from the docstrings): a new function is exported and documented, or neither."""
    used = set()
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        used |= set(re.findall(r"\bff\.([A-Za-z_]\w*)", page.read_text()))
    assert used <= set(ff.__all__) | {"__all__"}, sorted(used - set(ff.__all__))
    reference = (ROOT / "docs" / "api.md").read_text()
    undocumented = [n for n in ff.__all__ if f"::: fourierft.{n}\n" not in reference and f"fourierft.{n}\n" not in reference]
    assert not undocumented, undocumented
    assert all(getattr(ff, n).__doc__ for n in ff.__all__ if callable(getattr(ff, n)))


def test_each_library_module_has_its_test_file():
    """tests/fourierft mirrors fourierft/: module a/b.py is tested in tests/fourierft/a/test_b.py (the package's
    __init__ here, in test_package.py)."""
    missing = []
    for module in PACKAGE.rglob("*.py"):
        relative = module.relative_to(PACKAGE)
        name = "test_package.py" if relative == Path("__init__.py") else f"test_{module.stem}.py"
        if module.stem == "__init__" and relative != Path("__init__.py"):
            continue  # a subpackage's __init__ re-exports its modules
        if not (ROOT / "tests" / "fourierft" / relative.parent / name).is_file():
            missing.append(str(relative))
    assert not missing, missing
