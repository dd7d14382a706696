"""Checks of configuration values, run where a config dataclass is built (its ``__post_init__``), so that a bad
value fails where it enters, with a message naming the option and what it expects.

A rule is a predicate and the words for what it accepts::

    validate(self, {"lr": positive, "batch_size": at_least(1), "precision": one_of(PRECISIONS)})

:func:`validate` first checks every field's type against its annotation (an int is accepted, and stored, as a
float where a float is expected), then the rules.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable, NamedTuple

from .errors import MetapromptError


class Rule(NamedTuple):
    accepts: Callable[[Any], bool]
    expected: str


def at_least(low: int | float) -> Rule:
    return Rule(lambda v: v >= low, f"a number >= {low}")


def in_range(low: float, high: float) -> Rule:
    """low <= v < high."""
    return Rule(lambda v: low <= v < high, f"a number in [{low}, {high})")


def one_of(choices: typing.Iterable[str]) -> Rule:
    choices = tuple(choices)
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


positive = Rule(lambda v: v > 0, "a number > 0")
fraction = Rule(lambda v: 0 < v <= 1, "a number in (0, 1]")


def validate(obj: Any, rules: dict[str, Rule] | None = None, scope: str = "") -> None:
    """Check the types of ``obj``'s fields, then ``rules``; raise naming the first bad option (``scope.name``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        checked = _typed(value, hints.get(f.name, Any))
        if checked is _WRONG:
            raise MetapromptError(f"{scope}{f.name} must be {_type_name(hints[f.name])}, got {value!r}")
        if checked is not value:
            object.__setattr__(obj, f.name, checked)
    for name, rule in (rules or {}).items():
        value = getattr(obj, name)
        if value is not None and not rule.accepts(value):
            raise MetapromptError(f"{scope}{name} must be {rule.expected}, got {value!r}")


_WRONG = object()


def allowed_types(annotation: Any) -> tuple:
    """The types a union annotation allows (``str | None``: str and NoneType); the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _typed(value: Any, annotation: Any) -> Any:
    """``value`` as the annotation wants it (an int as a float), or ``_WRONG``."""
    if annotation is Any:
        return value
    allowed = allowed_types(annotation)
    if value is None:
        return value if type(None) in allowed else _WRONG
    if isinstance(value, bool):
        return value if bool in allowed else _WRONG
    if isinstance(value, float) and not math.isfinite(value):
        return _WRONG  # nan and inf are no setting's value
    if float in allowed and isinstance(value, int):
        return float(value)
    origins = tuple(typing.get_origin(k) or k for k in allowed if k is not type(None))
    return value if isinstance(value, origins) else _WRONG


def _type_name(annotation: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "none"}
    return " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in allowed_types(annotation))
