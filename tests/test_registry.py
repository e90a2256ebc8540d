"""Optimizers are plugins: the registry is the entry-point group, each spec parses its own
typed tables, and no shared module names an optimizer."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.optimizers import OptimizerSpec, UnknownOptimizer, get_spec, registry
from mipro_bench.optimizers.base import UsageError
from mipro_bench.optimizers.registry import ENTRY_POINT_GROUP

PACKAGE = Path(__file__).resolve().parent.parent / "mipro_bench"

# A table each built-in accepts, and a key it does not have.
GOOD_TABLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (budget table, options table)
    "dspy_miprov2": ({"trials": 4, "max_bootstrapped_demos": 2},
                     {"module": "cot", "num_threads": 2}),
    "synth_mipro": ({"rollouts": 40, "minibatch_size": 5},
                    {"backend": "local", "eval_concurrency": 2, "grounding_fraction": 0.5}),
}


# --- the registry is the entry-point group ---------------------------------------------------


def test_the_built_ins_come_from_entry_points() -> None:
    points = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"dspy_miprov2", "synth_mipro"} <= set(points)
    specs = registry()
    assert set(specs) == set(points)  # nothing registered any other way
    for name, ep in points.items():
        spec = ep.load()
        assert isinstance(spec, OptimizerSpec) and spec is specs[name] and spec.name == name
        assert get_spec(name) is spec
    # The refusal lists exactly the entry points, sorted: derived, not hard-coded.
    known = ", ".join(sorted(points))
    with pytest.raises(UnknownOptimizer) as info:
        get_spec("gepa")
    assert str(info.value) == f"unknown optimizer 'gepa'; known: {known}"


@pytest.mark.parametrize("name", sorted(GOOD_TABLES))
def test_each_spec_parses_a_good_table_and_refuses_an_unknown_key(name: str) -> None:
    spec = get_spec(name)
    budget_table, options_table = GOOD_TABLES[name]
    budget = spec.parse_budget(budget_table)
    assert isinstance(budget, spec.budget_type)
    assert budget.to_dict() == budget_table  # exactly what was set, nothing invented
    options = spec.parse_options(options_table)
    assert isinstance(options, spec.options_type)
    assert {k: getattr(options, k) for k in options_table} == options_table
    assert spec.load()(options).options == options  # the adapter takes the typed options

    for parse, table in ((spec.parse_budget, "budget"), (spec.parse_options, "options")):
        with pytest.raises(UsageError) as info:
            parse({"no_such_knob": 1})
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"[{table}.{name}]: unknown key(s) no_such_knob; known: ")


@pytest.mark.parametrize("name", sorted(GOOD_TABLES))
def test_each_spec_refuses_a_wrong_type_in_one_line(name: str) -> None:
    spec = get_spec(name)
    knob = next(iter(GOOD_TABLES[name][0]))
    with pytest.raises(UsageError, match=rf"^\[budget\.{name}\]: {knob} = 'many' is not valid"):
        spec.parse_budget({knob: "many"})
    with pytest.raises(UsageError, match=r"must be >= 0"):
        spec.parse_budget({knob: -1})


def test_specs_are_self_consistent() -> None:
    from mipro_bench.executors import executor_names

    for spec in registry().values():
        assert spec.modes, spec.name
        assert spec.native_executor in executor_names(), spec.name
        for mode in ("instruction_only", "fewshot"):
            assert (spec.unsupported_reason(mode) is None) == spec.supports(mode)
        known = {f for f in spec.options_type.__dataclass_fields__}
        assert set(spec.concurrency_options) <= known, spec.name
        budget_knobs = {f for f in spec.budget_type.__dataclass_fields__}
        assert {s.knob for s in spec.cli_shortcuts} <= budget_knobs, spec.name
        assert spec.load().spec is spec


# --- no shared module names an optimizer ---------------------------------------------------


def _optimizer_words() -> set[str]:
    words: set[str] = set()
    for spec in registry().values():
        words |= {spec.name, spec.slug}
    return words


def _optimizer_files() -> set[Path]:
    """Each optimizer's own modules: its adapter module and its family's siblings
    (optimizers/synth_*.py for synth_mipro), plus the registry's own modules."""
    optimizers = PACKAGE / "optimizers"
    own = {optimizers / "spec.py", optimizers / "registry.py"}
    for spec in registry().values():
        module = spec.adapter.partition(":")[0]
        path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
        assert path.is_file(), path
        family = path.stem.split("_")[0]
        own |= set(optimizers.glob(f"{family}_*.py"))
    return own


def _shared_files() -> list[Path]:
    own = _optimizer_files()
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p not in own and "offline" not in p.relative_to(PACKAGE).parts)


def _hits(word_pattern: re.Pattern[str], path: Path, text: str) -> list[str]:
    return [f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), start=1) if word_pattern.search(line)]


def test_the_shared_file_list_is_what_it_claims() -> None:
    shared = {p.relative_to(PACKAGE).as_posix() for p in _shared_files()}
    assert {"runner.py", "matrix.py", "plugin.py", "options.py", "matrix_choice.py",
            "executors/dspy_program.py", "executors/task_app.py", "session_servers.py",
            "engine.py", "cli.py"} <= shared
    assert not {"optimizers/dspy_mipro.py", "optimizers/synth_mipro.py",
                "optimizers/synth_job.py", "optimizers/spec.py"} & shared
    assert not [s for s in shared if s.startswith("offline/")]


def _code_hits(path: Path, words: set[str]) -> list[str]:
    """Where code, not prose, names an optimizer: an identifier or import path, or a
    string literal that *is* a name or slug (a dict key, an `== "..."`, a default)."""
    text = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.add(body[0].value.lineno)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME and tok.string in words:
            out.append(f"{path.name}:{tok.start[0]}: identifier {tok.string}")
        elif tok.type == tokenize.STRING and tok.start[0] not in docstrings:
            prefix = tok.string[:len(tok.string) - len(tok.string.lstrip("rRbBuUfF"))]
            value = "" if "f" in prefix.lower() else ast.literal_eval(tok.string)
            if isinstance(value, str) and (value in words or any(
                    part in words for part in re.split(r"[.:/]", value))):
                out.append(f"{path.name}:{tok.start[0]}: literal {tok.string}")
    return out


def test_no_shared_code_imports_or_branches_on_an_optimizer() -> None:
    words = _optimizer_words()
    hits = [h for path in _shared_files() for h in _code_hits(path, words)]
    assert not hits, "shared code names an optimizer:\n" + "\n".join(hits)


def test_no_shared_module_names_an_optimizer_anywhere() -> None:
    words = _optimizer_words()
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, sorted(words)))
                         + r")(?![A-Za-z0-9])")
    hits = [h for path in _shared_files()
            for h in _hits(pattern, path, path.read_text(encoding="utf-8"))]
    assert not hits, "shared modules name an optimizer:\n" + "\n".join(hits)
