"""Frozen dataclasses to JSON-ready dicts and back, driven by their type hints.

The comparison is a tree of small frozen dataclasses; writing a to_dict and a
from_dict by hand for each would let a field be written under one name and
read under another. One generic pair, checked by a round-trip test, cannot.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any


class SerdeError(ValueError):
    """A dict that does not have the shape of the dataclass it is read into."""


def to_jsonable(obj: Any) -> Any:
    """Dataclasses to dicts, tuples to lists, recursively; other values as they are."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(tp: Any, data: Any, where: str = "$") -> Any:
    """Rebuild a value of type `tp` from what `to_jsonable` wrote."""
    if tp is Any:
        return data
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            if type(None) in args:
                return None
            raise SerdeError(f"{where}: null is not allowed")
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return from_jsonable(option, data, where)
            except SerdeError as exc:
                errors.append(str(exc))
        raise SerdeError("; ".join(errors))
    if origin is typing.Literal:
        if data not in args:
            raise SerdeError(f"{where}: {data!r} is not one of {args!r}")
        return data
    if origin in (tuple, list):
        if not isinstance(data, list | tuple):
            raise SerdeError(f"{where}: expected a list, got {type(data).__name__}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(data):
                raise SerdeError(f"{where}: expected {len(args)} items, got {len(data)}")
            return tuple(from_jsonable(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(
                zip(args, data, strict=True)))
        item = args[0] if args else Any
        values = [from_jsonable(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        if not isinstance(data, dict):
            raise SerdeError(f"{where}: expected an object, got {type(data).__name__}")
        value_type = args[1] if args else Any
        return {str(k): from_jsonable(value_type, v, f"{where}.{k}") for k, v in data.items()}
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, data, where)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise SerdeError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise SerdeError(f"{where}: expected an integer, got {data!r}")
        return data
    if tp in (str, bool):
        if not isinstance(data, tp):
            raise SerdeError(f"{where}: expected {tp.__name__}, got {data!r}")
        return data
    if tp is type(None):
        if data is not None:
            raise SerdeError(f"{where}: expected null, got {data!r}")
        return None
    raise SerdeError(f"{where}: cannot read type {tp!r}")


def _dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SerdeError(f"{where}: expected an object for {cls.__name__}, got "
                         f"{type(data).__name__}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SerdeError(f"{where}: {cls.__name__} needs field {f.name!r}")
            continue
        kwargs[f.name] = from_jsonable(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**kwargs)
