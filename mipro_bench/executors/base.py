"""The executor protocol: a prompt value in, one scored item per example out.

A prompt (instruction + demos, a frozen serialisable value) is scored by an
*executor*, chosen independently of the optimizer that made it: the
DSPy-program executor runs it as the `query -> intent` program the DSPy
optimizers compile; the task-app executor runs it as Synth runs prompts, as
rollouts through the task app with the interceptor swapping it in. Executors
score only from the prompt value (no side caches), so a prompt rebuilt from
its record scores exactly like the one `optimize` returned. The runner owns
the item-error policy; an executor only stops early once `max_errors` items
failed in the LM, since past that the verdict cannot change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from mipro_bench.case_context import CaseContext
from mipro_bench.data import Split
from mipro_bench.results import ItemResult, OptimizedPrompt

# The suite's one item-error policy (applied by the runner to every evaluation, and by an
# adapter that scores items itself): more than this share of an evaluation's items failing
# in the LM fails the evaluation (an outage, not a score).
MAX_ITEM_ERROR_RATE = 0.1


def allowed_item_errors(n_items: int, rate: float = MAX_ITEM_ERROR_RATE) -> int:
    """How many items of an evaluation may fail in the LM before it is an outage."""
    return math.floor(rate * n_items)


class EvaluationFailed(RuntimeError):
    """Too many items of one evaluation failed in the LM (an outage, not a score)."""


class Executor(Protocol):
    name: ClassVar[str]  # e.g. "dspy_program", "task_app"
    # The option names that change what the LM is sent (DSPy's module), not just how fast
    # (threads, timeouts); with `default_options` they key the session's shared baseline.
    # An executor that does not declare them is keyed by all of its options.
    format_options: ClassVar[tuple[str, ...]]
    default_options: ClassVar[Mapping[str, Any]]

    def can_express(self, prompt: OptimizedPrompt) -> bool:
        """Whether this executor can run `prompt` as it is (e.g. demos in its format)."""
        ...

    def evaluate(self, prompt: OptimizedPrompt, split: Split, request: CaseContext,
                 phase: str, *, max_errors: int, options: Mapping[str, Any] | None = None,
                 ) -> tuple[ItemResult, ...]:
        """Score `prompt` on every item of `split` (in split order) under `phase`.

        May raise EvaluationFailed as soon as more than `max_errors` items failed in the
        LM; `options` are the native optimizer's format options (e.g. DSPy's module).
        """
        ...
