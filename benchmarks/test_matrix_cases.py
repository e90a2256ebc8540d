"""The benchmark cases: one per row of benchmarks/matrix.toml (optimizer x mode x model x seed).

The mipro_bench plugin parametrizes `case` from the session's matrix, so every
registered optimizer's cases are collected here (`pytest benchmarks/ -k synth`,
`-k gepa`, `-k fewshot` pick among them); `bench_case` runs one, attaches its
record, hands it to the comparison and applies its score floors.
"""

from __future__ import annotations


def test_case(case, bench_case) -> None:
    record = bench_case(case)
    assert record.status == "succeeded", record.error
    assert record.config.mode == case.mode
    assert record.results.optimized_test_accuracy is not None
    assert len(record.results.per_item) == record.config.test_size
