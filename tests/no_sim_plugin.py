"""A pytest plugin for benchmark subprocesses (`-- -p tests.no_sim_plugin`): the simulated
LM policy cannot be loaded or answer, so a run that still succeeds called no LM at all."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from mipro_bench.offline import sim_responder
    from mipro_bench.offline.sim import policy

    def unavailable() -> Any:
        raise sim_responder.PolicyUnavailable("no simulated LM in this run (tests.no_sim_plugin)")

    def refuse(self: Any, body: Any) -> Any:
        raise AssertionError("the simulated LM was asked to answer (tests.no_sim_plugin)")

    sim_responder._load_policy = unavailable  # type: ignore[assignment]
    policy.SimulatedLM.complete = refuse  # type: ignore[method-assign]
