"""The budget table splits the optimize calls by LM role when an optimizer reports one."""

from __future__ import annotations

import dataclasses

from mipro_bench.compare import build_comparison
from mipro_bench.report import format as fmt
from mipro_bench.report.markdown import render_markdown
from tests.factories import record


def with_roles(rec, roles):  # type: ignore[no-untyped-def]
    return dataclasses.replace(rec, details={**rec.details, "lm_calls_by_role": roles})


def test_rows_average_the_roles_and_the_table_shows_them() -> None:
    runs = [with_roles(record(seed=1), {"task_model": 20, "reflection": 10}),
            with_roles(record(seed=2), {"task_model": 24, "reflection": 6})]
    row = build_comparison(runs).rows[0]
    assert row.optimize_calls_by_role == {"reflection": 8.0, "task_model": 22.0}
    text = fmt.calls_by_phase(row.usage, optimize_by_role=row.optimize_calls_by_role)
    assert text.endswith("(optimize: 8 reflection + 22 task_model)"), text
    assert "(optimize: 8 reflection + 22 task" in render_markdown(build_comparison(runs))


def test_no_split_unless_every_run_reports_it() -> None:
    runs = [with_roles(record(seed=1), {"task_model": 20, "reflection": 10}), record(seed=2)]
    row = build_comparison(runs).rows[0]
    assert row.optimize_calls_by_role == {}
    assert "(optimize:" not in fmt.calls_by_phase(row.usage)
