"""DSPy MIPROv2 benchmark cases, one per row of benchmarks/matrix.toml for dspy_miprov2."""

from __future__ import annotations

import pytest

from mipro_bench.benchcase import case_params


@pytest.mark.parametrize("case", case_params("dspy_miprov2"))
def test_dspy_mipro(case, bench_case) -> None:
    record = bench_case(case)
    assert record.status == "succeeded"
    assert record.config.mode == case.mode
