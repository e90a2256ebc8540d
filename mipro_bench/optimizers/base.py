"""The one small protocol every optimizer adapter implements, and what it is handed.

An adapter only optimizes: it gets an `OptimizeRequest` (panel, LM endpoint,
mode, its own typed budget, seed, scope, the session's harness) and returns an
`OptimizeOutcome` (the prompt value, its own best score, trajectory). Scoring
prompts is the executors' job and everything else (phase order, usage, the
record, the item-error policy) is the runner's, so a third optimizer is one new
module with its `OptimizerSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mipro_bench.case_context import CaseContext
from mipro_bench.case_context import Progress as Progress  # re-exported for adapters
from mipro_bench.case_context import UsageReader as UsageReader  # re-exported for adapters
from mipro_bench.errors import UsageError as UsageError  # re-exported: raised by adapters
from mipro_bench.errors import UserError
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import Mode, OptimizedPrompt, TrajectoryPoint

if TYPE_CHECKING:
    from mipro_bench.optimizers.spec import OptimizerSpec

BASELINE_PROMPT = OptimizedPrompt(instruction=BASELINE_INSTRUCTION, demos=())



class NotSupported(UserError):
    """This optimizer cannot run this configuration (e.g. Synth MIPRO few-shot)."""


class ServiceRefused(RuntimeError):
    """A service the optimizer runs on refused the case once it had started (e.g. Synth's
    hosted service refusing the job's route): its message is one complete line for the user.

    The runner records it like a refused check (`refused: <line>`, `details.refused`), not
    as a crash: the user acts on it by choosing another path, not by retrying.
    """


@dataclass(frozen=True, kw_only=True)
class OptimizeRequest(CaseContext):
    """A case's context (panel, LM endpoint, scope, servers) plus what only an optimizer
    needs: the mode, its own frozen budget type (its spec's budget_type), seed, options."""

    mode: Mode
    budget: Any
    seed: int
    options: dict[str, Any] = field(default_factory=dict)


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
