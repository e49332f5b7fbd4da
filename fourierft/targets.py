"""Which modules of a model an adapter touches, and the config's rules per module (its n, its fused parts, the
modules it trains in full): one set of name-matching rules for the library and the suite."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional, Union

from torch import nn

from .config import FourierFTConfig
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


def n_for(name: str, config: FourierFTConfig) -> int:
    """The n of module `name`: its n_pattern entry (keys as PEFT's n_frequency_pattern), else config.n."""
    for key, n in config.n_pattern.items():
        if matches_regex_suffix(name, key):
            return n
    return config.n


def fused_blocks(name: str, d_out: int, d_in: int, config: FourierFTConfig) -> Optional[list[tuple[int, int]]]:
    """(first row, rows) of each adapted part when `name` is a fused projection in config.fused, else None. The
    parts of a fused projection (q, k, v of GPT-2's c_attn or timm's qkv) are d_in rows each: a module that is not
    fused (d_out = d_in), or a split into the wrong number of parts (two for a three-way projection, which would
    adapt q plus half of k), is refused."""
    parts = next((v for k, v in config.fused.items() if is_suffix(name, k)), None)
    if parts is None:
        return None
    if d_out != len(parts) * d_in:
        count = d_out // d_in
        fits = (f"{count} part{'s' * (count != 1)} of {d_in} rows" if d_out % d_in == 0
                else "no whole number of d_in-row parts")
        raise ValueError(f"config.fused gives {name!r} the {len(parts)} parts {parts}, but its {d_out} output rows "
                         f"hold {fits} (d_in={d_in}): "
                         + ("it is not a fused projection; remove it from config.fused" if d_out == d_in else
                            "name one part per d_in rows, in their order (GPT-2's c_attn: [q, k, v])"))
    size = d_out // len(parts)
    return [(i * size, size) for i, part in enumerate(parts) if part in config.fused_targets]


def modules_to_save(model: nn.Module, config: FourierFTConfig) -> list[str]:
    """Names of the modules config.modules_to_save selects (suffixes); each key must match something."""
    names = []
    for key in config.modules_to_save or []:
        hits = find_modules(model, [key])
        if not hits:
            raise ValueError(f"modules_to_save entry {key!r} matches no module of {type(model).__name__}")
        names += hits
    return names
