"""The one base class for "the user can fix this": every front-end prints one line, exits 2.

Every error a user can fix by changing a flag, a file or the environment (a bad
option, a missing data folder, an LM that cannot be reached at start, a budget
an optimizer cannot run) derives from `UserError`, so the CLIs, the pytest
plugin and the task app's server catch one type and never show a traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user fixes by changing how the command is called (one line, exit 2)."""


class UsageError(UserError, ValueError):
    """A budget or option combination that cannot run (CLIs: one line, exit 2).

    Raised before any LM call, e.g. DSPy's `--trials` together with `--auto`. Here, at the
    bottom, so the optimizers' spec and typed options can raise it without importing the
    optimizer protocol (`mipro_bench.optimizers.base` re-exports it).
    """
