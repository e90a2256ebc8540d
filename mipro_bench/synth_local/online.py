"""Online MIPRO: the client drives the rollouts, the backend picks a candidate for each.

A client (a production app, or here the suite's adapter) sends each LM call
of a rollout to `{proxy_url}/{rollout_id}/chat/completions` with its
baseline messages. The system picks a candidate for that rollout (an Optuna
TPE trial per rollout, the original instruction first), substitutes it like
the offline interceptor does, forwards to the LM and names it in the
`x-mipro-candidate-id` response header. The client then posts the rollout's
reward (`status: "reward"`) and closes it (`status: "done"`) at
`.../mipro/systems/{system_id}/status`; `.../state` shows every candidate's
running mean reward and the current best.

Budget: `rollout_budget` rollouts are served; a new rollout id after that
gets 409. The job succeeds once every served rollout is done and the budget
is spent. The best candidate is the one with the highest posterior mean
reward, (successes + 1) / (n + 2), so one lucky rollout does not win.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.synth_local.mipro import Accounting, Candidate
from mipro_bench.synth_local.patterns import PromptPattern

READY_TIMEOUT_S = 300.0


class OnlineError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Rollout:
    rollout_id: str
    cid: str
    trial: Any  # optuna.Trial
    reward: float | None = None
    done: bool = False


@dataclass
class OnlineSystem:
    system_id: str
    job_id: str
    rollout_budget: int
    seed: int
    baseline: PromptPattern
    candidates: list[Candidate] = field(default_factory=list)
    rollouts: dict[str, _Rollout] = field(default_factory=dict)
    version: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    setup_error: str | None = None
    route_id: str | None = None
    acct: Accounting = field(default_factory=Accounting)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _study: Any = None

    @staticmethod
    def new_id() -> str:
        return f"mipro_sys_{secrets.token_hex(6)}"

    def set_candidates(self, candidates: list[Candidate]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with self._lock:
            self.candidates = candidates
            self._study = optuna.create_study(
                direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed))
            self._study.enqueue_trial({"candidate": candidates[0].cid})
            self.version += 1

    # -- serving --

    def pick(self, rollout_id: str) -> str:
        """The candidate serving `rollout_id` (the same one on every call of that rollout)."""
        import optuna

        with self._lock:
            known = self.rollouts.get(rollout_id)
            if known is not None:
                if known.done:
                    raise OnlineError(409, "rollout_done", f"rollout {rollout_id!r} is done")
                return known.cid
            if len(self.rollouts) >= self.rollout_budget:
                raise OnlineError(409, "budget_exhausted",
                                  f"the rollout budget of {self.rollout_budget} is spent")
            dist = optuna.distributions.CategoricalDistribution(
                [c.cid for c in self.candidates])
            trial = self._study.ask({"candidate": dist})
            cid = trial.params["candidate"]
            self.rollouts[rollout_id] = _Rollout(rollout_id, cid, trial)
            return cid

    def status(self, body: dict[str, Any]) -> dict[str, Any]:
        rollout_id = body.get("rollout_id")
        kind = body.get("status")
        if not isinstance(rollout_id, str) or not rollout_id:
            raise OnlineError(400, "invalid_request", "rollout_id must be a non-empty string")
        if kind not in ("reward", "done"):
            raise OnlineError(400, "invalid_request", "status must be 'reward' or 'done'")
        with self._lock:
            rollout = self.rollouts.get(rollout_id)
            if rollout is None:
                raise OnlineError(404, "unknown_rollout",
                                  f"rollout {rollout_id!r} was never served by this system")
            claimed = body.get("candidate_id")
            if claimed is not None and claimed != rollout.cid:
                raise OnlineError(409, "candidate_mismatch",
                                  f"rollout {rollout_id!r} was served by {rollout.cid}, "
                                  f"not {claimed!r}")
            if kind == "reward":
                reward = body.get("reward")
                if isinstance(reward, bool) or not isinstance(reward, int | float) or not (
                        0.0 <= float(reward) <= 1.0):
                    raise OnlineError(400, "invalid_request", "reward must be a number in [0, 1]")
                if rollout.reward is not None or rollout.done:
                    raise OnlineError(409, "reward_already_set",
                                      f"rollout {rollout_id!r} already has its reward")
                rollout.reward = float(reward)
                self._study.tell(rollout.trial, rollout.reward)
                cand = self._candidate(rollout.cid)
                cand.minibatch_rollouts += 1
                cand.minibatch_reward += rollout.reward
                cand.trials += 1
                self.version += 1
                self._point()
            else:
                if not rollout.done:
                    rollout.done = True
                    if rollout.reward is None:  # closed without a reward: not evidence
                        import optuna

                        self._study.tell(rollout.trial, state=optuna.trial.TrialState.FAIL)
                    self.version += 1
            return {"ok": True, "rollout_id": rollout_id, "candidate_id": rollout.cid,
                    "version": self.version, "finished": self.finished}

    def _point(self) -> None:
        """Best posterior candidate's mean reward after each reward (the online trajectory)."""
        best = self.best()
        rewarded = sum(c.minibatch_rollouts for c in self.candidates)
        self.trajectory.append({
            "rollouts": rewarded, "lm_calls": self.acct.lm_calls, "score": best.minibatch_mean,
            "kind": "online", "candidate_id": best.cid, "label": f"reward {rewarded}"})

    # -- reading --

    def _candidate(self, cid: str) -> Candidate:
        return next(c for c in self.candidates if c.cid == cid)

    @staticmethod
    def posterior(c: Candidate) -> float:
        return (c.minibatch_reward + 1.0) / (c.minibatch_rollouts + 2.0)

    def best(self) -> Candidate:
        with self._lock:
            return max(self.candidates, key=lambda c: (self.posterior(c), c.minibatch_rollouts,
                                                      -self.candidates.index(c)))

    @property
    def served(self) -> int:
        return len(self.rollouts)

    @property
    def done_count(self) -> int:
        return sum(1 for r in self.rollouts.values() if r.done)

    @property
    def finished(self) -> bool:
        return self.served >= self.rollout_budget and self.done_count == self.served

    def state(self) -> dict[str, Any]:
        with self._lock:
            best = self.best() if self.candidates else None
            return {
                "system_id": self.system_id,
                "job_id": self.job_id,
                "ready": self.ready.is_set(),
                "version": self.version,
                "best_candidate_id": best.cid if best else None,
                "rollout_budget": self.rollout_budget,
                "rollouts_served": self.served,
                "rollouts_done": self.done_count,
                "candidates": {
                    c.cid: {
                        "instruction": c.instruction,
                        "source": c.source,
                        "prompt": c.pattern.to_dict(),
                        "rollouts": c.minibatch_rollouts,
                        "reward_sum": c.minibatch_reward,
                        "mean_reward": c.minibatch_mean,
                        "posterior_mean": self.posterior(c),
                    }
                    for c in self.candidates
                },
            }

    def result(self) -> dict[str, Any]:
        best = self.best()
        means = [c.minibatch_mean for c in self.candidates if c.minibatch_mean is not None]
        return {
            "best_score": best.minibatch_mean,
            "best_full_score": None,
            "best_minibatch_score": max(means) if means else None,
            "best_candidate_id": best.cid,
            "best_instruction": best.instruction,
            "best_prompt": best.pattern.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "rollouts_used": self.served,
            "rollout_budget": self.rollout_budget,
            "score_kind": "online_reward",
        }
