"""Which modules of a model an adapter touches: one set of name-matching rules for the library and the suite."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional, Union

from torch import nn

from .layer import SUPPORTED

# query/value projections per model family, tried in order: BERT/RoBERTa (and transformers-4 ViT), LLaMA/Mistral/
# Qwen (and transformers-5 ViT), GPT-2, timm ViT
DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("c_attn",), ("qkv",))

Patterns = Union[str, Iterable[str]]


def is_suffix(name: str, key: str) -> bool:
    """True when `key` is `name` or its last dotted components ("value" selects "encoder.layer.0.value",
    not "encoder.layer.0.my_value")."""
    return name == key or name.endswith("." + key)


def is_within(name: str, module: str) -> bool:
    """True when `name` (a parameter or module name) is `module` itself or lies inside it."""
    return name == module or name.startswith(module + ".")


def matches(name: str, patterns: Patterns) -> bool:
    """The library's target rule: a string is a regular expression over the full module name; a list holds
    module-name suffixes (see `is_suffix`)."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(is_suffix(name, key) for key in patterns)


def matches_regex_suffix(name: str, key: str) -> bool:
    """PEFT's rule for per-module keys (n_frequency_pattern): `key` is a regex matched against a dotted suffix."""
    return re.fullmatch(rf"(.*\.)?{key}", name) is not None


def find_modules(model: nn.Module, patterns: Patterns, supported_only: bool = False) -> list[str]:
    """Names of the modules of `model` selected by `patterns`, in model order."""
    return [name for name, module in model.named_modules()
            if name and matches(name, patterns) and (not supported_only or isinstance(module, SUPPORTED))]


def resolve_targets(model: nn.Module, target_modules: Optional[Patterns]) -> list[str]:
    """Names of the modules `target_modules` selects; None detects the family's query/value projections.

    Raises:
        ValueError: nothing matched; the message lists the model's Linear/Conv1D modules to choose from.
    """
    if target_modules is not None:
        found = find_modules(model, target_modules)
    else:
        found = []
        for family in DEFAULT_TARGETS:
            found = find_modules(model, family, supported_only=True)
            if found:
                break
    if not found:
        linears = [n for n, m in model.named_modules() if isinstance(m, SUPPORTED)]
        shown = ", ".join(linears[:40]) + (f", ... ({len(linears)} in all)" if len(linears) > 40 else "")
        what = (f"target_modules={target_modules!r} matches" if target_modules is not None
                else "no query/value projection (query/value, q_proj/v_proj, c_attn, qkv) was detected:")
        raise ValueError(f"{what} no module of {type(model).__name__}; set target_modules to suffixes "
                         f"or a regex over these Linear/Conv1D modules: {shown or '(none)'}")
    return found
