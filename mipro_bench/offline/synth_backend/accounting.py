"""What a job needs from the backend around it, and what it has spent.

Shared by the offline job (Synth's published MIPROv2, offline.py) and the
online system (online.py), so both report their LM calls and rollouts in the
same fields the adapter reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mipro_bench.offline.synth_backend.jobs import JobStore
from mipro_bench.task_client.interceptor import Interceptor
from mipro_bench.task_client.rollouts import RolloutOutcome


class JobFailed(RuntimeError):
    """The job cannot produce a meaningful result (its message is the job's error)."""


@dataclass
class JobContext:
    """Where a job's calls go: the store, the interceptor, the task app key and the LMs."""

    store: JobStore
    interceptor: Interceptor
    backend_url: str  # how the task app reaches this backend (the interceptor)
    env_api_key: str | None
    upstream_url: str  # the policy LM (OpenAI-compatible, ends in /v1)
    proposer_url: str
    upstream_api_key: str | None


@dataclass
class Accounting:
    """Rollouts and LM calls of one job, counted where they happen."""

    rollouts: int = 0
    rollouts_failed: int = 0
    consecutive_failures: int = 0
    proposal_calls: int = 0
    proposal_errors: int = 0
    policy_calls: int = 0
    policy_errors: int = 0
    first_error: str | None = None
    first_proposer_error: str | None = None
    trajectory: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lm_calls(self) -> int:
        return self.proposal_calls + self.policy_calls

    def on_policy_call(self, _cid: str, ok: bool) -> None:
        if ok:
            self.policy_calls += 1
        else:
            self.policy_errors += 1

    def on_proposer_turn(self, error: str | None) -> None:
        if error is None:
            self.proposal_calls += 1
        else:
            self.proposal_errors += 1
            self.first_proposer_error = self.first_proposer_error or error

    def note(self, outcome: RolloutOutcome) -> None:
        self.rollouts += 1
        if outcome.ok:
            self.consecutive_failures = 0
        else:
            self.rollouts_failed += 1
            self.consecutive_failures += 1
            self.first_error = self.first_error or outcome.error

    def lm_calls_dict(self) -> dict[str, Any]:
        return {"proposer": self.proposal_calls, "policy": self.policy_calls,
                "proposer_errors": self.proposal_errors, "policy_errors": self.policy_errors}
