"""The suite itself: it leaves the repository as it found it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_hypothesis_storage_is_outside_the_repository() -> None:
    # Hypothesis writes .hypothesis/ (examples, constants) under its storage directory as
    # soon as a test module using it is collected; tests/conftest.py moves it out of here.
    from hypothesis.configuration import storage_directory

    where = storage_directory(intent_to_write=False).home_directory.resolve()
    assert not where.is_relative_to(REPO), where
