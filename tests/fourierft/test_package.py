"""The library's shape: an adapter API in __all__ and nothing else, no import circle between its modules, and a
config module that needs no torch."""
import ast
import subprocess
import sys
from pathlib import Path

import fourierft as ff

from helpers import ROOT

PACKAGE = ROOT / "fourierft"


def local_imports(module: Path) -> set[str]:
    """The fourierft modules `module` imports (relative imports), at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
    return names


def test_no_import_circle():
    graph = {p.stem: local_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}

    def reaches(start, target, seen=()):
        return any(n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in graph.get(start, ()))

    circles = [m for m in graph if reaches(m, m)]
    assert not circles, {m: graph[m] for m in circles}


def test_config_imports_no_torch():
    code = ("import sys, importlib.util; spec = importlib.util.spec_from_file_location('c', 'fourierft/config.py'); "
            "m = importlib.util.module_from_spec(spec); sys.modules['c'] = m; spec.loader.exec_module(m); "
            "print('torch' in sys.modules, m.FourierFTConfig(n=3).basis)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "fourier"]


def test_all_lists_the_adapter_api_only():
    assert set(ff.__all__) == {
        "FourierFTConfig", "FourierFTLayer", "apply_fourierft", "merge", "unmerge", "unload", "set_path",
        "save_adapter", "load_adapter", "adapter_bytes", "export_peft", "import_peft", "trainable_parameters",
        "summary", "fourierft_layers", "sample_entries", "frequency_bias", "MixedAdapters", "BASE"}
    assert all(callable(getattr(ff, name)) for name in ff.__all__ if name != "BASE")
    assert ff.BASE == "base"
