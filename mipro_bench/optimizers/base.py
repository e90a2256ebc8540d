"""The one small protocol every optimizer adapter implements.

An adapter optimizes and evaluates prompts in its own format (a DSPy program
runs through DSPy, a Synth instruction through the task app); the runner owns
everything else (baseline and test evaluation order, usage, the record), so
a third optimizer is one new file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mipro_bench.data import Split, Splits
from mipro_bench.lm.endpoint import LMEndpoint
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import ItemResult, Mode, OptimizedPrompt, PhaseUsage, TrajectoryPoint

BASELINE_PROMPT = OptimizedPrompt(instruction=BASELINE_INSTRUCTION, demos=())

Progress = Callable[[str], None]
# Reads one case's LM usage so far, per phase, as the gateway counted it.
UsageReader = Callable[[], Mapping[str, PhaseUsage]]


class NotSupported(Exception):
    """This optimizer cannot run this configuration (e.g. Synth MIPRO few-shot)."""


class UsageError(ValueError):
    """A budget or option combination that cannot run (CLIs: one line, exit 2).

    Raised before any LM call, e.g. DSPy's `--trials` together with `--auto`.
    """


@dataclass(frozen=True)
class Budget:
    """How much an optimizer may spend. Each adapter reads the knobs it has.

    trials/auto/num_candidates are DSPy MIPROv2's; rollouts is Synth MIPRO's.
    The benchmark matrix picks them so both sides get comparable LM calls.
    """

    trials: int | None = None
    auto: str | None = None
    num_candidates: int | None = None
    rollouts: int | None = None
    minibatch_size: int | None = None
    # Few-shot demo knobs (DSPy's defaults are 4 and 4 when unset); None keeps them out of
    # budgets they do not apply to, e.g. Synth's in the comparison table.
    max_bootstrapped_demos: int | None = None
    max_labeled_demos: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class OptimizeRequest:
    splits: Splits
    lm: LMEndpoint
    mode: Mode
    budget: Budget
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
    name: ClassVar[str]  # record name, e.g. "dspy_miprov2"
    slug: ClassVar[str]  # result file slug, e.g. "dspy_mipro"
    supported_modes: ClassVar[frozenset[Mode]]

    # Optional: `check(self, request) -> None` raising UsageError (or NotSupported) for a
    # request that cannot run; the runner calls it before any LM call or file.

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome: ...

    def evaluate(
        self, prompt: OptimizedPrompt, split: Split, request: OptimizeRequest, phase: str
    ) -> tuple[ItemResult, ...]:
        """Score `prompt` on every item of `split` in this optimizer's own format."""
        ...
