"""Synth MIPRO benchmark cases, one per row of benchmarks/matrix.toml for synth_mipro.

`--mipro-synth-backend local|hosted` picks the backend the SDK submits to
(default local: the in-process Synth-compatible backend, labelled so).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mipro_bench.benchcase import case_params


@pytest.mark.parametrize("case", case_params("synth_mipro"))
def test_synth_mipro(case, bench_case, bench_options) -> None:
    case = replace(case, options={**case.options, "backend": bench_options.synth_backend})
    record = bench_case(case)
    assert record.status == "succeeded"
    assert record.config.mode == case.mode
    assert record.backend == bench_options.synth_backend
