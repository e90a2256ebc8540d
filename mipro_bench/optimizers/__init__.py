"""Optimizer adapters: one file each, behind the protocol in `base`, named in one registry.

The registry maps a record name to "module:Class" and is imported lazily, so
listing the optimizers (the matrix does it at collection time) never imports
dspy or synth-ai. Each entry also says which modes the optimizer supports and
why not the others, so the matrix can expand an unsupported case and skip it
with a reason without importing the adapter. A third optimizer is one new file
plus one `OptimizerSpec` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.results import MODES, Mode


class UnknownOptimizer(ValueError):
    """An optimizer name that is not in the registry (message lists the known names)."""


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # the record's `optimizer`, e.g. "dspy_miprov2"
    target: str  # "module:Class", imported on first use
    slug: str  # result file slug: results/banking77_<slug>_YYYYMMDD_HHMMSS.json
    modes: frozenset[Mode]
    # Why a mode is not supported, shown as the skip reason of that benchmark case.
    unsupported: dict[str, str] = field(default_factory=dict)

    def supports(self, mode: str) -> bool:
        return mode in self.modes

    def unsupported_reason(self, mode: str) -> str | None:
        if self.supports(mode):
            return None
        return self.unsupported.get(mode, f"{self.name} does not support mode {mode!r}")

    def load(self) -> type:
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UnknownOptimizer(
                f"optimizer {self.name!r}: adapter module {module_name} not importable ({exc})"
            ) from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise UnknownOptimizer(
                f"optimizer {self.name!r}: {module_name} has no class {attr}"
            ) from None


REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec(
            name="dspy_miprov2",
            target="mipro_bench.optimizers.dspy_mipro:DSPyMIPROv2",
            slug="dspy_mipro",
            modes=frozenset(MODES),
        ),
        OptimizerSpec(
            name="synth_mipro",
            target="mipro_bench.optimizers.synth_mipro:SynthMIPRO",
            slug="synth_mipro",
            modes=frozenset({"instruction_only"}),
            unsupported={
                "fewshot": "Synth MIPRO (synth-ai 0.7.3) optimizes instructions only (no demos)"
            },
        ),
    )
}


def get_spec(name: str) -> OptimizerSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownOptimizer(
            f"unknown optimizer {name!r}; known: {', '.join(REGISTRY)}"
        ) from None


def create_optimizer(name: str, **options: Any) -> Any:
    """Instantiate the adapter registered under `name` with its keyword options."""
    return get_spec(name).load()(**options)
