"""Optimizer adapters: one module each, declaring itself in an `OptimizerSpec`.

The registry (`registry.py`) reads the `mipro_bench.optimizers` entry-point
group, where this project's built-ins are listed exactly as a third-party
package would list its own; nothing here names an optimizer.
"""

from __future__ import annotations

from mipro_bench.optimizers.registry import (
    UnknownOptimizer,
    create_optimizer,
    get_spec,
    names,
    registry,
)
from mipro_bench.optimizers.spec import OptimizerSpec

__all__ = ["OptimizerSpec", "UnknownOptimizer", "create_optimizer", "get_spec", "names",
           "registry"]
