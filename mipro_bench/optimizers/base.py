"""The one small protocol every optimizer adapter implements, and what it is handed.

An adapter only optimizes: it gets an `OptimizeRequest` (panel, LM endpoint,
mode, its own typed budget, seed, scope, the session's harness) and returns an
`OptimizeOutcome` (the prompt value, its own best score, trajectory). Scoring
prompts is the executors' job and everything else (phase order, usage, the
record, the item-error policy) is the runner's, so a third optimizer is one new
module with its `OptimizerSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mipro_bench.data import Splits
from mipro_bench.errors import UserError
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import Mode, OptimizedPrompt, PhaseUsage, TrajectoryPoint

if TYPE_CHECKING:
    from mipro_bench.optimizers.spec import OptimizerSpec
    from mipro_bench.session_servers import SessionServers

BASELINE_PROMPT = OptimizedPrompt(instruction=BASELINE_INSTRUCTION, demos=())

Progress = Callable[[str], None]
# Reads one case's LM usage so far, per phase, as the gateway counted it.
UsageReader = Callable[[], Mapping[str, PhaseUsage]]


class NotSupported(UserError):
    """This optimizer cannot run this configuration (e.g. Synth MIPRO few-shot)."""


class UsageError(UserError, ValueError):
    """A budget or option combination that cannot run (CLIs: one line, exit 2).

    Raised before any LM call, e.g. DSPy's `--trials` together with `--auto`.
    """


class ServiceRefused(RuntimeError):
    """A service the optimizer runs on refused the case once it had started (e.g. Synth's
    hosted service refusing the job's route): its message is one complete line for the user.

    The runner records it like a refused check (`refused: <line>`, `details.refused`), not
    as a crash: the user acts on it by choosing another path, not by retrying.
    """


@dataclass(frozen=True)
class OptimizeRequest:
    splits: Splits
    lm: LMEndpoint
    mode: Mode
    budget: Any  # the optimizer's own frozen budget type (its spec's budget_type)
    seed: int
    workdir: Path
    # The gateway path segment this case's LM calls are counted under; unique per case so
    # concurrent cases (xdist, several seeds) never mix their usage.
    scope: str
    progress: Progress | None = None
    options: dict[str, Any] = field(default_factory=dict)
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


@dataclass(frozen=True)
class OptimizeOutcome:
    prompt: OptimizedPrompt
    best_val_score: float | None  # the optimizer's own best score, 0..1; never test accuracy
    trajectory: tuple[TrajectoryPoint, ...] = ()
    backend: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # Files the optimizer wrote in request.workdir (e.g. {"program": .../dspy_program.json});
    # the runner copies each next to the result record and records where.
    artifacts: dict[str, Path] = field(default_factory=dict)


class Optimizer(Protocol):
    """An adapter: optimizes a prompt. Scoring prompts is the executors' job."""

    spec: ClassVar[OptimizerSpec]  # everything the suite knows about it (name, modes, ...)

    def check(self, request: OptimizeRequest) -> None:
        """Raise UsageError (or NotSupported) for a request that cannot run; called by the
        runner before any LM call or file."""
        ...

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome: ...

    def executor_options(self) -> Mapping[str, Any]:
        """Options of this optimizer's native executor (e.g. DSPy's module and threads)."""
        ...
