"""Benchmark-case fixtures: every optimizer's case file uses the same `bench_case` runner.

The session fixtures (`splits`, `lm_endpoint`, `bench_options`) come from the
root conftest's fixture plugins, `mipro_session` from the mipro_bench pytest
plugin; records go to `--mipro-results-dir`, to that session (which builds the
comparison) and to `item.user_properties`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mipro_bench.benchcase import run_bench_case
from mipro_bench.data import Splits
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.matrix import Case
from mipro_bench.options import BenchOptions
from mipro_bench.results import RunRecord


@pytest.fixture
def bench_case(
    request: pytest.FixtureRequest,
    splits: Splits,
    lm_endpoint: LMEndpoint,
    bench_options: BenchOptions,
    mipro_session: Any,
    tmp_path: Path,
) -> Callable[[Case], RunRecord]:
    """Call with a matrix `Case`: runs it, attaches the record, asserts its floors."""

    def run(case: Case) -> RunRecord:
        return run_bench_case(
            case,
            item=request.node,
            splits=splits,
            endpoint=lm_endpoint,
            results_dir=bench_options.results_dir,
            workdir=tmp_path / "work",
            session=mipro_session,
        )

    return run
