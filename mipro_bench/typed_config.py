"""Frozen, typed budgets and options that each optimizer declares for itself.

An optimizer's budget (what it may spend) and options (how it runs) are frozen
dataclasses in its own module. The matrix file, `--mipro-budget OPT.KEY=N` and
the CLIs all build them through `parse`, so an unknown key or a wrong type is
one line naming the optimizer, the key and what is known, wherever it was typed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Self

from mipro_bench.errors import UsageError


def _allowed(hint: Any) -> tuple[type, ...]:
    """The plain types a field accepts (`int | None` -> (int, NoneType))."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(hint):
            out += _allowed(arg)
        return out
    if origin is typing.Literal:
        return tuple({type(v) for v in typing.get_args(hint)})
    if origin is not None:
        return (origin,)
    return (hint,) if isinstance(hint, type) else (object,)


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            values = _literal_values(arg)
            if values is not None:
                return values
    return None


@dataclasses.dataclass(frozen=True)
class TypedConfig:
    """Base of every optimizer's Budget and Options: parse, validate, serialise."""

    @classmethod
    def parse(cls, values: Mapping[str, Any], *, where: str) -> Self:
        """Build from a mapping (TOML table, parsed flags); one-line UsageError otherwise."""
        hints = typing.get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(known)}")
        clean: dict[str, Any] = {}
        for key, value in values.items():
            hint = hints[key]
            allowed = _allowed(hint)
            if isinstance(value, bool) and bool not in allowed:
                ok = False
            elif float in allowed and isinstance(value, int):
                ok, value = True, float(value)
            else:
                ok = object in allowed or isinstance(value, allowed)
            literal = _literal_values(hint)
            if ok and literal is not None and value is not None and value not in literal:
                ok = False
            if not ok:
                expected = (", ".join(map(repr, literal)) if literal is not None
                            else " or ".join(t.__name__ for t in allowed))
                raise UsageError(f"{where}: {key} = {value!r} is not valid (expected "
                                 f"{expected})")
            clean[key] = value
        try:
            return cls(**clean)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The set knobs only (None means "not set"), as records and tables show them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


def check_at_least(name: str, value: int | float | None, minimum: int | float) -> None:
    """One-line UsageError unless `value` is None or at least `minimum`."""
    if value is not None and value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")


@dataclasses.dataclass(frozen=True)
class BudgetBase(TypedConfig):
    """What an optimizer may spend. Counts are checked non-negative when parsed."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise UsageError(f"{f.name} must be >= 0, got {value}")

    def for_mode(self, mode: str) -> Self:
        """The budget a case of `mode` runs with (e.g. no demos when instruction-only)."""
        return self


@dataclasses.dataclass(frozen=True)
class OptionsBase(TypedConfig):
    """How an optimizer runs (adapter options); validated in each subclass's __post_init__."""
