"""One option's declaration, the shape every front-end registers from.

As pytest-benchmark's `add_*_options(addoption, prefix)` serve both its plugin
and its own CLI, an `Opt` is registered with pytest (`--mipro-train-size`) or
argparse (`--train-size`) by `add_options`: same name after the prefix, same
type, same default, same help. The tables of options live in
`mipro_bench/options.py` and, for an optimizer's own seed-CLI flags, in the
optimizer's module (its spec); this module is below both so either can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mipro_bench.argtypes import non_negative_int, positive_int

PLUGIN_PREFIX = "--mipro-"
CLI_PREFIX = "--"


@dataclass(frozen=True)
class Opt:
    """One option: `name` follows the prefix (`train-size`); dest is name with underscores."""

    name: str
    help: str
    group: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # "append" | "store_true" | None
    metavar: str | None = None
    # Where the value lands when the name alone would mislead: a seed CLI's `--mode` is
    # Synth's offline/online choice, not a prompt mode.
    dest_name: str | None = None

    @property
    def dest(self) -> str:
        return self.dest_name or self.name.replace("-", "_")

    def kwargs(self, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {"help": self.help, "default": self.default}
        if prefix == PLUGIN_PREFIX:
            out["dest"] = "mipro_" + self.dest
        elif self.dest_name is not None:
            out["dest"] = self.dest_name
        if self.action is not None:
            out["action"] = self.action
        if self.action != "store_true":
            if self.type is not None:
                out["type"] = self.type
            if self.choices is not None:
                out["choices"] = self.choices
            if self.metavar is not None:
                out["metavar"] = self.metavar
            elif self.type in (positive_int, non_negative_int):
                out["metavar"] = "N"
        if self.action == "append":
            out["default"] = []
        return out


def add_options(add: Callable[..., Any], prefix: str, options: Iterable[Opt]) -> None:
    """Register `options` through `add` (pytest's group.addoption or argparse's
    add_argument) under `prefix`."""
    for opt in options:
        add(prefix + opt.name, **opt.kwargs(prefix))
