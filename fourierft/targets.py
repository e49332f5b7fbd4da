"""Which modules of a model an adapter touches: one set of name-matching rules for the library and the suite."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional, Union

from torch import nn

from .wrapped import SUPPORTED

# query/value projections per model family (PEFT's default-target table), tried in order, the most specific names
# first: BERT/RoBERTa/ELECTRA (and transformers-4 ViT); LLaMA/Mistral/Qwen/Gemma/OPT/BART (and transformers-5 ViT);
# DeBERTa-v2; GPT-2 (fused); timm ViT (fused); BLOOM/GPT-NeoX/Falcon (fused); MPT (fused); CodeGen (fused);
# T5 and MPNet (attn.q / attn.v); DeBERTa (fused in_proj)
DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("query_proj", "value_proj"), ("c_attn",), ("qkv",),
                   ("query_key_value",), ("Wqkv",), ("qkv_proj",), ("q", "v"), ("in_proj",))

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
        families = "; ".join("/".join(f) for f in DEFAULT_TARGETS)
        what = (f"target_modules={target_modules!r} matches" if target_modules is not None
                else f"no query/value projection ({families}) was detected:")
        raise ValueError(f"{what} no module of {type(model).__name__}; set target_modules to suffixes "
                         f"or a regex over these Linear/Conv1D modules: {describe_names(linears)}")
    return found


def describe_names(names: list[str], most: int = 40) -> str:
    """Module names grouped by pattern, layer indices as "*": "encoder.layer.*.attention.self.query (12), ..."."""
    groups: dict[str, int] = {}
    for name in names:
        pattern = ".".join("*" if part.isdigit() else part for part in name.split("."))
        groups[pattern] = groups.get(pattern, 0) + 1
    shown = [p + (f" ({k})" if k > 1 else "") for p, k in groups.items()]
    text = ", ".join(shown[:most]) + (f", ... ({len(shown)} patterns in all)" if len(shown) > most else "")
    return text or "(none)"
