"""The pytest plugin (entry point `pytest11: mipro_bench`): options and hook wiring only.

Options come from the one declaration in `mipro_bench.options` (the CLIs
register the same table); fixtures from `mipro_bench.fixtures` (shipped in
the package, so no top-level `fixtures` package is installed); state, reports,
floors and gating live in `mipro_bench.session`; the session's choice of cases
in `mipro_bench.matrix_choice`, kept on the config and turned into parameters in
`pytest_generate_tests`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mipro_bench.errors import UserError
from mipro_bench.fixtures.cases import case_params
from mipro_bench.journal_plan import JournalPlan
from mipro_bench.lm.run_lm import served_local_model
from mipro_bench.matrix import Matrix
from mipro_bench.matrix_choice import MatrixChoice, choice_from_options, parse_optimizers
from mipro_bench.options import (
    COMMON,
    PLUGIN_PREFIX,
    SESSION,
    BenchOptions,
    add_options,
    session_values,
    spec_options,
)
from mipro_bench.session import WORKER_KEY, MiproSession, payload_from_workeroutput

pytest_plugins = [
    "mipro_bench.fixtures.engine",
    "mipro_bench.fixtures.data",
    "mipro_bench.fixtures.lm",
    "mipro_bench.fixtures.servers",
    "mipro_bench.fixtures.progress",
    "mipro_bench.fixtures.cases",
]

SESSION_KEY = pytest.StashKey[MiproSession]()
CHOICE_KEY = pytest.StashKey[MatrixChoice]()
MATRIX_KEY = pytest.StashKey[Matrix]()
PERF_MARKER = "perf"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mipro-bench", "mipro-bench: prompt-optimizer benchmarks")
    add_options(group.addoption, PLUGIN_PREFIX, (*COMMON, *SESSION, *spec_options()))
    group.addoption("--mipro-perf", action="store_true", default=False,
                    help="also run the performance benchmarks (benchmarks/perf), which "
                         "`pytest benchmarks/` leaves out unless named")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _XdistController:
    """Registered only when xdist is loaded: collects worker payloads at node shutdown."""

    def __init__(self, session: MiproSession) -> None:
        self.session = session

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        payload = payload_from_workeroutput(getattr(node, "workeroutput", {}) or {})
        if payload:
            self.session.merge_worker_payload(payload)


def matrix_choice(get: Any, journal_plan: JournalPlan | None = None) -> MatrixChoice:
    """The session's matrix choice from the option values (`get(dest)`); a replay runs the
    recorded model's cases."""
    from mipro_bench.optimizers import registry

    values = session_values(get)
    per_optimizer = {spec.name: values.get(spec.concurrency_flag.replace("-", "_"))
                     for spec in registry().values() if spec.concurrency_flag}
    return choice_from_options(
        matrix=values["matrix"], optimizers=values["optimizers"], modes=values["modes"],
        seeds=values["seeds"], budgets=values["budget"] or (), options=values["option"] or (),
        concurrency=values["concurrency"], per_optimizer_concurrency=per_optimizer,
        model=(journal_plan.recording.model if journal_plan and journal_plan.recording else
               served_local_model(get("lm"), get("api_base"), get("model"))),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PERF_MARKER}: a performance benchmark; `pytest benchmarks/` deselects it "
                   "unless its path is named or --mipro-perf is given")
    opt = config.getoption
    try:
        journal_plan = BenchOptions.from_pytest(config).journal_plan()  # a bad --replay: now
        session = MiproSession.from_options(
            results_dir=Path(opt("mipro_results_dir")),
            compare=opt("mipro_compare"),
            compare_fail=opt("mipro_compare_fail"),
            save_baseline=opt("mipro_save_baseline"),
            floors=opt("mipro_floors"),
            compare_alpha=opt("mipro_compare_alpha"),
            replaying=journal_plan.replay is not None,
        )
        choice = matrix_choice(lambda dest: opt("mipro_" + dest), journal_plan)
        if choice.path is not None or choice.overrides:
            config.stash[MATRIX_KEY] = choice.load()  # what the user typed is checked now
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[CHOICE_KEY] = choice
    session.choice = choice
    session.journal_plan = journal_plan
    config.stash[SESSION_KEY] = session
    if config.pluginmanager.hasplugin("xdist") and not _is_worker(config):
        config.pluginmanager.register(_XdistController(session), "mipro_bench_xdist")


def session_matrix(config: pytest.Config) -> Matrix:
    """The session's matrix, loaded once (on first collection of a benchmark case)."""
    if MATRIX_KEY not in config.stash:
        try:
            config.stash[MATRIX_KEY] = config.stash[CHOICE_KEY].load()
        except UserError as exc:
            pytest.exit(f"mipro-bench: {exc}", returncode=4)
    config.stash[SESSION_KEY].matrix = config.stash[MATRIX_KEY]
    return config.stash[MATRIX_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test asking for `case` gets one parameter per case of the session's matrix."""
    if "case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    choice = config.stash[CHOICE_KEY]
    params = case_params(session_matrix(config), choice.optimizers)
    if not params:  # e.g. --mipro-optimizers naming one the matrix does not list
        params = [pytest.param(None, id="no-case-selected", marks=[pytest.mark.skip(
            reason="no matrix case is selected (see --mipro-optimizers/--mipro-modes)")])]
    metafunc.parametrize("case", params)


@pytest.fixture(scope="session")
def mipro_session(pytestconfig: pytest.Config) -> MiproSession:
    """Where benchmark cases hand over their records and "not supported" combinations."""
    return pytestconfig.stash[SESSION_KEY]


def _perf_asked(config: pytest.Config, item: pytest.Item) -> bool:
    """A perf benchmark runs when asked: --mipro-perf, a -m expression naming perf, or a
    command-line path inside its directory (`pytest benchmarks/perf`), but not for
    `pytest benchmarks/`, which is the comparison."""
    if config.getoption("mipro_perf") or PERF_MARKER in (config.getoption("markexpr") or ""):
        return True
    home = item.path.parent
    for arg in config.args:
        target = Path(str(arg).split("::")[0])
        target = (target if target.is_absolute() else config.invocation_params.dir / target)
        if target.resolve().is_relative_to(home.resolve()):
            return True
    return False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect perf benchmarks nobody asked for and the placeholder of an empty selection."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        unasked_perf = (item.get_closest_marker(PERF_MARKER) is not None
                        and not _perf_asked(config, item))
        placeholder = "case" in params and params["case"] is None
        (drop if unasked_perf or placeholder else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        return
    if _is_worker(config):
        config.workeroutput[WORKER_KEY] = state.worker_payload()  # type: ignore[attr-defined]
        return
    try:
        state.finish()
    except Exception as exc:  # a report bug must not hide the cases' own results
        state.gate_error = f"writing the comparison failed: {type(exc).__name__}: {exc}"
    if state.failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(SESSION_KEY, None)
    if state is None or _is_worker(config):
        return
    lines = state.summary_lines()
    if not lines:
        return
    terminalreporter.section("mipro-bench comparison")
    for line in lines:
        terminalreporter.write_line(line)


__all__ = ["SESSION_KEY", "matrix_choice", "parse_optimizers", "session_matrix"]
