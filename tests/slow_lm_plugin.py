"""A pytest plugin for the kill tests' benchmark subprocesses (`-- -p tests.slow_lm_plugin`).

Every live LM call then takes MIPRO_TEST_LM_LATENCY seconds (the gateway's latency knob;
replayed calls never wait), so each phase of a case lasts long enough for the test to
stop the process group at a chosen journal line instead of after a guessed sleep.
"""

from __future__ import annotations

import os

import pytest

ENV = "MIPRO_TEST_LM_LATENCY"


@pytest.fixture(scope="session", autouse=True)
def _slow_lm(lm_gateway):  # type: ignore[no-untyped-def]
    latency = float(os.environ.get(ENV, "0"))
    if latency:
        lm_gateway.set_knobs(latency_s=latency)
