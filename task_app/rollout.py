"""One rollout: fetch the example, ask the LM with the baseline messages, score the answer.

The messages are `build_messages(BASELINE_INSTRUCTION, query, labels)`, the
same text `initial_prompt(labels)` declares as patterns, so an interceptor
can find the instruction and swap a candidate in. The answer is read from the
forced tool call (or the text, when a server ignores tools) and mapped with
`match_label`, the suite's one rule (the step that decided is `details.match`), so
a rollout's reward and the suite's own evaluation of the same prompt can never
disagree on parsing.

An LM that fails after the client's retries does not fail the request: the
rollout is scored 0, the error is recorded in `details`, and
`success_status` says it was an infrastructure failure, not a wrong answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from synth_ai.data.enums import SuccessStatus
from synth_ai.sdk.localapi._impl.contracts import RolloutMetrics, RolloutRequest, RolloutResponse
from synth_ai.sdk.localapi._impl.trace_correlation_helpers import build_trace_payload

from mipro_bench.labels import match_label
from mipro_bench.lm.client import LMCallError
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from task_app.answer import Answer, Usage, extract_answer, extract_usage
from task_app.dataset import DEFAULT_SPLIT, TaskDataset, TaskInputError
from task_app.lm_pool import ChatCaller
from task_app.policy import PolicyDefaults, parse_policy

APP_ID = "banking77"


@dataclass(frozen=True)
class RolloutTarget:
    split: str
    seed: int


def parse_env(request: RolloutRequest) -> RolloutTarget:
    config = request.env.config or {}
    split = config.get("split", DEFAULT_SPLIT)
    if split is None:
        split = DEFAULT_SPLIT
    if not isinstance(split, str):
        raise TaskInputError("unknown_split", "env.config.split must be a string "
                             "(train, val, test or trainval)")
    seed = request.env.seed
    if seed is None:
        raise TaskInputError("missing_seed", "env.seed is required: the index of the example "
                             "in the split")
    return RolloutTarget(split=split, seed=seed)


def _status_for(error: LMCallError) -> SuccessStatus:
    if error.status is None:
        return SuccessStatus.NETWORK_ERROR  # no HTTP answer at all: refused, reset, timed out
    if error.status in (408, 504):
        return SuccessStatus.TIMEOUT
    return SuccessStatus.FAILURE


class RolloutRunner:
    """Runs rollouts against one panel with the app's LM client (shared connection pools)."""

    def __init__(self, dataset: TaskDataset, client: ChatCaller,
                 defaults: PolicyDefaults | None = None) -> None:
        self.dataset = dataset
        self.client = client
        self.defaults = defaults or PolicyDefaults()
        self._tools = [classify_tool(dataset.labels)]
        self._tool_choice = tool_choice()

    async def run(self, request: RolloutRequest) -> RolloutResponse:
        """Raises TaskInputError for a bad request; any LM outcome becomes a response."""
        started = time.perf_counter()
        target = parse_env(request)
        example = self.dataset.example(target.split, target.seed)
        policy = parse_policy(request.policy.config or {}, self.defaults)
        labels = self.dataset.labels
        messages = build_messages(BASELINE_INSTRUCTION, example.text, labels)
        body = policy.request_body(messages, self._tools, self._tool_choice)

        response: dict[str, Any] | None = None
        error: LMCallError | None = None
        call_started = time.perf_counter()
        try:
            response = await self.client.chat(policy.chat_url, policy.api_key, body)
        except LMCallError as exc:
            error = exc
        latency_ms = (time.perf_counter() - call_started) * 1000.0

        answer = extract_answer(response) if response is not None else Answer(None, "none")
        usage = extract_usage(response) if response is not None else Usage()
        matched = match_label(answer.raw, labels)
        prediction = matched.label
        correct = error is None and prediction == example.label
        reward = 1.0 if correct else 0.0
        details: dict[str, Any] = {
            "split": target.split,
            "seed": target.seed,
            "example_id": example.id,
            "query": example.text,
            "expected": example.label,
            "prediction": prediction,
            "match": matched.step,  # the step of the label rule that decided (labels.py)
            "raw_answer": answer.raw,
            "answer_source": answer.source,
            "finish_reason": answer.finish_reason,
            "correct": correct,
            "model": policy.model,
            "response_model": response.get("model") if response is not None else None,
            "latency_ms": round(latency_ms, 3),
            "usage": usage.to_dict(),
            "error": None,
        }
        if error is not None:
            details["error"] = {"type": "lm_call_failed", "message": str(error),
                                "status": error.status, "attempts": error.attempts}
        details["rollout_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        return RolloutResponse(
            trace_correlation_id=request.trace_correlation_id,
            reward_info=RolloutMetrics(
                outcome_reward=reward,
                outcome_objectives={"reward": reward},
                instance_objectives=[{"reward": reward}],
                details=details,
            ),
            trace=build_trace_payload(
                messages,
                response,
                correlation_id=request.trace_correlation_id,
                metadata={"app_id": APP_ID, "split": target.split, "seed": target.seed,
                          "example_id": example.id},
            ),
            inference_url=policy.inference_url,
            success_status=SuccessStatus.SUCCESS if error is None else _status_for(error),
            status_detail=None if error is None else str(error)[:500],
        )
