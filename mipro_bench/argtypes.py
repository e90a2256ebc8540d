"""argparse pieces every command of the project shares: one-line errors and checked numbers.

A bad option must cost the user one line on stderr and exit 2, never a usage
dump or a traceback, whichever command they ran (the seed CLIs or the task
app's server), so the parser and the number checks live here once.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

from mipro_bench.errors import EXIT_USAGE

__all__ = ["EXIT_USAGE", "OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (no usage dump), exit 2, and no
    abbreviations (`--seed 3` must never be taken as `--seeds 3`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(text: str, *, expected: str = "a whole number") -> int:
    """int(text), or an ArgumentTypeError saying what was expected."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def price_per_mtok(text: str) -> float:
    """--price-in/--price-out: USD per million tokens, a finite number >= 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected USD per million tokens (a number), got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a price >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 meaning "any free one"; out of range is a usage error, not a failed run."""
    value = whole_number(text, expected="a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value}")
    return value


def usable_results_dir(path: str | os.PathLike[str]) -> Path:
    """`path`, or ValueError saying in one line why records could not be written there.

    Checked before a run starts (finding out when the record is written loses the
    run), without creating anything: a run that never starts leaves no folder behind.
    """
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--results-dir {folder}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--results-dir {folder}: {existing} is not writable")
    return folder
