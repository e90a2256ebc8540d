"""What an optimizer module declares about itself: the one object its entry point names.

An optimizer is one module. Its `OptimizerSpec` says everything the rest of the
suite needs to know (record name, result-file slug, modes and why not the
others, its typed budget and options, which option keys only change speed, the
executor its prompts run on natively, and the command-line spellings the
earlier benchmark's users type), so no shared module ever names an optimizer.
Built-ins register through the `mipro_bench.optimizers` entry-point group, the
same way a third-party package would (see `registry`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.errors import UsageError
from mipro_bench.option_decl import Opt
from mipro_bench.results import Mode
from mipro_bench.typed_config import BudgetBase, OptionsBase


@dataclass(frozen=True)
class CliShortcut:
    """A flag of the comparison CLI that sets one budget knob, e.g. `--trials` -> trials."""

    flag: str  # without dashes, e.g. "trials"
    knob: str  # the budget field it sets
    help: str


@dataclass(frozen=True)
class SeedCase:
    """What a seed CLI's flags ask for: this optimizer's one case."""

    mode: str
    budget: dict[str, Any]
    options: dict[str, Any]


@dataclass(frozen=True)
class SeedCli:
    """The earlier benchmark's command line for this optimizer (`run_<slug>_banking77.py`):
    its own flags, declared once here (the shared ones come from `mipro_bench.options`),
    and how their values become one case. `to_case(get, say)` reads a value by dest,
    may say a line first, and raises UsageError for flags that do not go together."""

    options: tuple[Opt, ...]
    to_case: Callable[[Callable[[str], Any], Callable[[str], None]], SeedCase]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # the record's `optimizer`, e.g. "dspy_miprov2"
    slug: str  # result file slug: results/banking77_<slug>_YYYYMMDD_HHMMSS.json
    title: str  # how tables and reports name it, e.g. "DSPy MIPROv2"
    modes: frozenset[Mode]
    budget_type: type[BudgetBase]
    options_type: type[OptionsBase]
    # "module:Class": the adapter, imported on first use (listing optimizers at collection
    # time never imports dspy or synth-ai).
    adapter: str
    native_executor: str  # the executor its prompts run in natively ("dspy_program", ...)
    # Why a mode is not supported, shown as the skip reason of that benchmark case.
    unsupported: Mapping[str, str] = field(default_factory=dict)
    # Option keys that change how fast a case runs, never what it computes; set by
    # `--mipro-concurrency` and by `concurrency_flag`.
    concurrency_options: tuple[str, ...] = ()
    # The flag the earlier CLIs and the plugin spell this optimizer's concurrency with,
    # e.g. "dspy-threads" -> --dspy-threads / --mipro-dspy-threads.
    concurrency_flag: str | None = None
    # run_comparison.py's "only this optimizer" flag, e.g. "dspy-only".
    only_flag: str | None = None
    cli_shortcuts: tuple[CliShortcut, ...] = ()
    # An option the whole session may set for this optimizer's cases, e.g. Synth's
    # backend choice: (option key, plugin flag without "--mipro-", help, choices).
    session_option: tuple[str, str, str, tuple[str, ...]] | None = None
    # Its seed CLI, when the earlier benchmark had one for it.
    seed_cli: SeedCli | None = None

    def supports(self, mode: str) -> bool:
        return mode in self.modes

    def unsupported_reason(self, mode: str) -> str | None:
        if self.supports(mode):
            return None
        return self.unsupported.get(mode, f"{self.name} does not support mode {mode!r}")

    def parse_budget(self, values: Mapping[str, Any]) -> BudgetBase:
        return self.budget_type.parse(values, where=f"[budget.{self.name}]")

    def parse_options(self, values: Mapping[str, Any]) -> OptionsBase:
        return self.options_type.parse(values, where=f"[options.{self.name}]")

    def load(self) -> type:
        module_name, _, attr = self.adapter.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ModuleNotFoundError, AttributeError) as exc:
            raise UsageError(f"optimizer {self.name!r}: adapter {self.adapter} cannot be "
                             f"loaded ({exc})") from None

    def create(self, options: Mapping[str, Any] | OptionsBase | None = None) -> Any:
        """The adapter, built from its typed options (a mapping is parsed and checked)."""
        if not isinstance(options, OptionsBase):
            options = self.parse_options(dict(options or {}))
        return self.load()(options)
