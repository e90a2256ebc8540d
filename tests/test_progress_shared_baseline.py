"""Progress that moves during a shared baseline evaluation (issue 21, item 6).

The baseline prompt is scored once per executor under a scope of its own, so its calls
were invisible to the case's progress line ("baseline_eval (1/5) 0/308 calls (0%)" for the
whole phase). The case now shows the shared scope's count for that phase, whether it
computes the evaluation or waits for it. A fake executor answers one item at a time while
the poller thread watches; the counts it shows must rise during the phase.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mipro_bench import executors
from mipro_bench.data import Split, Splits, load_banking77, make_splits
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.progress import CaseProgress, Snapshot
from mipro_bench.results import ItemResult, OptimizedPrompt, PhaseUsage
from mipro_bench.runner import run_case
from mipro_bench.session_servers import SessionServers
from tests.test_format_neutral import _Optimizer, _request

ITEM_S = 0.05  # each fake item takes this long, so the poller sees the count move


class Counted:
    """Per-scope calls so far, as a gateway would count them."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, scope: str) -> None:
        with self.lock:
            self.calls[scope] = self.calls.get(scope, 0) + 1

    def usage(self, scope: str) -> dict[str, PhaseUsage]:
        with self.lock:
            n = self.calls.get(scope, 0)
        return {"baseline_eval": PhaseUsage(calls=n)} if n else {}


def slow_executor(name: str, counted: Counted) -> type:
    class Slow:
        format_options: ClassVar[tuple[str, ...]] = ()
        default_options: ClassVar[dict[str, Any]] = {}

        def can_express(self, prompt: OptimizedPrompt) -> bool:
            return True

        def evaluate(self, prompt: OptimizedPrompt, split: Split, request: Any, phase: str,
                     *, max_errors: int, options: Mapping[str, Any] | None = None,
                     ) -> tuple[ItemResult, ...]:
            items = []
            for e in split.examples:
                time.sleep(ITEM_S)
                counted.add(request.scope)
                items.append(ItemResult(e.id, e.label, e.label, True, match="exact"))
            return tuple(items)

    Slow.name = name  # type: ignore[attr-defined]
    return Slow


class Recording:
    tick_s = ITEM_S / 5

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def start(self, label: str) -> None:
        pass

    def update(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    def stop(self) -> None:
        pass

    def say(self, line: str) -> bool:
        return False


@pytest.fixture(scope="module")
def splits(tiny_data_dir: Path) -> Splits:
    return make_splits(load_banking77(tiny_data_dir), train_size=6, val_size=4, test_size=12)


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "over-http"])
def test_the_progress_line_counts_the_shared_baseline_while_it_runs(
        splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        in_process: bool) -> None:
    counted = Counted()
    monkeypatch.setattr(executors, "_classes",
                        lambda: {"one": slow_executor("one", counted)})
    # How a worker reads a scope's usage from the gateway (GET /usage).
    monkeypatch.setattr(LMEndpoint, "usage", lambda self, scope=None, **_: {
        scope: counted.usage(scope)})
    sink = Recording()
    watch = CaseProgress("case", sink, usage=counted.usage if in_process else None)
    with SessionServers(splits) as servers:
        # The case reads its usage from the (faked) gateway, as a worker does.
        request = dataclasses.replace(_request(splits, tmp_path, "c1", servers), usage=None)
        record, _ = run_case(_Optimizer(), request, results_dir=tmp_path / "r",
                             executors=["one"], watch=watch)
    assert record.status == "succeeded", record.error
    during = [s.calls for s in sink.snapshots if s.phase == "baseline_eval"]
    n = len(splits.test)
    assert during and max(during) <= n
    # It rises while the phase runs: some snapshot caught it mid-way, none went backwards.
    assert any(0 < c < n for c in during), during
    assert during == sorted(during)
    # The case's own scope made none of those calls: they are the shared scope's.
    under = record.details["shared_baseline"]["one"]["counted_under"]["scope"]
    assert counted.calls.get("c1", 0) == n  # only its test_eval
    assert counted.calls[under] == n


def test_without_it_the_line_stays_at_zero_as_issue_21_measured(
        splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same run with the shared count switched off: the phase shows 0 calls throughout,
    so the test above really tells the two apart."""
    counted = Counted()
    monkeypatch.setattr(executors, "_classes",
                        lambda: {"one": slow_executor("one", counted)})
    monkeypatch.setattr(CaseProgress, "counted_elsewhere", lambda self, *a, **k: None)
    sink = Recording()
    watch = CaseProgress("case", sink, usage=counted.usage)
    with SessionServers(splits) as servers:
        run_case(_Optimizer(), _request(splits, tmp_path, "c1", servers),
                 results_dir=tmp_path / "r", executors=["one"], watch=watch)
    during = [s.calls for s in sink.snapshots if s.phase == "baseline_eval"]
    assert during and set(during) == {0}
