"""Which benchmark cases a session runs: the matrix file plus command-line overrides.

`benchmarks/matrix.toml` says what a full run is; these options shrink or widen it
without editing the file (tests run tiny budgets, users add seeds, threads or
rollout concurrency). Overrides become dotted TOML keys merged into the file before
it is validated (`load_matrix(..., overrides=...)`), so an override gets the same
checks and messages as the file itself.

The benchmark modules call `benchcase.case_params` at import, during collection,
where no pytest config is at hand. The plugin therefore records the session's
choice here in `pytest_configure` (every xdist worker does the same from the same
options, so all of them collect the same cases) and `active_matrix()` loads it on
first use, so a pytest run that collects no benchmark never reads the matrix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipro_bench.matrix import Matrix, load_matrix
from mipro_bench.optimizers import UnknownOptimizer, get_spec
from mipro_bench.results import MODES

# Adapter options that only change how fast a case runs, never what it computes (the
# simulated LM is deterministic per request, and both adapters keep item order).
CONCURRENCY_OPTIONS = {
    "dspy_miprov2": ("num_threads",),
    "synth_mipro": ("max_concurrent", "eval_concurrency"),
}


class SelectionError(ValueError):
    """A matrix option that cannot be used; the message is one line naming the option."""


@dataclass(frozen=True)
class MatrixChoice:
    """What a session asked for: a matrix file, overrides on top of it, an optimizer filter."""

    path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    optimizers: tuple[str, ...] | None = None  # None: every optimizer of the matrix
    model: str | None = None  # the session's model (--mipro-model)

    def load(self) -> Matrix:
        """The matrix with the overrides applied. If the session's model is not one of the
        matrix's models, the matrix runs for that model instead: one session serves one
        model, and skipping every case would help nobody."""
        overrides = dict(self.overrides)
        if self.model is not None and "matrix.models" not in overrides:
            base = load_matrix(self.path)
            if self.model not in {case.model for case in base.cases}:
                overrides["matrix.models"] = [self.model]
        return load_matrix(self.path, overrides=overrides)

    def selects(self, optimizer: str) -> bool:
        return self.optimizers is None or optimizer in self.optimizers


def parse_list(text: str, option: str) -> list[str]:
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or not all(items):
        raise SelectionError(f"{option} {text!r}: expected a comma-separated list, e.g. a,b")
    if len(set(items)) != len(items):
        raise SelectionError(f"{option} {text!r}: lists a value twice")
    return items


def parse_seeds(text: str, option: str = "--mipro-seeds") -> list[int]:
    seeds = []
    for item in parse_list(text, option):
        if not item.isdigit():
            raise SelectionError(f"{option} {text!r}: seeds are integers >= 0, e.g. 1,2,3")
        seeds.append(int(item))
    return seeds


def parse_optimizers(text: str, option: str = "--mipro-optimizers") -> tuple[str, ...]:
    names = parse_list(text, option)
    for name in names:
        try:
            get_spec(name)
        except UnknownOptimizer as exc:
            raise SelectionError(f"{option}: {exc}") from None
    return tuple(names)


def parse_modes(text: str, option: str = "--mipro-modes") -> list[str]:
    modes = parse_list(text, option)
    for mode in modes:
        if mode not in MODES:
            raise SelectionError(f"{option}: unknown mode {mode!r}; expected {', '.join(MODES)}")
    return modes


def parse_budget(expr: str, option: str = "--mipro-budget") -> tuple[str, Any]:
    """`dspy_miprov2.trials=2` -> ("budget.dspy_miprov2.trials", 2)."""
    key, sep, raw = expr.partition("=")
    optimizer, dot, knob = key.strip().partition(".")
    raw = raw.strip()
    if not sep or not dot or not optimizer or not knob or not raw:
        raise SelectionError(f"{option} {expr!r}: expected OPTIMIZER.KEY=VALUE, "
                             "e.g. dspy_miprov2.trials=2 or synth_mipro.rollouts=40")
    try:
        get_spec(optimizer)
    except UnknownOptimizer as exc:
        raise SelectionError(f"{option} {expr!r}: {exc}") from None
    value: Any = int(raw) if raw.isdigit() else raw
    return f"budget.{optimizer}.{knob}", value


def _positive(value: int | None, option: str) -> int | None:
    if value is not None and value < 1:
        raise SelectionError(f"{option} must be at least 1, got {value}")
    return value


def choice_from_options(
    *,
    matrix: str | None = None,
    optimizers: str | None = None,
    modes: str | None = None,
    seeds: str | None = None,
    budgets: list[str] | tuple[str, ...] = (),
    dspy_threads: int | None = None,
    synth_concurrency: int | None = None,
    model: str | None = None,
) -> MatrixChoice:
    """Turn the --mipro-* matrix options (strings as typed) into a MatrixChoice.

    Raises SelectionError for a malformed option; a well-formed override that the
    matrix then refuses (e.g. a budget key the optimizer has not) surfaces as a
    MatrixError when the matrix is loaded.
    """
    path = Path(matrix) if matrix else None
    if path is not None and not path.is_file():
        raise SelectionError(f"--mipro-matrix {matrix}: no such file")
    overrides: dict[str, Any] = {}
    if modes is not None:
        overrides["matrix.modes"] = parse_modes(modes)
    if seeds is not None:
        overrides["matrix.seeds"] = parse_seeds(seeds)
    for expr in budgets:
        key, value = parse_budget(expr)
        overrides[key] = value
    for optimizer, value in (
        ("dspy_miprov2", _positive(dspy_threads, "--mipro-dspy-threads")),
        ("synth_mipro", _positive(synth_concurrency, "--mipro-synth-concurrency")),
    ):
        if value is not None:
            for knob in CONCURRENCY_OPTIONS[optimizer]:
                overrides[f"options.{optimizer}.{knob}"] = value
    return MatrixChoice(
        path=path,
        overrides=overrides,
        optimizers=parse_optimizers(optimizers) if optimizers is not None else None,
        model=model,
    )


# --- the session's choice, for collection -------------------------------------------------
# A stack, not one slot: a pytest session run inside another (pytester, `pytest.main` from
# run_comparison.py in a test) pushes its choice and pops it at unconfigure, so the outer
# session's matrix is back when it continues.

_lock = threading.Lock()
_stack: list[tuple[MatrixChoice, list[Matrix]]] = []


def activate(choice: MatrixChoice) -> None:
    """Make `choice` the matrix `active_matrix()` returns (the plugin, in pytest_configure)."""
    with _lock:
        _stack.append((choice, []))


def deactivate() -> None:
    """Undo the latest `activate` (the plugin, in pytest_unconfigure)."""
    with _lock:
        if _stack:
            _stack.pop()


def active_choice() -> MatrixChoice:
    with _lock:
        return _stack[-1][0] if _stack else MatrixChoice()


def active_matrix() -> Matrix:
    """The session's matrix (loaded once); the default matrix outside a configured session.

    Raises MatrixError (one line) for a matrix that cannot be used.
    """
    with _lock:
        if not _stack:
            return MatrixChoice().load()
        choice, loaded = _stack[-1]
        if not loaded:
            loaded.append(choice.load())
        return loaded[0]
