"""The declarative benchmark matrix: optimizers x modes x models x seeds, budgets, floors.

`benchmarks/matrix.toml` is the one place that says which cases exist, what each
optimizer may spend (chosen so both get comparable LM-call budgets) and which
scores a case must reach. Combinations an optimizer cannot run are expanded
too, carrying the reason, so the benchmark collects them and skips them
visibly instead of leaving a silent hole in the comparison table.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mipro_bench.errors import UserError
from mipro_bench.optimizers import UnknownOptimizer, get_spec
from mipro_bench.optimizers.base import UsageError
from mipro_bench.results import MODES, RunRecord
from mipro_bench.typed_config import BudgetBase

DEFAULT_MATRIX = Path(__file__).resolve().parent.parent / "benchmarks" / "matrix.toml"
LM_KINDS = ("sim", "real")
FLOOR_SELECTORS = ("optimizer", "mode", "model", "lm")


class MatrixError(UserError, ValueError):
    """A matrix file that cannot be used; the message is one line naming file and problem."""


@dataclass(frozen=True)
class Floors:
    """What a finished case must reach. None means "not checked"."""

    # optimized test accuracy >= this
    min_optimized_test_accuracy: float | None = None
    # optimized test accuracy >= baseline test accuracy - this
    max_drop_vs_baseline: float | None = None
    # optimized test accuracy >= baseline test accuracy + this (a claim of real gain)
    min_improvement: float | None = None

    def violations(self, record: RunRecord) -> list[str]:
        """Each unmet floor as one readable line (empty when the record passes)."""
        if record.status != "succeeded":
            return [f"run {record.status}: {record.error or 'no error recorded'}"]
        res = record.results
        out: list[str] = []
        opt, base = res.optimized_test_accuracy, res.baseline_test_accuracy
        if opt is None:
            return ["no optimized test accuracy in the record"]
        if self.min_optimized_test_accuracy is not None and opt < self.min_optimized_test_accuracy:
            out.append(
                f"optimized test accuracy {opt:.3f} < floor {self.min_optimized_test_accuracy:.3f}"
            )
        if base is not None:
            if self.max_drop_vs_baseline is not None and opt < base - self.max_drop_vs_baseline:
                out.append(
                    f"optimized test accuracy {opt:.3f} is more than "
                    f"{self.max_drop_vs_baseline:.3f} below the baseline {base:.3f}"
                )
            if self.min_improvement is not None and opt < base + self.min_improvement:
                out.append(
                    f"improvement {opt - base:+.3f} over the baseline {base:.3f} is below "
                    f"{self.min_improvement:+.3f}"
                )
        return out


@dataclass(frozen=True)
class Case:
    """One benchmark case (one test item): optimizer, mode, model, seed and what it may spend."""

    optimizer: str
    mode: str
    model: str
    seed: int
    budget: BudgetBase
    options: dict[str, Any] = field(default_factory=dict)
    floors_by_lm: dict[str, Floors] = field(default_factory=dict)
    unsupported: str | None = None  # why this optimizer cannot run this mode

    @property
    def id(self) -> str:
        return f"{self.optimizer}-{self.mode}-{self.model}-seed{self.seed}"

    @property
    def slug(self) -> str:
        return get_spec(self.optimizer).slug

    def floors(self, simulated: bool) -> Floors:
        return self.floors_by_lm.get("sim" if simulated else "real", Floors())


@dataclass(frozen=True)
class Calibration:
    """The panel the floors were measured on ([calibration] in the TOML).

    Floors are numbers about one panel: the session enforces them by default only
    where they were measured (see mipro_bench.floors_policy).
    """

    train_size: int
    val_size: int
    test_size: int
    data_seed: int = 0

    def describe(self) -> str:
        return (f"train {self.train_size}, val {self.val_size}, test {self.test_size}, "
                f"data seed {self.data_seed}")


@dataclass(frozen=True)
class Matrix:
    path: Path
    cases: tuple[Case, ...]
    calibration: Calibration | None = None
    # Dotted keys a session overrode on top of the file (e.g. "budget.<optimizer>.trials").
    overridden: frozenset[str] = frozenset()

    def for_optimizer(self, name: str) -> tuple[Case, ...]:
        get_spec(name)  # an unknown name is a clear error, not an empty parametrization
        return tuple(c for c in self.cases if c.optimizer == name)

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise MatrixError(f"{self.path}: no case {case_id!r}")


def load_matrix(path: str | Path | None = None, *,
                overrides: Mapping[str, Any] | None = None) -> Matrix:
    """Read and expand the matrix; every problem is a MatrixError with one line.

    `overrides` maps dotted keys to values set on top of the file before it is
    validated, e.g. {"matrix.seeds": [1, 2], "budget.<optimizer>.trials": 2}, so a
    session can shrink or widen the matrix without editing it and an override gets the
    same checks (and messages) as the file.
    """
    path = Path(path) if path is not None else DEFAULT_MATRIX
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such matrix file") from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"{path}: cannot read ({exc})") from None
    overrides = dict(overrides or {})
    try:
        data = _apply_overrides(data, overrides)
        return Matrix(path=path, cases=_expand(data), calibration=_calibration(data),
                      overridden=frozenset(overrides))
    except MatrixError as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise MatrixError(f"{path}: {exc}" + (f" (overrides: {given})" if given else "")
                          ) from None


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        if not all(keys):
            raise MatrixError(f"override key {dotted!r} is not a dotted TOML key")
        table = out
        for i, key in enumerate(keys[:-1]):
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise MatrixError(f"override {dotted!r}: {'.'.join(keys[:i + 1])} is not a table")
        table[keys[-1]] = value
    return out


def _calibration(data: dict[str, Any]) -> Calibration | None:
    table = _table(data, "calibration", required=False)
    if not table:
        return None
    known = {f.name for f in fields(Calibration)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise MatrixError(f"[calibration] unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    for key, value in table.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MatrixError(f"[calibration] {key} = {value!r} is not a count >= 0")
    missing = sorted(k for k in ("train_size", "val_size", "test_size") if k not in table)
    if missing:
        raise MatrixError(f"[calibration] needs {', '.join(missing)}")
    return Calibration(**table)


def _expand(data: dict[str, Any]) -> tuple[Case, ...]:
    known_tables = {"schema", "matrix", "budget", "options", "floors", "calibration"}
    unknown = sorted(set(data) - known_tables)
    if unknown:
        raise MatrixError(f"unknown top-level key(s) {', '.join(unknown)}")
    if data.get("schema", 1) != 1:
        raise MatrixError(f"schema {data.get('schema')!r} is not supported (expected 1)")
    axes = _table(data, "matrix")
    optimizers = _str_list(axes, "optimizers")
    modes = _str_list(axes, "modes")
    models = _str_list(axes, "models")
    seeds = axes.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise MatrixError("[matrix] seeds must be a non-empty list of integers >= 0")
    for name in optimizers:
        try:
            get_spec(name)
        except UnknownOptimizer as exc:
            raise MatrixError(f"[matrix] {exc}") from None
    for mode in modes:
        if mode not in MODES:
            raise MatrixError(f"[matrix] unknown mode {mode!r}; expected {', '.join(MODES)}")
    budgets = {name: _budget(data, name) for name in optimizers}
    options = {name: _options(data, name) for name in optimizers}
    rules = _floor_rules(data.get("floors", []))
    cases = []
    for name in optimizers:
        spec = get_spec(name)
        for mode in modes:
            for model in models:
                for seed in seeds:
                    where = {"optimizer": name, "mode": mode, "model": model}
                    cases.append(
                        Case(
                            optimizer=name,
                            mode=mode,
                            model=model,
                            seed=seed,
                            budget=budgets[name].for_mode(mode),
                            options=options[name],
                            floors_by_lm={lm: _floors_for(rules, {**where, "lm": lm})
                                          for lm in LM_KINDS},
                            unsupported=spec.unsupported_reason(mode),
                        )
                    )
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise MatrixError("[matrix] lists a value twice (case ids repeat)")
    return tuple(cases)


def _table(data: Any, key: str, *, required: bool = True) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise MatrixError(f"[{key}] table missing or not a table")
    return value


def _str_list(table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise MatrixError(f"[matrix] {key} must be a non-empty list of strings")
    return value


def _budget(data: dict[str, Any], optimizer: str) -> BudgetBase:
    table = _table(data.get("budget", {}), optimizer, required=False)
    if not table:
        raise MatrixError(f"[budget.{optimizer}] missing: every optimizer needs a budget")
    try:
        return get_spec(optimizer).parse_budget(table)
    except UsageError as exc:
        raise MatrixError(str(exc)) from None


def _options(data: dict[str, Any], optimizer: str) -> dict[str, Any]:
    """The adapter options table, checked against the optimizer's typed options now (a
    typo fails at collection, not after a baseline evaluation)."""
    table = dict(_table(data.get("options", {}), optimizer, required=False))
    try:
        get_spec(optimizer).parse_options(table)
    except UsageError as exc:
        raise MatrixError(str(exc)) from None
    return table


@dataclass(frozen=True)
class _Rule:
    where: dict[str, str]
    values: dict[str, float]


def _floor_rules(raw: Any) -> list[_Rule]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise MatrixError("floors must be an array of tables ([[floors]])")
    names = {f.name for f in fields(Floors)}
    rules = []
    for i, entry in enumerate(raw, start=1):
        where = {k: v for k, v in entry.items() if k in FLOOR_SELECTORS}
        values = {k: v for k, v in entry.items() if k not in FLOOR_SELECTORS}
        unknown = sorted(set(values) - names)
        if unknown:
            raise MatrixError(
                f"[[floors]] #{i}: unknown key(s) {', '.join(unknown)}; known: "
                f"{', '.join([*FLOOR_SELECTORS, *sorted(names)])}"
            )
        if "lm" in where and where["lm"] not in LM_KINDS:
            raise MatrixError(f"[[floors]] #{i}: lm must be one of {', '.join(LM_KINDS)}")
        for key, value in values.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise MatrixError(f"[[floors]] #{i}: {key} must be a number in [0, 1]")
        rules.append(_Rule(where=where, values={k: float(v) for k, v in values.items()}))
    return rules


def _floors_for(rules: list[_Rule], case: dict[str, str]) -> Floors:
    """Every rule whose selectors all match applies; a later rule overrides an earlier key."""
    merged: dict[str, float] = {}
    for rule in rules:
        if all(case.get(k) == v for k, v in rule.where.items()):
            merged.update(rule.values)
    return Floors(**merged)
