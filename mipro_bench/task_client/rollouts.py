"""Calling the task app: health, labelled examples for the proposer, and rollouts.

A rollout is one `POST /rollout` (one seed, one LM call through the
interceptor). Every call counts against the job's budget whatever its fate:
an error, a timeout or a 4xx scores the rollout 0 and is recorded, it never
fails the job by itself (the loop fails a job only when the task app cannot
be reached at all, or when no rollout succeeded). Concurrency is bounded by
a semaphore so `max_concurrent` holds across trials.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class LabelledExample:
    """A train example the task app shows (query and gold intent): the proposer's grounding."""

    query: str
    intent: str
    seed: int | None = None  # the task-app seed it came from, when known


class TaskAppUnreachable(RuntimeError):
    """The task app did not answer at all (refused, DNS, timeout) or refused our key."""


@dataclass(frozen=True)
class RolloutOutcome:
    seed: int
    reward: float
    ok: bool  # the task app answered 200 and the rollout itself succeeded
    error: str | None = None
    details: Mapping[str, Any] | None = None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


class TaskAppClient:
    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float,
                 max_concurrent: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_concurrent),
            headers=_headers(api_key),
            trust_env=False,
        )
        self._slots = asyncio.Semaphore(max_concurrent)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check_health(self) -> None:
        """TaskAppUnreachable with the reason, unless GET /health answers 200."""
        url = f"{self.base_url}/health"
        try:
            response = await self._http.get(url, timeout=min(10.0, self.timeout_s))
        except httpx.HTTPError as exc:
            raise TaskAppUnreachable(
                f"task app at {self.base_url} is unreachable ({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code in (400, 401, 403):
            raise TaskAppUnreachable(
                f"task app at {self.base_url} rejected the ENVIRONMENT_API_KEY "
                f"(HTTP {response.status_code}); upload it with the SDK (env-keys) first"
            )
        if response.status_code != 200:
            raise TaskAppUnreachable(
                f"task app at {self.base_url} is not healthy (HTTP {response.status_code})"
            )

    async def examples(self, seeds: Sequence[int], split: str | None) -> list[LabelledExample]:
        """Query and expected intent of train seeds, from /task_info (no LM, no rollout).

        Best effort: a task app that does not expose them yields no examples, and the
        proposer then works from the instruction alone.
        """
        if not seeds:
            return []
        params: list[tuple[str, str | int]] = [("seeds", s) for s in seeds]
        if split:
            params.append(("split", split))
        try:
            response = await self._http.get(f"{self.base_url}/task_info", params=params)
        except httpx.HTTPError:
            return []
        if response.status_code != 200:
            return []
        data = response.json()
        infos = data if isinstance(data, list) else [data]
        out = []
        for info in infos:
            meta = info.get("task_metadata") if isinstance(info, dict) else None
            if not isinstance(meta, dict):
                continue
            query, intent, seed = meta.get("query"), meta.get("expected_intent"), meta.get("seed")
            if isinstance(query, str) and isinstance(intent, str):
                out.append(LabelledExample(query=query, intent=intent,
                                           seed=seed if isinstance(seed, int) else None))
        return out

    async def rollout(self, *, seed: int, env_config: Mapping[str, Any], inference_url: str,
                      model: str, correlation_id: str, temperature: float,
                      max_tokens: int) -> RolloutOutcome:
        body = {
            "trace_correlation_id": correlation_id,
            "env": {"seed": seed, "config": dict(env_config)},
            "policy": {"config": {"model": model, "inference_url": inference_url,
                                  "temperature": temperature, "max_tokens": max_tokens}},
        }
        async with self._slots:
            try:
                response = await self._http.post(f"{self.base_url}/rollout", json=body)
            except httpx.TimeoutException:
                return RolloutOutcome(seed, 0.0, False, f"timeout after {self.timeout_s:g}s")
            except httpx.HTTPError as exc:
                return RolloutOutcome(seed, 0.0, False, f"{type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return RolloutOutcome(seed, 0.0, False,
                                  f"task app HTTP {response.status_code}: {response.text[:300]}")
        try:
            data = response.json()
            info = data.get("reward_info") or {}
            reward = float(info.get("outcome_reward") or 0.0)
            details = info.get("details") if isinstance(info.get("details"), dict) else {}
        except (ValueError, AttributeError, TypeError):
            return RolloutOutcome(seed, 0.0, False, "task app answered 200 with a malformed body")
        status = str(data.get("success_status") or "success").lower()
        ok = status.endswith("success")
        error = None if ok else (data.get("status_detail") or status)
        return RolloutOutcome(seed, reward if ok else 0.0, ok, error, details)
