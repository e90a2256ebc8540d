"""The pytest plugin: options and hook wiring only (state lives elsewhere)."""

from __future__ import annotations

from typing import Any

from mipro_bench.options import add_pytest_options


def pytest_addoption(parser: Any) -> None:
    add_pytest_options(parser)
