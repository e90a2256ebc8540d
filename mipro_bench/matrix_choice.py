"""Which benchmark cases a session runs: the matrix file plus command-line overrides.

`benchmarks/matrix.toml` says what a full run is; these options shrink or widen it
without editing the file (tests run tiny budgets, users add seeds, threads or
rollout concurrency). Overrides become dotted TOML keys merged into the file before
it is validated (`load_matrix(..., overrides=...)`), so an override gets the same
checks and messages as the file itself.

The plugin builds the session's choice in `pytest_configure` (every xdist worker
does the same from the same options, so all of them collect the same cases),
keeps it on the config, and parametrizes benchmark cases from it in
`pytest_generate_tests`; nothing is kept in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipro_bench.errors import UserError
from mipro_bench.matrix import Matrix, load_matrix
from mipro_bench.optimizers import UnknownOptimizer, get_spec, registry
from mipro_bench.results import MODES


class MatrixChoiceError(UserError, ValueError):
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
        raise MatrixChoiceError(f"{option} {text!r}: expected a comma-separated list, e.g. a,b")
    if len(set(items)) != len(items):
        raise MatrixChoiceError(f"{option} {text!r}: lists a value twice")
    return items


def parse_seeds(text: str, option: str = "--mipro-seeds") -> list[int]:
    seeds = []
    for item in parse_list(text, option):
        if not item.isdigit():
            raise MatrixChoiceError(f"{option} {text!r}: seeds are integers >= 0, e.g. 1,2,3")
        seeds.append(int(item))
    return seeds


def parse_optimizers(text: str, option: str = "--mipro-optimizers") -> tuple[str, ...]:
    names = parse_list(text, option)
    for name in names:
        try:
            get_spec(name)
        except UnknownOptimizer as exc:
            raise MatrixChoiceError(f"{option}: {exc}") from None
    return tuple(names)


def parse_modes(text: str, option: str = "--mipro-modes") -> list[str]:
    modes = parse_list(text, option)
    for mode in modes:
        if mode not in MODES:
            raise MatrixChoiceError(f"{option}: unknown mode {mode!r}; expected {', '.join(MODES)}")
    return modes


def _scalar(raw: str) -> Any:
    """A typed value as TOML would read it: integers, floats, booleans, else the string."""
    if raw.isdigit():
        return int(raw)
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return float(raw)
    except ValueError:
        return raw


def parse_override(expr: str, table: str, option: str) -> tuple[str, Any]:
    """`<optimizer>.trials=2` -> ("<table>.<optimizer>.trials", 2)."""
    key, sep, raw = expr.partition("=")
    optimizer, dot, knob = key.strip().partition(".")
    raw = raw.strip()
    if not sep or not dot or not optimizer or not knob or not raw:
        raise MatrixChoiceError(f"{option} {expr!r}: expected OPTIMIZER.KEY=VALUE, "
                             "e.g. <optimizer>.trials=2")
    try:
        get_spec(optimizer)
    except UnknownOptimizer as exc:
        raise MatrixChoiceError(f"{option} {expr!r}: {exc}") from None
    return f"{table}.{optimizer}.{knob}", _scalar(raw)


def parse_budget(expr: str, option: str = "--mipro-budget") -> tuple[str, Any]:
    return parse_override(expr, "budget", option)


def _positive(value: int | None, option: str) -> int | None:
    if value is not None and value < 1:
        raise MatrixChoiceError(f"{option} must be at least 1, got {value}")
    return value


def choice_from_options(
    *,
    matrix: str | None = None,
    optimizers: str | None = None,
    modes: str | None = None,
    seeds: str | None = None,
    budgets: list[str] | tuple[str, ...] = (),
    options: list[str] | tuple[str, ...] = (),
    concurrency: int | None = None,
    per_optimizer_concurrency: dict[str, int | None] | None = None,
    model: str | None = None,
) -> MatrixChoice:
    """Turn the --mipro-* matrix options (strings as typed) into a MatrixChoice.

    Raises MatrixChoiceError for a malformed option; a well-formed override that the
    matrix then refuses (e.g. a budget key the optimizer has not) surfaces as a
    MatrixError when the matrix is loaded.
    """
    path = Path(matrix) if matrix else None
    if path is not None and not path.is_file():
        raise MatrixChoiceError(f"--mipro-matrix {matrix}: no such file")
    overrides: dict[str, Any] = {}
    if modes is not None:
        overrides["matrix.modes"] = parse_modes(modes)
    if seeds is not None:
        overrides["matrix.seeds"] = parse_seeds(seeds)
    for expr in budgets:
        key, value = parse_budget(expr)
        overrides[key] = value
    for expr in options:
        key, value = parse_override(expr, "options", "--mipro-option")
        overrides[key] = value
    for spec in registry().values():
        value = (per_optimizer_concurrency or {}).get(spec.name)
        value = _positive(value if value is not None else concurrency,
                          f"--mipro-{spec.concurrency_flag or 'concurrency'}")
        if value is not None:
            for knob in spec.concurrency_options:
                overrides[f"options.{spec.name}.{knob}"] = value
    return MatrixChoice(
        path=path,
        overrides=overrides,
        optimizers=parse_optimizers(optimizers) if optimizers is not None else None,
        model=model,
    )
