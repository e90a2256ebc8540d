"""The suite's own evaluation of a Synth instruction: task-app rollouts through an interceptor.

A Synth prompt runs the way Synth runs it: the task app sends its baseline
messages, an interceptor swaps the instruction under evaluation in (the
same `Interceptor` the local backend uses during a job) and forwards to the
run's LM under this case's scope and phase (baseline_eval / test_eval). The
task app maps the answer with the suite's one parser; each rollout's
details give the item's prediction. The baseline is evaluated the same way,
with the baseline instruction substituted for itself.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from mipro_bench.data import Split
from mipro_bench.optimizers.base import OptimizeRequest
from mipro_bench.optimizers.synth_mipro import EvaluationFailed
from mipro_bench.prompt import initial_prompt
from mipro_bench.results import ItemResult
from mipro_bench.serving import serve_in_thread
from mipro_bench.synth_local.interceptor import Interceptor, interceptor_app
from mipro_bench.synth_local.patterns import PromptPattern
from mipro_bench.synth_local.rollouts import RolloutOutcome, TaskAppClient

EVAL_CANDIDATE = "eval"


def _split_name(split: Split, request: OptimizeRequest) -> str:
    """The task app addresses the request's panel by split name: make sure it is that one."""
    try:
        same = request.splits.by_name(split.name)
    except KeyError:
        same = None
    if same is None or same.digest != split.digest:
        raise ValueError(f"evaluate: split {split.name!r} is not one of this request's splits")
    return split.name


async def _rollouts(task_url: str, env_key: str, inference_url: str, split: str, n: int,
                    request: OptimizeRequest, phase: str, concurrency: int, timeout_s: float,
                    max_errors: int) -> list[RolloutOutcome]:
    """Every seed's rollout; stops early once more than `max_errors` failed.

    Past that count the evaluation is failed whatever the rest would do, so waiting for
    the other rollouts (each retrying a dead LM) would only delay the same verdict.
    """
    app = TaskAppClient(task_url, env_key, timeout_s=timeout_s, max_concurrent=concurrency)
    tasks = [asyncio.ensure_future(app.rollout(
        seed=seed, env_config={"split": split}, inference_url=inference_url,
        model=request.lm.settings.model, correlation_id=f"{request.scope}-{phase}-{seed}",
        temperature=request.lm.settings.temperature, max_tokens=request.lm.settings.max_tokens))
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
    return ItemResult(
        id=example.id,
        expected=example.label,
        predicted=predicted if isinstance(predicted, str) else None,
        correct=outcome.ok and outcome.reward >= 1.0 and predicted == example.label,
        error=None if outcome.ok else (outcome.error or "rollout failed"),
    )


def evaluate_through_task_app(instruction: str, split: Split, request: OptimizeRequest,
                              phase: str, *, concurrency: int = 8, timeout_s: float = 120.0,
                              max_errors: int | None = None,
                              task_app_options: dict[str, Any] | None = None,
                              ) -> tuple[ItemResult, ...]:
    """One rollout per item of `split`; EvaluationFailed once more than `max_errors` fail."""
    from task_app.server import serve_task_app

    name = _split_name(split, request)
    env_key = f"mipro-bench-eval-{secrets.token_hex(12)}"
    baseline = PromptPattern.from_config(initial_prompt(request.splits.labels))
    interceptor = Interceptor(timeout_s=timeout_s)
    route = interceptor.register(
        baseline, {EVAL_CANDIDATE: baseline.with_instruction(instruction)},
        upstream_url=request.lm_base_url(phase), upstream_api_key=request.lm.api_key)
    with (
        serve_task_app(request.splits, env_api_key=env_key, port=0,
                       **(task_app_options or {})) as task_app,
        serve_in_thread(interceptor_app(interceptor), name="interceptor") as served,
    ):
        outcomes = asyncio.run(_rollouts(
            task_app.url, env_key, route.inference_url(served.url, EVAL_CANDIDATE), name,
            len(split), request, phase, concurrency, timeout_s,
            len(split) if max_errors is None else max_errors))
    return tuple(_item(split, seed, o) for seed, o in enumerate(outcomes))
