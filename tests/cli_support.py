"""Calling a script's main() in-process the way a shell would see it: exit code and stderr.

argparse reports its own errors by raising SystemExit, the scripts' guarded
errors by returning a code; a test of "one line and a non-zero exit" must
treat both alike.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


def call_main(main: Callable[[list[str]], int], argv: list[str],
              capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, captured stderr) of main(argv)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err
