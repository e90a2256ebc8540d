"""Shared test fixtures: where the data lives, and keeping tests out of the real home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
TINY_DATA_DIR = TESTS_DIR / "data" / "tiny_banking77"
# The real Banking77 copy beside the project (../shared/banking77 from the repo root);
# CI and developers may point BANKING77_DIR elsewhere.
DEFAULT_REAL_DATA_DIR = TESTS_DIR.parent.parent / "shared" / "banking77"


@pytest.fixture(scope="session")
def tiny_data_dir() -> Path:
    return TINY_DATA_DIR


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    path = Path(os.environ.get("BANKING77_DIR") or DEFAULT_REAL_DATA_DIR)
    if not (path / "train.csv").is_file():
        pytest.skip(f"real Banking77 not found at {path}; set BANKING77_DIR")
    return path
