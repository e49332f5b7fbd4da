"""Checking settings before anything loads. The rules live with what they describe (a method class's `settings`, a
family's `settings`, the trainer's in trainer.py); this module holds the rule vocabulary and collects every problem
into one message that lists each bad key, its value and what is accepted, instead of a crash deep in a library or a
run that trains on nonsense."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Number

from omegaconf import DictConfig, ListConfig, OmegaConf

Rule = tuple[Callable[[object], bool], str]  # (check, what is accepted)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(v)


def int_at_least(low) -> Rule:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def number_above(low) -> Rule:
    return (lambda v: _is_number(v) and v > low), f"a finite number > {low}"


def number_at_least(low) -> Rule:
    return (lambda v: _is_number(v) and v >= low), f"a finite number >= {low}"


def fraction(low_open: bool = False) -> Rule:
    """A number in [0, 1), or (0, 1) with `low_open`."""
    if low_open:
        return (lambda v: _is_number(v) and 0 < v < 1), "a number in (0, 1)"
    return (lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"


def nonzero() -> Rule:
    return (lambda v: _is_number(v) and v != 0), "a finite non-zero number"


def names() -> Rule:
    """A non-empty list of distinct strings."""
    def check(v):
        items = list(v) if isinstance(v, (list, ListConfig)) else None
        return bool(items) and all(isinstance(i, str) and i for i in items) and len(set(items)) == len(items)
    return check, "a non-empty list of distinct names, e.g. [q, v]"


def optional(rule: Rule) -> Rule:
    check, text = rule
    return (lambda v: v is None or check(v)), f"null or {text}"


def settings_of(cls) -> dict[str, Rule]:
    """The `settings` rules of a class and its bases, the subclass's winning."""
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        rules.update(vars(klass).get("settings", {}))
    return rules


def problems(cfg: DictConfig, prefix: str, rules: Mapping[str, Rule]) -> list[str]:
    """Each `prefix.key` of `cfg` outside its rule; keys a config lacks (a method without `r`) are not checked."""
    found = []
    for key, (check, accepted) in rules.items():
        name = f"{prefix}.{key}" if prefix else key
        try:
            value = OmegaConf.select(cfg, name, throw_on_missing=True, default=KeyError)
        except Exception as e:  # an interpolation that does not resolve
            found.append(f"{name}: {e}")
            continue
        if value is not KeyError and not check(value):
            found.append(f"{name}={value!r} (accepted: {accepted})")
    return found


def validate(cfg: DictConfig, owners: Mapping[str, Mapping[str, Rule]]) -> None:
    """Raise ValueError naming every setting outside its accepted range; `owners` maps a config prefix ("method",
    "trainer", "task", "" for top-level keys) to the rules its owner declares."""
    found = [p for prefix, rules in owners.items() for p in problems(cfg, prefix, rules)]
    if found:
        raise ValueError("invalid settings, nothing was loaded or trained:\n  " + "\n  ".join(found))
