"""The pytest plugin (entry point `pytest11: mipro_bench`): options and hook wiring only.

State, reports and gating live in `mipro_bench.session`; this module only
connects them to pytest's and xdist's hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mipro_bench.gate import GateError
from mipro_bench.options import add_pytest_options
from mipro_bench.session import WORKER_KEY, MiproSession, payload_from_workeroutput

SESSION_KEY = pytest.StashKey[MiproSession]()


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
        "optimized_test_accuracy:5; may be given several times",
    )
    group.addoption(
        "--mipro-save-baseline",
        metavar="PATH",
        default=None,
        help="also save this run's comparison JSON as PATH (to accept it as the new baseline)",
    )


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


def pytest_configure(config: pytest.Config) -> None:
    try:
        session = MiproSession.from_options(
            results_dir=Path(config.getoption("mipro_results_dir")),
            compare=config.getoption("mipro_compare"),
            compare_fail=config.getoption("mipro_compare_fail"),
            save_baseline=config.getoption("mipro_save_baseline"),
        )
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session
    if config.pluginmanager.hasplugin("xdist") and not _is_worker(config):
        config.pluginmanager.register(_XdistController(session), "mipro_bench_xdist")


@pytest.fixture(scope="session")
def mipro_session(pytestconfig: pytest.Config) -> MiproSession:
    """Where benchmark cases hand over their records and "not supported" combinations."""
    return pytestconfig.stash[SESSION_KEY]


def record_unsupported(config: pytest.Config, optimizer: str, mode: str, model: str,
                       reason: str) -> None:
    from mipro_bench.compare import UnsupportedCase

    config.stash[SESSION_KEY].add_unsupported(UnsupportedCase(optimizer, mode, model, reason))


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
