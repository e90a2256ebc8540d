"""Online MIPRO: the client drives the rollouts, the backend picks a candidate for each.

A client (a production app, or here the suite's adapter) sends each LM call
of a rollout to `{proxy_url}/{rollout_id}/chat/completions` with its
baseline messages. The system picks a candidate for that rollout,
substitutes it like the offline interceptor does, forwards to the LM and
names it in the `x-mipro-candidate-id` response header. The client then
posts the rollout's reward (`status: "reward"`) and closes it (`status:
"done"`) at `.../mipro/systems/{system_id}/status`; `.../state` shows every
candidate's running mean reward and the current best.

Which code does what: the candidates come from one session of Synth's
published instruction proposer (`synth-optimizers`, `run_openenv_react_proposer`,
its tools and prompts, its turns sent through the LM gateway). Picking a
candidate per rollout is this backend's own rule, because Synth's published TPE
scores each candidate once and cannot spread repeated rollouts over them: every
candidate is served once in order (the original instruction first), then each
rollout goes to the candidate with the highest seeded Thompson draw from its
Beta(successes + 1, failures + 1) posterior.

Budget: `rollout_budget` rollouts are served; a new rollout id after that
gets 409. The job succeeds once every served rollout is done and the budget
is spent. The best candidate is the one with the highest posterior mean
reward, (successes + 1) / (n + 2), so one lucky rollout does not win.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth_optimizers.miprov2 import core as synth

from mipro_bench.offline.synth_backend.accounting import Accounting, JobContext, JobFailed
from mipro_bench.offline.synth_backend.config import MiproJobConfig
from mipro_bench.offline.synth_backend.jobs import Job
from mipro_bench.offline.synth_backend.offline_job import (
    MAX_NOOP_TURNS,
    MAX_TURNS,
    MODULE_ID,
    grounding_rows,
)
from mipro_bench.offline.synth_backend.proposer_agent import GatewayProposerAgent
from mipro_bench.task_client.patterns import PromptPattern
from mipro_bench.task_client.rollouts import TaskAppClient

READY_TIMEOUT_S = 300.0


class OnlineError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Candidate:
    """One instruction the online system serves, and the rewards its rollouts earned."""

    cid: str
    instruction: str
    pattern: PromptPattern
    source: str  # baseline | proposal
    minibatch_rollouts: int = 0
    minibatch_reward: float = 0.0

    @property
    def minibatch_mean(self) -> float | None:
        return self.minibatch_reward / self.minibatch_rollouts if self.minibatch_rollouts else None

    def to_dict(self) -> dict[str, Any]:
        return {"candidate_id": self.cid, "source": self.source,
                "instruction": self.instruction, "rollouts": self.minibatch_rollouts,
                "minibatch_rollouts": self.minibatch_rollouts,
                "minibatch_score": self.minibatch_mean, "full_score": None}


async def propose_online_candidates(cfg: MiproJobConfig, ctx: JobContext, job: Job,
                                    app: TaskAppClient, acct: Accounting,
                                    workdir: Path) -> list[Candidate]:
    """c0 = the original instruction, then what one session of Synth's proposer adds."""
    base = cfg.initial_prompt
    candidates = [Candidate("c0", base.instruction, base, "baseline")]
    if cfg.num_candidates == 0:
        return candidates
    rows = await grounding_rows(cfg, app)
    if len(rows) > cfg.proposer.examples_per_proposal:
        rows = random.Random(f"{cfg.seed}:rows:1").sample(rows, cfg.proposer.examples_per_proposal)
    space = synth.compile_search_space(synth.MiproProgramTemplate(
        program_id="mipro-bench", modules=(synth.MiproModuleTemplate(
            module_id=MODULE_ID, instruction_candidates=(base.instruction,)),)))
    agent = GatewayProposerAgent(
        chat_url=f"{ctx.proposer_url.rstrip('/')}/chat/completions",
        api_key=ctx.upstream_api_key, model=cfg.proposer.model, workdir=str(workdir),
        temperature=cfg.proposer.temperature, max_tokens=cfg.proposer.max_tokens,
        timeout_s=cfg.rollout_timeout_s, on_turn=acct.on_proposer_turn)
    context = synth.MiproOpenEnvProposerContext(
        objective="Improve the online reward while preserving output constraints.",
        round_idx=1, grounding_payload={"sampled_train_rows": rows},
        read_model_payload={"sampled_train_rows": rows},
        baseline_candidate_id="c0", current_best_candidate_id="c0")
    outcome = await synth.run_openenv_react_proposer(
        compiled_space=space, agent=agent, context=context,
        config=synth.MiproOpenEnvProposerConfig(
            max_turns=MAX_TURNS, max_noop_turns=MAX_NOOP_TURNS,
            max_instruction_patches=cfg.num_candidates,
            max_patch_actions_per_session=cfg.num_candidates + 2, chat_retry_attempts=1,
            archive_root=str(workdir / "archive")))
    options = outcome.compiled_space.instruction_lookup.get(
        synth.instruction_component_key(MODULE_ID), {})
    texts = [t for t in options.values() if t and t != base.instruction]
    if not texts and acct.first_proposer_error:
        raise JobFailed(f"Synth's proposer added no candidate: {acct.first_proposer_error}")
    for text in dict.fromkeys(texts):
        candidates.append(Candidate(f"c{len(candidates)}", text, base.with_instruction(text),
                                    "proposal"))
    ctx.store.emit(job, "proposal.completed", f"{len(candidates) - 1} instructions", {
        "candidates": [{"candidate_id": c.cid, "instruction": c.instruction}
                       for c in candidates[1:]],
        "stop_reason": outcome.stop_reason, "lm_calls": acct.lm_calls})
    return candidates


@dataclass
class _Rollout:
    rollout_id: str
    cid: str
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

    @staticmethod
    def new_id() -> str:
        return f"mipro_sys_{secrets.token_hex(6)}"

    def set_candidates(self, candidates: list[Candidate]) -> None:
        with self._lock:
            self.candidates = candidates
            self.version += 1

    def _choose(self) -> str:
        """Each candidate once in order, then the best seeded Thompson draw (see above)."""
        served = len(self.rollouts)
        if served < len(self.candidates):
            return self.candidates[served].cid
        rng = random.Random(f"{self.seed}:{served}")
        return max(self.candidates, key=lambda c: rng.betavariate(
            c.minibatch_reward + 1.0, c.minibatch_rollouts - c.minibatch_reward + 1.0)).cid

    # -- serving --

    def pick(self, rollout_id: str) -> str:
        """The candidate serving `rollout_id` (the same one on every call of that rollout)."""
        with self._lock:
            known = self.rollouts.get(rollout_id)
            if known is not None:
                if known.done:
                    raise OnlineError(409, "rollout_done", f"rollout {rollout_id!r} is done")
                return known.cid
            if len(self.rollouts) >= self.rollout_budget:
                raise OnlineError(409, "budget_exhausted",
                                  f"the rollout budget of {self.rollout_budget} is spent")
            cid = self._choose()
            self.rollouts[rollout_id] = _Rollout(rollout_id, cid)
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
                cand = self._candidate(rollout.cid)
                cand.minibatch_rollouts += 1
                cand.minibatch_reward += rollout.reward
                self.version += 1
                self._point()
            else:
                if not rollout.done:
                    rollout.done = True  # closed without a reward: not evidence
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
