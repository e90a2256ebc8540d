"""What scoring a prompt for one case needs: the panel, the LM endpoint and the case's scope.

At the bottom of the layers so the executors (which score prompts) depend on this and not
on the optimizers' request type: an `OptimizeRequest` is a `CaseContext` plus what only an
optimizer needs (mode, budget, seed, options), so the runner hands either to an executor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mipro_bench.data import Splits
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.results import PhaseUsage

if TYPE_CHECKING:
    from mipro_bench.session_servers import SessionServers

Progress = Callable[[str], None]
# Reads one case's LM usage so far, per phase, as the gateway counted it.
UsageReader = Callable[[], Mapping[str, PhaseUsage]]


@dataclass(frozen=True)
class CaseContext:
    splits: Splits
    lm: LMEndpoint
    workdir: Path
    # The gateway path segment this case's LM calls are counted under; unique per case so
    # concurrent cases (xdist, several seeds) never mix their usage.
    scope: str
    progress: Progress | None = None
    # This case's usage so far (the gateway's count, complete whatever the client): the
    # runner's usage block and an adapter's score-vs-calls trajectory both read it.
    usage: UsageReader | None = None
    # The session's shared servers (task app, interceptor, an optimizer's backend); None
    # outside a session, in which case each use starts and stops a private one.
    harness: SessionServers | None = None

    def lm_base_url(self, phase: str) -> str:
        return self.lm.base_url(self.scope, phase)

    def read_usage(self) -> Mapping[str, PhaseUsage]:
        """This case's per-phase usage so far: the in-process reader if given, else the
        gateway's `GET /usage` (works from any process, e.g. an xdist worker)."""
        if self.usage is not None:
            return self.usage()
        return self.lm.usage(self.scope).get(self.scope, {})

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
