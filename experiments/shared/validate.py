"""Every setting a run reads, checked before any model or data loads: one message lists each bad key, its value and
what is accepted, instead of a crash deep in a library or a run that trains on nonsense."""
from __future__ import annotations

import math
from numbers import Number

from omegaconf import DictConfig, OmegaConf


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low):
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _number_above(low):
    return (lambda v: _is_number(v) and v > low), f"a finite number > {low}"


def _number_at_least(low):
    return (lambda v: _is_number(v) and v >= low), f"a finite number >= {low}"


def _optional(rule):
    check, text = rule
    return (lambda v: v is None or check(v)), f"null or {text}"


# key -> (check, what is accepted); keys a config lacks (a method without `r`) are not checked
RULES = {
    "seed": _int_at_least(0),
    "trainer.epochs": _number_above(0),
    "trainer.batch_size": _int_at_least(1),
    "trainer.eval_batch_size": _int_at_least(1),
    "trainer.grad_accum": _int_at_least(1),
    "trainer.max_length": _int_at_least(1),
    "trainer.warmup_ratio": ((lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    "trainer.max_grad_norm": _number_above(0),
    "trainer.max_steps": ((lambda v: _is_int(v) and (v == -1 or v >= 1)), "-1 (use epochs) or an integer >= 1"),
    "trainer.max_train_samples": _optional(_int_at_least(1)),
    "trainer.max_eval_samples": _optional(_int_at_least(1)),
    "trainer.logging_steps": _int_at_least(1),
    "trainer.num_workers": _int_at_least(0),
    "method.lr": _number_above(0),
    "method.head_lr": _number_above(0),
    "method.weight_decay": _number_at_least(0),
    "method.n": _int_at_least(1),
    "method.scaling": ((lambda v: _is_number(v) and v != 0), "a finite non-zero number"),
    "method.entry_seed": _int_at_least(0),
    "method.fc": _optional(_number_at_least(0)),
    "method.bandwidth": _number_above(0),
    "method.r": _int_at_least(1),
    "method.alpha": _number_above(0),
    "method.dropout": ((lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    "task.max_test_mrs": _optional(_int_at_least(1)),
    "task.max_questions": _optional(_int_at_least(1)),
    "task.max_new_tokens": _int_at_least(1),
    "task.generation_batch_size": _int_at_least(1),
    "task.image_size": _optional(_int_at_least(16)),
    "task.validation_fraction": ((lambda v: _is_number(v) and 0 < v < 1), "a number in (0, 1)"),
    "task.label_smoothing": ((lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
}


def validate(cfg: DictConfig) -> None:
    """Raise ValueError naming every setting outside its accepted range."""
    problems = []
    for key, (check, accepted) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True, default=KeyError)
        except Exception as e:  # an interpolation that does not resolve
            problems.append(f"{key}: {e}")
            continue
        if value is KeyError:
            continue
        if not check(value):
            problems.append(f"{key}={value!r} (accepted: {accepted})")
    if problems:
        raise ValueError("invalid settings, nothing was loaded or trained:\n  " + "\n  ".join(problems))
