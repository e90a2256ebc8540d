"""The task-app executor: a prompt runs as Synth runs prompts, as task-app rollouts.

The task app always sends its baseline messages; the session's interceptor
(the same `Interceptor` the local Synth backend uses during a job) swaps the
instruction under evaluation in and forwards to the run's LM under this
case's scope and phase. The task app maps the answer with the suite's one
label rule; each rollout's details give the item's prediction. The baseline
is evaluated the same way, with the baseline instruction swapped in for
itself. A prompt's demos are rendered into the system message the interceptor
swaps in, after the instruction, as labelled examples (`system_message`):

    <instruction>

    Examples:
    Query: <demo query>
    [Reasoning: <demo rationale>]
    Intent: <demo intent>

so every prompt an optimizer makes can be scored here; the task app's user
message and forced tool call are unchanged.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from mipro_bench.case_context import CaseContext
from mipro_bench.data import Split
from mipro_bench.event_loop import off_event_loop
from mipro_bench.executors.base import EvaluationFailed
from mipro_bench.prompt import initial_prompt
from mipro_bench.results import Demo, ItemResult, OptimizedPrompt
from mipro_bench.session_servers import SessionServers, private_servers
from mipro_bench.task_client.patterns import PromptPattern
from mipro_bench.task_client.rollouts import RolloutOutcome, TaskAppClient

EVAL_CANDIDATE = "eval"
DEFAULT_OPTIONS: dict[str, Any] = {"concurrency": 8, "timeout_s": 120.0, "task_app": {}}
DEMOS_HEADER = "Examples:"


def system_message(instruction: str, demos: tuple[Demo, ...] = ()) -> str:
    """The system message a prompt runs with in the task app: the instruction, then its
    demos as labelled examples (nothing added for an instruction-only prompt)."""
    if not demos:
        return instruction
    blocks = []
    for demo in demos:
        lines = [f"Query: {demo.query}"]
        if demo.reasoning:
            lines.append(f"Reasoning: {' '.join(demo.reasoning.split())}")
        lines.append(f"Intent: {demo.intent}")
        blocks.append("\n".join(lines))
    return f"{instruction}\n\n{DEMOS_HEADER}\n" + "\n\n".join(blocks)


def _split_name(split: Split, request: CaseContext) -> str:
    """The task app addresses the request's panel by split name: make sure it is that one."""
    try:
        same = request.splits.by_name(split.name)
    except KeyError:
        same = None
    if same is None or same.digest != split.digest:
        raise ValueError(f"evaluate: split {split.name!r} is not one of this request's splits")
    return split.name


async def _rollouts(task_url: str, env_key: str, inference_url: str, split: str, n: int,
                    request: CaseContext, phase: str, concurrency: int, timeout_s: float,
                    max_errors: int) -> list[RolloutOutcome]:
    """Every seed's rollout; stops early once more than `max_errors` failed.

    Past that count the evaluation is failed whatever the rest would do, so waiting for
    the other rollouts (each retrying a dead LM) would only delay the same verdict.
    """
    app = TaskAppClient(task_url, env_key, timeout_s=timeout_s, max_concurrent=concurrency)
    tasks = [asyncio.ensure_future(app.rollout(
        seed=seed, env_config={"split": split}, inference_url=inference_url,
        model=request.lm.settings.model, correlation_id=f"{request.scope}-{phase}-{seed}",
        temperature=request.lm.settings.temperature,
        max_tokens=request.lm.settings.limit_for("tool_call")))
        for seed in range(n)]
    try:
        failed: list[RolloutOutcome] = []
        for finished in asyncio.as_completed(tasks):
            outcome = await finished
            if not outcome.ok:
                failed.append(outcome)
                if len(failed) > max_errors:
                    raise EvaluationFailed(
                        f"{phase}: more than {max_errors} of {n} rollouts failed "
                        f"(stopped early); first: {failed[0].error}")
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.aclose()


def _item(split: Split, seed: int, outcome: RolloutOutcome) -> ItemResult:
    example = split.examples[seed]
    details = outcome.details or {}
    if details.get("example_id") not in (None, example.id):
        raise AssertionError(f"task app answered seed {seed} with {details.get('example_id')!r}, "
                             f"expected {example.id!r}")
    predicted = details.get("prediction") if outcome.ok else None
    match = details.get("match") if outcome.ok else None
    return ItemResult(
        id=example.id,
        expected=example.label,
        predicted=predicted if isinstance(predicted, str) else None,
        correct=outcome.ok and outcome.reward >= 1.0 and predicted == example.label,
        error=None if outcome.ok else (outcome.error or "rollout failed"),
        match=match if isinstance(match, str) else None,
    )


def evaluate_in_harness(harness: SessionServers, instruction: str, split: Split,
                        request: CaseContext, phase: str, *, concurrency: int,
                        timeout_s: float, max_errors: int,
                        task_app_options: Mapping[str, Any]) -> tuple[ItemResult, ...]:
    """One rollout per item of `split` through the harness's task app and interceptor."""
    name = _split_name(split, request)
    task_app = harness.task_app(**dict(task_app_options))
    served = harness.interceptor()
    baseline = PromptPattern.from_config(initial_prompt(request.splits.labels))
    route = served.interceptor.register(
        baseline, {EVAL_CANDIDATE: baseline.with_instruction(instruction)},
        upstream_url=request.lm_base_url(phase), upstream_api_key=request.lm.api_key,
        route_id=f"eval-{phase}-{secrets.token_hex(6)}")
    try:
        outcomes = asyncio.run(_rollouts(
            task_app.url, task_app.api_key, route.inference_url(served.url, EVAL_CANDIDATE),
            name, len(split), request, phase, concurrency, timeout_s, max_errors))
    finally:
        served.interceptor.unregister(route.route_id)
    return tuple(_item(split, seed, o) for seed, o in enumerate(outcomes))


class TaskAppExecutor:
    """Runs a prompt through the Banking77 task app's forced tool call."""

    name: ClassVar[str] = "task_app"
    # Nothing in the options changes the messages sent (concurrency, timeouts, retries).
    default_options: ClassVar[Mapping[str, Any]] = DEFAULT_OPTIONS
    format_options: ClassVar[tuple[str, ...]] = ()

    def can_express(self, prompt: OptimizedPrompt) -> bool:
        return True  # demos go into the system message as labelled examples

    def evaluate(self, prompt: OptimizedPrompt, split: Split, request: CaseContext,
                 phase: str, *, max_errors: int, options: Mapping[str, Any] | None = None,
                 ) -> tuple[ItemResult, ...]:
        opts = {**DEFAULT_OPTIONS, **(options or {})}
        text = system_message(prompt.instruction, prompt.demos)

        def run(harness: SessionServers) -> tuple[ItemResult, ...]:
            return evaluate_in_harness(
                harness, text, split, request, phase,
                concurrency=int(opts["concurrency"]), timeout_s=float(opts["timeout_s"]),
                max_errors=max_errors, task_app_options=opts["task_app"])

        if request.harness is not None:
            return off_event_loop(lambda: run(request.harness))
        with private_servers(request.splits) as harness:
            return off_event_loop(lambda: run(harness))
