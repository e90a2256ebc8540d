"""The pytest plugin (entry point `pytest11: mipro_bench`): options and hook wiring only.

State, reports, floors and gating live in `mipro_bench.session`, the session's
choice of cases in `mipro_bench.selection`; this module only connects them to
pytest's and xdist's hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mipro_bench.floors_policy import FLOOR_MODES
from mipro_bench.gate import GateError
from mipro_bench.matrix import MatrixError
from mipro_bench.options import add_pytest_options
from mipro_bench.selection import (
    MatrixChoice,
    SelectionError,
    activate,
    active_choice,
    active_matrix,
    choice_from_options,
    deactivate,
)
from mipro_bench.session import WORKER_KEY, MiproSession, payload_from_workeroutput

SESSION_KEY = pytest.StashKey[MiproSession]()
_ACTIVATED = pytest.StashKey[bool]()  # this config pushed a matrix choice (pop it at the end)
PERF_MARKER = "perf"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_pytest_options(parser)
    group = parser.getgroup("mipro-bench")
    group.addoption(
        "--mipro-compare",
        metavar="PATH|latest",
        default=None,
        help="compare this run with an earlier comparison JSON (or the newest in results/)",
    )
    group.addoption(
        "--mipro-compare-fail",
        metavar="METRIC:N[%]",
        action="append",
        default=[],
        help="fail when METRIC drops by more than N points (or N%%), e.g. "
        "optimized_test_accuracy:5; METRIC:significant[:N] (paired, Holm-corrected); exact "
        "(any change of a simulated run); may be given several times",
    )
    group.addoption(
        "--mipro-compare-alpha",
        metavar="ALPHA",
        default=None,
        help="significance level of METRIC:significant (default 0.05)",
    )
    group.addoption(
        "--mipro-save-baseline",
        metavar="PATH",
        default=None,
        help="also save this run's comparison JSON as PATH (to accept it as the new baseline)",
    )
    # -- which cases, and how big: overrides of benchmarks/matrix.toml ------------------------
    group.addoption("--mipro-matrix", metavar="PATH", default=None,
                    help="the benchmark matrix (default benchmarks/matrix.toml)")
    group.addoption("--mipro-optimizers", metavar="A,B", default=None,
                    help="run only these optimizers' cases, e.g. dspy_miprov2")
    group.addoption("--mipro-modes", metavar="A,B", default=None,
                    help="override the matrix's modes, e.g. instruction_only")
    group.addoption("--mipro-seeds", metavar="1,2", default=None,
                    help="override the matrix's optimizer seeds, e.g. 1,2,3")
    group.addoption("--mipro-budget", metavar="OPT.KEY=N", action="append", default=[],
                    help="override one budget knob, e.g. dspy_miprov2.trials=4 or "
                         "synth_mipro.rollouts=100; may be given several times")
    group.addoption("--mipro-dspy-threads", metavar="N", type=int, default=None,
                    help="DSPy threads per case (concurrent LM calls in search and evaluation)")
    group.addoption("--mipro-synth-concurrency", metavar="N", type=int, default=None,
                    help="concurrent task-app rollouts per case on the Synth path "
                         "(optimization and evaluation)")
    group.addoption("--mipro-floors", choices=FLOOR_MODES, default="auto",
                    help="score floors: auto (enforced on the panel they were calibrated on, "
                         "reported elsewhere; default), enforce, off")
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


def _matrix_choice(config: pytest.Config) -> MatrixChoice:
    opt = config.getoption
    return choice_from_options(
        matrix=opt("mipro_matrix"),
        optimizers=opt("mipro_optimizers"),
        modes=opt("mipro_modes"),
        seeds=opt("mipro_seeds"),
        budgets=opt("mipro_budget"),
        dspy_threads=opt("mipro_dspy_threads"),
        synth_concurrency=opt("mipro_synth_concurrency"),
        model=opt("mipro_model"),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PERF_MARKER}: a performance benchmark; `pytest benchmarks/` deselects it "
                   "unless its path is named or --mipro-perf is given")
    try:
        session = MiproSession.from_options(
            results_dir=Path(config.getoption("mipro_results_dir")),
            compare=config.getoption("mipro_compare"),
            compare_fail=config.getoption("mipro_compare_fail"),
            save_baseline=config.getoption("mipro_save_baseline"),
            floors=config.getoption("mipro_floors"),
            compare_alpha=config.getoption("mipro_compare_alpha"),
        )
        choice = _matrix_choice(config)
        activate(choice)
        config.stash[_ACTIVATED] = True
        if choice.path is not None or choice.overrides:
            active_matrix()  # what the user typed is checked now, not as a collection error
    except (GateError, SelectionError, MatrixError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session
    if config.pluginmanager.hasplugin("xdist") and not _is_worker(config):
        config.pluginmanager.register(_XdistController(session), "mipro_bench_xdist")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_ACTIVATED, False):
        deactivate()  # an enclosing session (pytester, pytest.main in a test) gets its own back


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
    """Deselect perf benchmarks nobody asked for, cases of optimizers not selected, and the
    placeholder of an optimizer the matrix does not list (benchcase.case_params)."""
    from mipro_bench.matrix import Case

    choice = active_choice()
    keep, drop = [], []
    for item in items:
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        unasked_perf = (item.get_closest_marker(PERF_MARKER) is not None
                        and not _perf_asked(config, item))
        unselected = (isinstance(case, Case) and not choice.selects(case.optimizer)) or (
            case is None and item.get_closest_marker("benchmark_case") is not None)
        (drop if unasked_perf or unselected else keep).append(item)
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
