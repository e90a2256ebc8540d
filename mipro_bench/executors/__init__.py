"""Executors: where a prompt runs when the suite scores it (see `base`).

Registered through the `mipro_bench.executors` entry-point group, like the
optimizers, so a new prompt format is a new module and one pyproject line.
"""

from __future__ import annotations

import functools
from importlib import metadata

from mipro_bench.errors import UserError
from mipro_bench.executors.base import EvaluationFailed, Executor

ENTRY_POINT_GROUP = "mipro_bench.executors"

__all__ = ["EvaluationFailed", "Executor", "UnknownExecutor", "executor_names", "get_executor"]


class UnknownExecutor(UserError, ValueError):
    """An executor name no entry point registers."""


@functools.cache
def _classes() -> dict[str, type]:
    found = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {name: found[name].load() for name in sorted(found)}


def executor_names() -> tuple[str, ...]:
    return tuple(_classes())


def get_executor(name: str) -> Executor:
    try:
        return _classes()[name]()
    except KeyError:
        raise UnknownExecutor(
            f"unknown executor {name!r}; known: {', '.join(_classes())}") from None
