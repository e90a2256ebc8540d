"""The offline MIPRO loop, instruction-only: propose, search with TPE, fully evaluate the best.

1. Candidates: the original instruction (always candidate `c0`) plus the
   meta model's proposals, grounded on labelled training examples the task
   app serves at /task_info (a lookup, not a rollout).
2. Search: an Optuna TPE study (seeded) over the candidates; the first trial
   is the original instruction (as MIPROv2 starts from the default program).
   Each trial scores one candidate on a minibatch of training seeds, drawn
   from a seeded permutation of the pool, with concurrent `/rollout` calls.
3. Full evaluations on the validation seeds: first the original instruction
   (when the plan allows two or more, as MIPROv2 scores its default program
   first), then every `full_eval_every` trials and at the end the candidate
   with the best pooled minibatch score not yet fully evaluated. The best full
   score wins; the original instruction keeps a tie (a proposal must beat it on
   validation), then the better minibatch score, then the earlier candidate.
4. Proposal rounds: with `proposal_rounds` > 1 the proposals are split into
   rounds; each later round starts at an evenly spaced trial and rewrites the
   incumbent (the best candidate so far), so cues found earlier accumulate.

The rollout budget is never exceeded: `plan_budget` splits it into full
evaluations and minibatch trials before anything runs (the last trial takes
what is left). Proposals are LM calls, not rollouts; the job reports both.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.lm.client import ChatClient, LMCallError
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.synth_local.config import MiproJobConfig
from mipro_bench.synth_local.interceptor import Interceptor, InterceptRoute
from mipro_bench.synth_local.jobs import Job, JobStore
from mipro_bench.synth_local.patterns import PromptPattern
from mipro_bench.synth_local.proposer import LabelledExample, ProposerSettings, propose
from mipro_bench.synth_local.rollouts import RolloutOutcome, TaskAppClient

MAX_GROUNDING_EXAMPLES = 1000
PROPOSER_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=2.0,
                             jitter_s=0.1)


class JobFailed(RuntimeError):
    """The job cannot produce a meaningful result (its message is the job's error)."""


# --- the budget, planned before anything runs ------------------------------------------------


@dataclass(frozen=True)
class BudgetPlan:
    rollout_budget: int
    val_n: int  # validation seeds per full evaluation (all of them unless the budget is tiny)
    full_evals: int
    search_rollouts: int
    batch_size: int
    trials: int
    full_eval_every: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def plan_budget(rollout_budget: int, n_val: int, batch_size: int, num_full_evals: int,
                full_eval_every_k: int | None = None) -> BudgetPlan:
    """At most half the budget for full evaluations, the rest for minibatch trials.

    When half the budget cannot pay for one evaluation on every validation seed, the
    full evaluation uses the first `rollout_budget // 2` of them (recorded as val_n).
    """
    if rollout_budget < 1:
        raise ValueError("rollout budget must be at least 1")
    val_n = min(n_val, rollout_budget // 2)
    full_evals = min(num_full_evals, max(1, (rollout_budget // 2) // val_n)) if val_n else 0
    search = rollout_budget - full_evals * val_n
    trials = math.ceil(search / batch_size) if search else 0
    # With two or more full evaluations the first is the original instruction's; the
    # others are spread over the trials (the last one after the final trial).
    candidate_evals = full_evals - 1 if full_evals >= 2 else full_evals
    every = full_eval_every_k or max(1, math.ceil(trials / max(candidate_evals, 1)))
    return BudgetPlan(rollout_budget, val_n, full_evals, search, batch_size, trials, every)


# --- candidates ------------------------------------------------------------------------------


@dataclass
class Candidate:
    cid: str
    instruction: str
    pattern: PromptPattern
    source: str  # baseline | proposal
    parent: str | None = None  # the candidate whose instruction the proposer rewrote
    round: int = 0  # the proposal round that wrote it
    # Train seeds whose examples its proposal (or an ancestor's) was shown: its minibatches
    # avoid them, so its minibatch score is out-of-sample.
    seen: frozenset[int] = frozenset()
    trials: int = 0
    minibatch_rollouts: int = 0
    minibatch_reward: float = 0.0
    full_score: float | None = None

    @property
    def minibatch_mean(self) -> float | None:
        return self.minibatch_reward / self.minibatch_rollouts if self.minibatch_rollouts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate_id": self.cid,
            "source": self.source,
            "parent": self.parent,
            "round": self.round,
            "instruction": self.instruction,
            "trials": self.trials,
            "minibatch_rollouts": self.minibatch_rollouts,
            "minibatch_score": self.minibatch_mean,
            "full_score": self.full_score,
        }


def leader(candidates: Sequence[Candidate], *, exclude_full: bool) -> Candidate | None:
    """Best pooled minibatch score (ties: more evidence, then the earlier candidate)."""
    pool = [c for c in candidates if c.minibatch_rollouts and not
            (exclude_full and c.full_score is not None)]
    if not pool:
        return None
    return max(pool, key=lambda c: (c.minibatch_mean or 0.0, c.minibatch_rollouts,
                                    -candidates.index(c)))


def best_candidate(candidates: Sequence[Candidate]) -> Candidate:
    full = [c for c in candidates if c.full_score is not None]
    if full:
        return max(full, key=lambda c: (c.full_score or 0.0, c.source == "baseline",
                                        c.minibatch_mean or 0.0, -candidates.index(c)))
    return leader(candidates, exclude_full=False) or candidates[0]


# --- job-local accounting ----------------------------------------------------------------------


@dataclass
class Accounting:
    rollouts: int = 0
    rollouts_failed: int = 0
    consecutive_failures: int = 0
    proposal_calls: int = 0
    proposal_errors: int = 0
    policy_calls: int = 0
    policy_errors: int = 0
    first_error: str | None = None
    trajectory: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lm_calls(self) -> int:
        return self.proposal_calls + self.policy_calls

    def on_policy_call(self, _cid: str, ok: bool) -> None:
        if ok:
            self.policy_calls += 1
        else:
            self.policy_errors += 1

    def note(self, outcome: RolloutOutcome) -> None:
        self.rollouts += 1
        if outcome.ok:
            self.consecutive_failures = 0
        else:
            self.rollouts_failed += 1
            self.consecutive_failures += 1
            self.first_error = self.first_error or outcome.error


# --- the loop ----------------------------------------------------------------------------------


@dataclass
class JobContext:
    """What a job needs from the backend around it."""

    store: JobStore
    interceptor: Interceptor
    backend_url: str  # how the task app reaches this backend (the interceptor)
    env_api_key: str | None
    upstream_url: str  # the policy LM (OpenAI-compatible, ends in /v1)
    proposer_url: str
    upstream_api_key: str | None


def proposer_complete(client: ChatClient, url: str, api_key: str | None, model: str,
                      max_tokens: int, acct: Accounting) -> Callable[..., Any]:
    async def complete(messages: list[dict[str, str]], temperature: float) -> str:
        try:
            response = await client.chat(url, api_key, {
                "model": model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens,
            })
        except LMCallError:
            acct.proposal_errors += 1
            raise
        acct.proposal_calls += 1
        content = ((response.get("choices") or [{}])[0].get("message") or {}).get("content")
        if not isinstance(content, str):
            raise ValueError("the meta model's reply has no text content")
        return content

    return complete


def round_sizes(total: int, rounds: int) -> list[int]:
    """`total` proposals over `rounds` rounds, earlier rounds first (no empty round)."""
    rounds = max(1, min(rounds, total)) if total else 1
    sizes = [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]
    return [n for n in sizes if n]


async def fetch_grounding(cfg: MiproJobConfig, app: TaskAppClient) -> list[LabelledExample]:
    split = cfg.env_config.get("split") if isinstance(cfg.env_config.get("split"), str) else None
    return await app.examples(cfg.bootstrap_seeds[:MAX_GROUNDING_EXAMPLES], split)


async def propose_candidates(cfg: MiproJobConfig, ctx: JobContext, job: Job, acct: Accounting,
                             rng: random.Random, grounding: list[LabelledExample], *,
                             parent: Candidate, existing: list[Candidate], count: int,
                             round_no: int) -> list[Candidate]:
    """`count` new candidates written from `parent`'s instruction (one proposal round)."""
    ctx.store.emit(job, "proposal.started", f"round {round_no}: proposing {count} instructions",
                   {"round": round_no, "num_candidates": count, "parent": parent.cid,
                    "grounding_examples": len(grounding)})
    errors: list[str] = []
    async with ChatClient(timeout_s=cfg.rollout_timeout_s, retry=PROPOSER_RETRY) as client:
        complete = proposer_complete(client, ctx.proposer_url, ctx.upstream_api_key,
                                     cfg.proposer.model, cfg.proposer.max_tokens, acct)
        proposals = await propose(
            complete,
            instruction=parent.instruction,
            pool=grounding,
            settings=ProposerSettings(
                num_candidates=count,
                examples_per_proposal=cfg.proposer.examples_per_proposal,
                temperature=cfg.proposer.temperature,
            ),
            rng=rng,
            tip_offset=len(existing),
            exclude=[c.instruction for c in existing],
            on_error=lambda i, exc: errors.append(f"proposal {i}: {exc}"),
        )
    if not proposals and errors:
        raise JobFailed(f"the meta model failed all {count} proposals ({errors[0]})")
    base = cfg.initial_prompt
    start = len(existing)
    new = [Candidate(f"c{start + i}", p.instruction, base.with_instruction(p.instruction),
                     "proposal", parent=parent.cid, round=round_no, seen=p.seeds | parent.seen)
           for i, p in enumerate(proposals)]
    ctx.store.emit(job, "proposal.completed", f"round {round_no}: {len(new)} instructions", {
        "round": round_no, "parent": parent.cid,
        "candidates": [{"candidate_id": c.cid, "instruction": c.instruction} for c in new],
        "errors": errors, "lm_calls": acct.lm_calls,
    })
    return new


async def build_candidates(cfg: MiproJobConfig, ctx: JobContext, job: Job, app: TaskAppClient,
                           acct: Accounting, rng: random.Random) -> list[Candidate]:
    """c0 = the original instruction, then one round of proposals written from it."""
    base = cfg.initial_prompt
    candidates = [Candidate("c0", base.instruction, base, "baseline")]
    if cfg.num_candidates == 0:
        return candidates
    grounding = await fetch_grounding(cfg, app)
    return candidates + await propose_candidates(
        cfg, ctx, job, acct, rng, grounding, parent=candidates[0], existing=candidates,
        count=cfg.num_candidates, round_no=0)


class TPESearch:
    """Optuna TPE over a candidate list that can grow between proposal rounds.

    A categorical parameter cannot change its choices inside one study, so a new
    round starts a new study that first replays every finished trial (same
    candidates, same scores) and then enqueues each new candidate once.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.history: list[tuple[str, float]] = []
        self.study: Any = None
        self.dist: Any = None
        self._studies = 0

    def reset(self, cids: list[str], *, enqueue: Sequence[str] = ()) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dist = optuna.distributions.CategoricalDistribution(list(cids))
        self.study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.seed + 1000 * self._studies))
        self._studies += 1
        for cid, value in self.history:
            self.study.add_trial(optuna.trial.create_trial(
                params={"candidate": cid}, distributions={"candidate": self.dist}, value=value))
        for cid in enqueue:
            self.study.enqueue_trial({"candidate": cid})

    def ask(self) -> tuple[Any, str]:
        trial = self.study.ask({"candidate": self.dist})
        return trial, str(trial.params["candidate"])

    def tell(self, trial: Any, cid: str, value: float) -> None:
        self.study.tell(trial, value)
        self.history.append((cid, value))


class _Cursor:
    """A cycling walk over seeded permutations of a fixed seed pool."""

    def __init__(self, pool: list[int], rng: random.Random) -> None:
        self.pool, self.rng = pool, rng
        self.order: list[int] = []
        self.pos = 0

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = list(self.pool)
                self.rng.shuffle(self.order)
                self.pos = 0
            chunk = self.order[self.pos : self.pos + n - len(out)]
            self.pos += len(chunk)
            out.extend(chunk)
        return out


class OfflineRun:
    """One offline job, start to finish (run() never raises for a job-level failure)."""

    def __init__(self, job: Job, cfg: MiproJobConfig, ctx: JobContext) -> None:
        self.job = job
        self.cfg = cfg
        self.ctx = ctx
        self.acct = Accounting()
        self.rng = random.Random(cfg.seed)
        self.plan = plan_budget(cfg.rollout_budget, len(cfg.val_seeds), cfg.batch_size,
                                cfg.num_full_evals, cfg.full_eval_every_k)
        self.route: InterceptRoute | None = None
        self._cursors: dict[str, _Cursor] = {}
        self.started = time.perf_counter()

    # -- pieces --

    def _next_seeds(self, cand: Candidate, n: int) -> list[int]:
        """The next n seeds of `cand`'s own seeded permutation of the pool, cycling.

        The pool leaves out the seeds its proposal was shown (out-of-sample minibatches);
        if that leaves nothing (a tiny train split), the whole pool is used.
        """
        cursor = self._cursors.get(cand.cid)
        if cursor is None:
            allowed = [s for s in self.cfg.train_seeds if s not in cand.seen]
            cursor = self._cursors[cand.cid] = _Cursor(
                allowed or list(self.cfg.train_seeds), random.Random(f"{self.cfg.seed}:{cand.cid}"))
        return cursor.take(n)

    async def _rollouts(self, app: TaskAppClient, cand: Candidate, seeds: Sequence[int],
                        tag: str) -> list[RolloutOutcome]:
        assert self.route is not None
        remaining = self.cfg.rollout_budget - self.acct.rollouts
        if len(seeds) > remaining:  # the plan makes this impossible; the guard makes it certain
            raise AssertionError(f"rollout budget would be exceeded ({len(seeds)} > {remaining})")
        url = self.route.inference_url(self.ctx.backend_url, cand.cid)
        outcomes = await asyncio.gather(*(
            app.rollout(seed=s, env_config=self.cfg.env_config, inference_url=url,
                        model=self.cfg.policy_model,
                        correlation_id=f"{self.job.id}-{tag}-{cand.cid}-{s}",
                        temperature=self.cfg.temperature,
                        max_tokens=self.cfg.max_completion_tokens)
            for s in seeds))
        for outcome in outcomes:
            self.acct.note(outcome)
        self._check_outage(len(seeds))
        return outcomes

    def _check_outage(self, batch: int) -> None:
        limit = max(2 * self.cfg.batch_size, 10)
        everything_failed = self.acct.rollouts == self.acct.rollouts_failed
        if (everything_failed and self.acct.rollouts >= min(batch, limit)) or \
                self.acct.consecutive_failures >= limit:
            raise JobFailed(
                f"{self.acct.consecutive_failures} rollouts in a row failed "
                f"(task app or LM down?): {self.acct.first_error}")

    def _point(self, cands: Sequence[Candidate], label: str) -> None:
        best = best_candidate(cands)
        score = best.full_score if best.full_score is not None else best.minibatch_mean
        kind = "val" if best.full_score is not None else "minibatch"
        point = {"rollouts": self.acct.rollouts, "lm_calls": self.acct.lm_calls,
                 "score": score, "kind": kind, "candidate_id": best.cid, "label": label}
        self.acct.trajectory.append(point)

    async def _full_eval(self, app: TaskAppClient, cand: Candidate, cands: list[Candidate],
                         index: int) -> None:
        seeds = list(self.cfg.val_seeds[: self.plan.val_n])
        outcomes = await self._rollouts(app, cand, seeds, f"full{index}")
        before = best_candidate(cands)
        cand.full_score = sum(o.reward for o in outcomes) / len(outcomes)
        self.ctx.store.emit(self.job, "candidate.evaluated",
                            f"{cand.cid} full score {cand.full_score:.3f}", {
                                "candidate_id": cand.cid, "kind": "full",
                                "score": cand.full_score, "num_seeds": len(seeds),
                                "rollouts_used": self.acct.rollouts})
        after = best_candidate(cands)
        if after is cand and (before is not cand or before.full_score is None):
            self.ctx.store.emit(self.job, "candidate.new_best", f"new best {cand.cid}", {
                "candidate_id": cand.cid, "best_score": cand.full_score,
                "instruction": cand.instruction})
        self._point(cands, f"full eval {cand.cid}")

    async def _propose_round(self, grounding: list[LabelledExample], cands: list[Candidate],
                             count: int, round_no: int) -> list[Candidate]:
        """A proposal round from the incumbent; its candidates join the route at once."""
        new = await propose_candidates(
            self.cfg, self.ctx, self.job, self.acct, self.rng, grounding,
            parent=best_candidate(cands), existing=cands, count=count, round_no=round_no)
        if self.route is not None:
            for c in new:
                self.ctx.interceptor.add_candidate(self.route.route_id, c.cid, c.pattern)
        return new

    async def _trial(self, app: TaskAppClient, search: TPESearch, t: int, size: int,
                     cands: list[Candidate]) -> None:
        """One TPE trial: a candidate scored on a minibatch of its out-of-sample pool."""
        store, job = self.ctx.store, self.job
        trial, cid = search.ask()
        cand = next(c for c in cands if c.cid == cid)
        store.emit(job, "trial.started", f"trial {t} on {cand.cid}",
                   {"trial": t, "candidate_id": cand.cid, "minibatch_size": size})
        outcomes = await self._rollouts(app, cand, self._next_seeds(cand, size), f"t{t}")
        score = sum(o.reward for o in outcomes) / len(outcomes)
        search.tell(trial, cid, score)
        cand.trials += 1
        cand.minibatch_rollouts += len(outcomes)
        cand.minibatch_reward += sum(o.reward for o in outcomes)
        store.emit(job, "trial.completed", f"trial {t}: {cand.cid} {score:.3f}", {
            "trial": t, "candidate_id": cand.cid, "minibatch_score": score,
            "minibatch_size": size, "rollouts_used": self.acct.rollouts,
            "lm_calls": self.acct.lm_calls})
        store.emit(job, "candidate.evaluated", f"{cand.cid} minibatch {score:.3f}", {
            "candidate_id": cand.cid, "kind": "minibatch", "score": score,
            "pooled_score": cand.minibatch_mean, "num_seeds": size})
        self._point(cands, f"trial {t}")

    # -- the whole job --

    async def execute(self) -> dict[str, Any]:
        cfg, job, plan = self.cfg, self.job, self.plan
        app = TaskAppClient(cfg.task_app_url, self.ctx.env_api_key,
                            timeout_s=cfg.rollout_timeout_s, max_concurrent=cfg.max_concurrent)
        try:
            await app.check_health()
            self.ctx.store.emit(job, "budget.planned", "rollout budget planned", plan.to_dict())
            base = cfg.initial_prompt
            cands = [Candidate("c0", base.instruction, base, "baseline")]
            # Later rounds need trials left to try what they propose: a search shorter than
            # twice the rounds proposes everything up front.
            rounds = round_sizes(cfg.num_candidates, cfg.proposal_rounds
                                 if plan.trials >= 2 * cfg.proposal_rounds else 1)
            grounding = await fetch_grounding(cfg, app) if cfg.num_candidates else []
            if cfg.num_candidates:
                cands += await self._propose_round(grounding, cands, rounds[0], 0)
            self.route = self.ctx.interceptor.register(
                base, {c.cid: c.pattern for c in cands}, upstream_url=self.ctx.upstream_url,
                upstream_api_key=self.ctx.upstream_api_key, on_call=self.acct.on_policy_call,
                route_id=job.id)
            search = TPESearch(cfg.seed)
            search.reset([c.cid for c in cands], enqueue=["c0"])
            # Later proposal rounds start at evenly spaced trials, each written from the
            # incumbent (the best candidate so far), as MIPRO regenerates instructions.
            round_at = {math.floor(r * plan.trials / len(rounds)): r
                        for r in range(1, len(rounds)) if cfg.num_candidates}
            search_left, full_done = plan.search_rollouts, 0
            if plan.full_evals >= 2:
                # MIPROv2 scores the default program on the full valset first: the original
                # instruction's validation score is the bar every proposal has to clear.
                await self._full_eval(app, cands[0], cands, full_done)
                full_done += 1
            for t in range(plan.trials):
                if job.terminal:  # cancelled
                    return {}
                if t in round_at:
                    cands += await self._propose_round(grounding, cands, rounds[round_at[t]],
                                                       round_at[t])
                    untried = [c.cid for c in cands if c.trials == 0]  # c0 first, then new
                    search.reset([c.cid for c in cands], enqueue=untried)
                size = min(plan.batch_size, search_left)
                await self._trial(app, search, t, size, cands)
                search_left -= size
                # Intermediate full evaluations keep the last one for after the final trial.
                if (t + 1) % plan.full_eval_every == 0 and full_done < plan.full_evals - 1:
                    top = leader(cands, exclude_full=True)
                    if top is not None:
                        await self._full_eval(app, top, cands, full_done)
                        full_done += 1
            while full_done < plan.full_evals and not job.terminal:
                top = leader(cands, exclude_full=True)
                if top is None:
                    break
                await self._full_eval(app, top, cands, full_done)
                full_done += 1
            if job.terminal:
                return {}
            if self.acct.rollouts and self.acct.rollouts == self.acct.rollouts_failed:
                raise JobFailed(f"no rollout succeeded: {self.acct.first_error}")
            return self._result(cands)
        finally:
            if self.route is not None:
                self.ctx.interceptor.unregister(self.route.route_id)
            await app.aclose()

    def _result(self, cands: list[Candidate]) -> dict[str, Any]:
        best = best_candidate(cands)
        mb = [c.minibatch_mean for c in cands if c.minibatch_mean is not None]
        best_minibatch = max(mb) if mb else None
        best_score = best.full_score if best.full_score is not None else best.minibatch_mean
        return {
            "best_score": best_score,
            "best_full_score": best.full_score,
            "best_minibatch_score": best_minibatch,
            "best_candidate_id": best.cid,
            "best_instruction": best.instruction,
            "best_prompt": best.pattern.to_dict(),
            "baseline_full_score": cands[0].full_score,
            "candidates": [c.to_dict() for c in cands],
            "trajectory": list(self.acct.trajectory),
            "rollouts_used": self.acct.rollouts,
            "rollout_budget": self.cfg.rollout_budget,
            "rollouts_failed": self.acct.rollouts_failed,
            "lm_calls": {"proposer": self.acct.proposal_calls,
                         "policy": self.acct.policy_calls,
                         "proposer_errors": self.acct.proposal_errors,
                         "policy_errors": self.acct.policy_errors},
            "budget_plan": self.plan.to_dict(),
            "seconds": round(time.perf_counter() - self.started, 3),
        }


async def run_offline_job(job: Job, cfg: MiproJobConfig, ctx: JobContext) -> None:
    """Drive `job` to a terminal state; every failure becomes `failed` with one clear line."""
    store = ctx.store
    store.transition(job, "running")
    run = OfflineRun(job, cfg, ctx)
    try:
        result = await run.execute()
    except asyncio.CancelledError:
        store.fail(job, "cancelled while running")
        raise
    except JobFailed as exc:
        store.update_result(job, rollouts_used=run.acct.rollouts,
                            trajectory=list(run.acct.trajectory))
        store.fail(job, str(exc))
        return
    except Exception as exc:  # a bug or an unexpected answer: still a failed job, not a hang
        store.fail(job, f"local backend error: {type(exc).__name__}: {exc}")
        return
    if job.terminal:  # cancelled meanwhile
        return
    store.finish(job, result, {
        "best_score": result["best_score"],
        "best_full_score": result["best_full_score"],
        "best_minibatch_score": result["best_minibatch_score"],
        "best_candidate_id": result["best_candidate_id"],
        "best_prompt": result["best_prompt"],
        "rollouts_used": result["rollouts_used"],
        "total_rollouts": result["rollouts_used"],
        "lm_calls": result["lm_calls"],
    })
