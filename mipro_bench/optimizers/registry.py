"""The optimizers this installation knows: every `mipro_bench.optimizers` entry point.

Built-ins are listed in this project's own pyproject.toml, exactly as a
third-party package would list its optimizer (as simonw/llm registers its
built-in models through the hook its plugins use), so adding an optimizer
never edits a shared module. An entry point names an `OptimizerSpec` object;
loading one imports only its module, never dspy or synth-ai.
"""

from __future__ import annotations

import functools
from importlib import metadata

from mipro_bench.errors import UserError
from mipro_bench.optimizers.spec import OptimizerSpec

ENTRY_POINT_GROUP = "mipro_bench.optimizers"


class UnknownOptimizer(UserError, ValueError):
    """An optimizer name no entry point registers (the message lists the known names)."""


class PluginError(UserError, RuntimeError):
    """An entry point that does not name a usable OptimizerSpec."""


@functools.cache
def registry() -> dict[str, OptimizerSpec]:
    """{name: spec} of every registered optimizer, in a stable (name) order."""
    specs: dict[str, OptimizerSpec] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            spec = ep.load()
        except Exception as exc:
            raise PluginError(f"optimizer plugin {ep.name!r} ({ep.value}) cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from None
        if not isinstance(spec, OptimizerSpec):
            raise PluginError(f"optimizer plugin {ep.name!r} ({ep.value}) is not an "
                              "OptimizerSpec")
        if spec.name != ep.name:
            raise PluginError(f"optimizer plugin {ep.name!r} declares the name {spec.name!r}")
        specs[spec.name] = spec
    if not specs:
        raise PluginError(f"no optimizer is registered in the {ENTRY_POINT_GROUP!r} "
                          "entry-point group (is mipro-bench installed? pip install -e .)")
    return specs


def names() -> tuple[str, ...]:
    return tuple(registry())


def get_spec(name: str) -> OptimizerSpec:
    try:
        return registry()[name]
    except KeyError:
        raise UnknownOptimizer(
            f"unknown optimizer {name!r}; known: {', '.join(registry())}") from None


def create_optimizer(name: str, **options: object) -> object:
    """Instantiate the adapter registered under `name` with its keyword options."""
    return get_spec(name).create(options)
