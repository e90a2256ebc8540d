"""Everything in benchmarks/perf is a performance benchmark (marker `perf`).

`pytest benchmarks/` is the optimizer comparison; the mipro_bench plugin deselects
`perf` items there unless they are asked for: `pytest benchmarks/perf` (or one of
its files), `-m perf`, or `--mipro-perf`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.perf)
