"""The client side of online MIPRO: this process serves the traffic and reports rewards.

Online, Synth never calls the task app: the client's own application makes
each LM call through the job's proxy URL and reports how it went. Here the
"application" classifies training queries (the job's online pool, kept
apart from the examples the proposer was shown): each rollout sends the baseline
messages (the same `build_messages` + forced tool the task app sends) to
`{proxy_url}/{rollout_id}/chat/completions`, reads the candidate that served
it from the `x-mipro-candidate-id` header, maps the answer with the suite's
parser (`task_app.answer.extract_answer` + `map_to_label`), and posts
`{status: "reward"}` then `{status: "done"}` to `.../mipro/systems/{id}/status`.
A rollout whose LM call failed is closed without a reward (no evidence
either way) and counted. Every rollout of the budget is one proxy call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from mipro_bench.data import Example, Splits
from mipro_bench.labels import map_to_label
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from mipro_bench.task_client.interceptor import CANDIDATE_HEADER
from task_app.answer import extract_answer

PREFIX = "/api/prompt-learning/online"


class OnlineDriveError(RuntimeError):
    """The online job could not be driven (no proxy URL, or every rollout failed)."""


@dataclass(frozen=True)
class OnlineSummary:
    system_id: str
    proxy_url: str
    rollouts: int
    failed: int
    rewarded: int
    reward_sum: float
    state: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"system_id": self.system_id, "proxy_url": self.proxy_url,
                "client_rollouts": self.rollouts, "client_failed": self.failed,
                "client_rewarded": self.rewarded, "client_mean_reward":
                    self.reward_sum / self.rewarded if self.rewarded else None,
                "best_candidate_id": self.state.get("best_candidate_id")}


def _traffic(pool: Sequence[Example], n: int, seed: int) -> list[Example]:
    """n examples from `pool`: seeded passes over it, reshuffled each pass."""
    rng = random.Random(f"online-traffic:{seed}")
    out: list[Example] = []
    while len(out) < n:
        batch = list(pool)
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out


async def _drive(backend_url: str, api_key: str, job_id: str, splits: Splits,
                 pool: Sequence[Example], *, rollouts: int, model: str, temperature: float,
                 max_tokens: int, seed: int, concurrency: int, timeout_s: float
                 ) -> OnlineSummary:
    headers = {"Authorization": f"Bearer {api_key}"}
    labels = splits.labels
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers, trust_env=False) as http:
        response = await http.get(f"{backend_url}{PREFIX}/jobs/{job_id}",
                                  params={"include_metadata": "true"})
        response.raise_for_status()
        metadata = response.json().get("metadata") or {}
        system_id, proxy_url = metadata.get("mipro_system_id"), metadata.get("mipro_proxy_url")
        if not system_id or not proxy_url:
            raise OnlineDriveError(f"online job {job_id} has no mipro_system_id/mipro_proxy_url "
                                   "in its metadata")
        status_url = f"{backend_url}{PREFIX}/mipro/systems/{system_id}/status"
        slots = asyncio.Semaphore(concurrency)
        tools, choice = [classify_tool(labels)], tool_choice()
        results: list[float | None] = []

        async def one(index: int, example: Example) -> None:
            rollout_id = f"{job_id}-r{index:05d}"
            body = {"model": model, "messages": build_messages(BASELINE_INSTRUCTION,
                                                                example.text, labels),
                    "tools": tools, "tool_choice": choice, "temperature": temperature,
                    "max_tokens": max_tokens}
            async with slots:
                try:
                    reply = await http.post(f"{proxy_url}/{rollout_id}/chat/completions",
                                            json=body)
                except httpx.HTTPError:
                    reply = None
                cid = reply.headers.get(CANDIDATE_HEADER) if reply is not None else None
                reward: float | None = None
                if reply is not None and reply.status_code == 200:
                    predicted = map_to_label(extract_answer(reply.json()).raw, labels)
                    reward = 1.0 if predicted == example.label else 0.0
                    update = {"rollout_id": rollout_id, "status": "reward", "reward": reward,
                              "candidate_id": cid}
                    (await http.post(status_url, json=update)).raise_for_status()
                if reply is not None and reply.status_code != 404:
                    done = {"rollout_id": rollout_id, "status": "done", "candidate_id": cid}
                    (await http.post(status_url, json=done)).raise_for_status()
                results.append(reward)

        await asyncio.gather(*(one(i, ex) for i, ex in
                               enumerate(_traffic(pool, rollouts, seed))))
        state_resp = await http.get(f"{backend_url}{PREFIX}/mipro/systems/{system_id}/state")
        state_resp.raise_for_status()
    rewarded = [r for r in results if r is not None]
    if not rewarded:
        raise OnlineDriveError(f"online job {job_id}: all {rollouts} proxied LM calls failed")
    return OnlineSummary(system_id, proxy_url, rollouts, len(results) - len(rewarded),
                         len(rewarded), sum(rewarded), state_resp.json())


def drive_online(backend_url: str, api_key: str, job_id: str, splits: Splits, *, rollouts: int,
                 model: str, seed: int, pool: Sequence[int] | None = None,
                 temperature: float = 0.0, max_tokens: int = 256, concurrency: int = 8,
                 timeout_s: float = 120.0) -> OnlineSummary:
    """Serve `rollouts` rollouts through the job's proxy and report each reward.

    The traffic is drawn from the train examples at `pool` (the job's online_pool;
    default all of train), so it can be kept apart from the proposer's examples.
    """
    indices = range(len(splits.train)) if pool is None else pool
    examples = [splits.train.examples[i] for i in indices]
    return asyncio.run(_drive(backend_url.rstrip("/"), api_key, job_id, splits, examples,
                              rollouts=rollouts, model=model, temperature=temperature,
                              max_tokens=max_tokens, seed=seed, concurrency=concurrency,
                              timeout_s=timeout_s))
