"""An offline job, run by Synth's published MIPROv2 (`synth-optimizers`).

The algorithm is the package's: its seeded discrete TPE
(`core.DiscreteMiproOptimizer`), its phase-3 loop (`core.run_phase3_loop`:
proposer rounds, train waves, held-out scoring of the baseline and of its best
train candidate), its ReAct instruction proposer with its own tools and
prompts, and its choice of the best candidate (the best train score). This
module is only the plumbing a job needs around it:
- the search space: one module, `system_prompt`, whose first instruction is
  the task app's baseline system message;
- `evaluate_train` / `evaluate_heldout`: task-app rollouts through the
  interceptor, on seeded minibatches of the train pool (the package draws none)
  and on the val seeds, within the planned rollout budget (budget.py);
- the grounding rows the proposer reads (labelled train examples from the task
  app's /task_info, a seeded sample per round);
- the agent that sends proposer turns through the LM gateway (proposer_agent.py);
- the run ledger and proposer traces, written under the case's working
  directory (`mipro.workdir`), never into the user's home or the repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from synth_optimizers.miprov2 import core as synth

from mipro_bench.offline.synth_backend.accounting import Accounting, JobContext, JobFailed
from mipro_bench.offline.synth_backend.budget import SynthPlan, plan_synth_budget
from mipro_bench.offline.synth_backend.config import MiproJobConfig
from mipro_bench.offline.synth_backend.jobs import Job
from mipro_bench.offline.synth_backend.proposer_agent import GatewayProposerAgent
from mipro_bench.task_client.interceptor import InterceptRoute
from mipro_bench.task_client.rollouts import LabelledExample, RolloutOutcome, TaskAppClient

# What the package's loop calls to score a candidate: (score, details).
Evaluate = Callable[[synth.MiproProgramCandidate], Awaitable[tuple[float, dict[str, Any]]]]
MODULE_ID = "system_prompt"
RUN_ID = "mipro-bench"  # fixed: the loop shows it to the proposer, so it must not vary
MAX_GROUNDING_EXAMPLES = 1000
# Turns a proposer session may waste (errors, no tool call) before it stops: the package's
# default of 12 would spend 12 large requests per round on a model that cannot call tools.
MAX_NOOP_TURNS = 4
MAX_TURNS = 16


def optimizer_package() -> dict[str, str]:
    """What records name as the Synth code that ran (details.synth.optimizer_package)."""
    return {"name": "synth-optimizers", "version": version("synth-optimizers"),
            "module": "synth_optimizers.miprov2"}


async def grounding_rows(cfg: MiproJobConfig, app: TaskAppClient) -> list[dict[str, Any]]:
    """The labelled train rows Synth's proposer reads (from the task app's /task_info), in
    the shape its read tools show: row_id, seed, query, intent."""
    split = cfg.env_config.get("split")
    examples: list[LabelledExample] = await app.examples(
        cfg.bootstrap_seeds[:MAX_GROUNDING_EXAMPLES], split if isinstance(split, str) else None)
    return [{"row_id": f"train-{e.seed}", "seed": e.seed, "query": e.query, "intent": e.intent}
            for e in examples]


def _instruction(candidate: synth.MiproProgramCandidate) -> str:
    return candidate.selected_instructions[MODULE_ID]


class SynthOfflineRun:
    """One offline job, start to finish (run() never raises for a job-level failure)."""

    def __init__(self, job: Job, cfg: MiproJobConfig, ctx: JobContext) -> None:
        self.job, self.cfg, self.ctx = job, cfg, ctx
        self.acct = Accounting()
        self.plan: SynthPlan = plan_synth_budget(
            cfg.rollout_budget, n_train=len(cfg.train_seeds), n_val=len(cfg.val_seeds),
            num_candidates=cfg.num_candidates, proposal_rounds=cfg.proposal_rounds)
        self.route: InterceptRoute | None = None
        self.cids: dict[str, str] = {}  # instruction -> c0, c1, ... (order of first score)
        self.instructions: dict[str, str] = {}
        self.train_scores: dict[str, float] = {}
        self.heldout_scores: dict[str, float] = {}
        self.started = time.perf_counter()

    # -- candidates and rollouts --

    def _cid(self, instruction: str) -> str:
        """The candidate's id, registered with the interceptor the first time it is scored."""
        cid = self.cids.get(instruction)
        if cid is None:
            cid = self.cids[instruction] = f"c{len(self.cids)}"
            self.instructions[cid] = instruction
            assert self.route is not None
            self.ctx.interceptor.add_candidate(self.route.route_id, cid,
                                               self.cfg.initial_prompt.with_instruction(instruction))
        return cid

    def _minibatch(self, cid: str, instruction: str) -> list[int]:
        """A seeded draw from the train pool, the same for the same candidate text."""
        digest = hashlib.sha256(instruction.encode()).hexdigest()[:16]
        rng = random.Random(f"{self.cfg.seed}:{digest}")
        return rng.sample(list(self.cfg.train_seeds), self.plan.minibatch)

    async def _rollouts(self, app: TaskAppClient, cid: str, seeds: list[int],
                        tag: str) -> list[RolloutOutcome]:
        assert self.route is not None
        remaining = self.cfg.rollout_budget - self.acct.rollouts
        if len(seeds) > remaining:  # the plan makes this impossible; the guard makes it certain
            raise JobFailed(f"rollout budget would be exceeded ({len(seeds)} > {remaining})")
        url = self.route.inference_url(self.ctx.backend_url, cid)
        outcomes = await asyncio.gather(*(
            app.rollout(seed=s, env_config=self.cfg.env_config, inference_url=url,
                        model=self.cfg.policy_model,
                        correlation_id=f"{self.job.id}-{tag}-{cid}-{s}",
                        temperature=self.cfg.temperature,
                        max_tokens=self.cfg.max_completion_tokens)
            for s in seeds))
        for outcome in outcomes:
            self.acct.note(outcome)
        if self.acct.rollouts and self.acct.rollouts == self.acct.rollouts_failed and \
                self.acct.rollouts >= min(len(seeds), 10):
            raise JobFailed(f"{self.acct.rollouts} rollouts in a row failed "
                            f"(task app or LM down?): {self.acct.first_error}")
        return outcomes

    def _point(self, label: str) -> None:
        if self.heldout_scores:
            cid, score, kind = *max(self.heldout_scores.items(), key=lambda kv: kv[1]), "val"
        else:
            cid, score, kind = *max(self.train_scores.items(), key=lambda kv: kv[1]), "minibatch"
        self.acct.trajectory.append({"rollouts": self.acct.rollouts,
                                     "lm_calls": self.acct.lm_calls, "score": score,
                                     "kind": kind, "candidate_id": cid, "label": label})

    def evaluator(self, app: TaskAppClient, split: str) -> Evaluate:
        """Synth's `evaluate_train` / `evaluate_heldout`: a candidate scored by task-app
        rollouts on a seeded train minibatch, or on the val seeds."""

        async def evaluate(candidate: synth.MiproProgramCandidate) -> tuple[float, dict[str, Any]]:
            instruction = _instruction(candidate)
            cid = self._cid(instruction)
            if split == "train":
                seeds = self._minibatch(cid, instruction)
            else:
                seeds = list(self.cfg.val_seeds[: self.plan.val_n])
            outcomes = await self._rollouts(app, cid, seeds, split)
            score = sum(o.reward for o in outcomes) / len(outcomes)
            (self.train_scores if split == "train" else self.heldout_scores)[cid] = score
            kind = "minibatch" if split == "train" else "full"
            self.ctx.store.emit(self.job, "candidate.evaluated", f"{cid} {split} {score:.3f}", {
                "candidate_id": cid, "kind": kind, "score": score, "num_seeds": len(seeds),
                "rollouts_used": self.acct.rollouts, "lm_calls": self.acct.lm_calls})
            self._point(f"{split} {cid}")
            return score, {"seeds": seeds, "rollouts": len(outcomes),
                           "failed": sum(1 for o in outcomes if not o.ok)}
        return evaluate

    # -- the whole job --

    def _workdir(self) -> Path:
        root = Path(self.cfg.workdir) if self.cfg.workdir else Path(
            tempfile.mkdtemp(prefix="mipro-bench-synth-"))
        path = root / "synth-optimizers" / self.job.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def execute(self) -> dict[str, Any]:
        cfg, plan = self.cfg, self.plan
        app = TaskAppClient(cfg.task_app_url, self.ctx.env_api_key,
                            timeout_s=cfg.rollout_timeout_s, max_concurrent=cfg.max_concurrent)
        try:
            await app.check_health()
            self.ctx.store.emit(self.job, "budget.planned", "rollout budget planned",
                                plan.to_dict())
            rows = await grounding_rows(cfg, app) if plan.proposer_rounds else []
            self.route = self.ctx.interceptor.register(
                cfg.initial_prompt, {}, upstream_url=self.ctx.upstream_url,
                upstream_api_key=self.ctx.upstream_api_key, on_call=self.acct.on_policy_call,
                route_id=self.job.id)
            workdir = self._workdir()
            outcome = await self._run_loop(app, rows, workdir)
            if self.acct.rollouts and self.acct.rollouts == self.acct.rollouts_failed:
                raise JobFailed(f"no rollout succeeded: {self.acct.first_error}")
            return self._result(outcome, workdir)
        finally:
            if self.route is not None:
                self.ctx.interceptor.unregister(self.route.route_id)
            await app.aclose()

    async def _run_loop(self, app: TaskAppClient, rows: list[dict[str, Any]],
                        workdir: Path) -> synth.MiproPhase3Outcome:
        cfg, plan = self.cfg, self.plan
        template = synth.MiproProgramTemplate(program_id="mipro-bench", modules=(
            synth.MiproModuleTemplate(module_id=MODULE_ID,
                                      instruction_candidates=(cfg.initial_prompt.instruction,)),))
        space = synth.compile_search_space(template)
        optimizer = await synth.DiscreteMiproOptimizer.from_search_space(
            search_space=space.search_space, rng_seed=cfg.seed)
        agent = GatewayProposerAgent(
            chat_url=f"{self.ctx.proposer_url.rstrip('/')}/chat/completions",
            api_key=self.ctx.upstream_api_key, model=cfg.proposer.model,
            workdir=str(workdir), temperature=cfg.proposer.temperature,
            max_tokens=cfg.proposer.max_tokens, timeout_s=cfg.rollout_timeout_s,
            on_turn=self.acct.on_proposer_turn)
        per_round = cfg.proposer.examples_per_proposal

        def sample_rows(round_idx: int, _limit: int) -> list[dict[str, Any]]:
            if len(rows) <= per_round:
                return list(rows)
            return random.Random(f"{cfg.seed}:rows:{round_idx}").sample(rows, per_round)

        config = synth.MiproPhase3Config(
            proposer_rounds=plan.proposer_rounds,
            train_rounds_per_proposer_round=1,
            top_k=plan.top_k,
            # One candidate at a time (its minibatch's rollouts still run max_concurrent at
            # once): the trajectory's points then come in one order with the same counts on
            # every run, so records replay and resume exactly.
            max_concurrency=1,
            proposer_trace_dir=str(workdir / "proposer_traces"),
            proposer_config=synth.MiproOpenEnvProposerConfig(
                max_turns=MAX_TURNS, max_noop_turns=MAX_NOOP_TURNS,
                max_instruction_patches=plan.proposals_per_round,
                max_patch_actions_per_session=plan.proposals_per_round + 2,
                chat_retry_attempts=1,  # the gateway retries the upstream itself
                archive_root=str(workdir / "archive")),
        )
        return await synth.run_phase3_loop(
            compiled_space=space, optimizer=optimizer, agent=agent,
            evaluate_train=self.evaluator(app, "train"),
            evaluate_heldout=self.evaluator(app, "heldout") if plan.val_n else None,
            grounding_hooks=synth.MiproGroundingHooks(sample_train_rows=sample_rows),
            config=config, run_id=RUN_ID, ledger_path=str(workdir / "ledger.sqlite"))

    def _result(self, out: synth.MiproPhase3Outcome, workdir: Path) -> dict[str, Any]:
        best = out.best_train_candidate
        best_cid = self.cids.get(_instruction(best), "c0") if best is not None else "c0"
        best_instruction = self.instructions.get(best_cid, self.cfg.initial_prompt.instruction)
        best_full = self.heldout_scores.get(best_cid)
        best_minibatch = max(self.train_scores.values()) if self.train_scores else None
        diagnostics = dict(out.proposer_diagnostics_aggregate)
        return {
            "best_score": best_full if best_full is not None else out.best_train_score,
            "best_full_score": best_full,
            "best_minibatch_score": best_minibatch,
            "score_kind": "val" if best_full is not None else "minibatch",
            "best_candidate_id": best_cid,
            "best_instruction": best_instruction,
            "best_prompt": self.cfg.initial_prompt.with_instruction(best_instruction).to_dict(),
            "baseline_full_score": self.heldout_scores.get("c0"),
            "candidates": [
                {"candidate_id": cid, "instruction": text,
                 "source": "baseline" if cid == "c0" else "proposal",
                 "trials": int(cid in self.train_scores),
                 "minibatch_rollouts": self.plan.minibatch if cid in self.train_scores else 0,
                 "minibatch_score": self.train_scores.get(cid),
                 "full_score": self.heldout_scores.get(cid)}
                for cid, text in self.instructions.items()],
            "trajectory": list(self.acct.trajectory),
            "rollouts_used": self.acct.rollouts,
            "rollout_budget": self.cfg.rollout_budget,
            "rollouts_failed": self.acct.rollouts_failed,
            "lm_calls": self.acct.lm_calls_dict(),
            "budget_plan": self.plan.to_dict(),
            "budget_spent": {
                "train_trials": len(self.train_scores),
                "minibatch": self.plan.minibatch,
                "train_rollouts": len(self.train_scores) * self.plan.minibatch,
                "heldout_evaluations": len(self.heldout_scores),
                "heldout_rollouts": len(self.heldout_scores) * self.plan.val_n,
                "proposer_turns": self.acct.proposal_calls + self.acct.proposal_errors,
                "proposer_rounds": len(out.proposer_sessions),
            },
            "synth_optimizer": {
                **optimizer_package(),
                "algorithm": "run_phase3_loop + DiscreteMiproOptimizer (TPE)",
                "run_status": out.run_status,
                "stop_reasons": dict(out.stop_reason_frequency),
                "proposer": {k: diagnostics.get(k) for k in (
                    "model_turn_count_total", "tool_call_count_total",
                    "patches_added_total", "policy_violation_count_total")},
                "first_proposer_error": self.acct.first_proposer_error,
                "heldout_lift": out.heldout_lift,
                "ledger": str(Path("synth-optimizers") / self.job.id / "ledger.sqlite"),
            },
            "seconds": round(time.perf_counter() - self.started, 3),
        }


async def run_offline_job(job: Job, cfg: MiproJobConfig, ctx: JobContext) -> None:
    """Drive `job` to a terminal state; every failure becomes `failed` with one clear line."""
    store = ctx.store
    store.transition(job, "running")
    run = SynthOfflineRun(job, cfg, ctx)
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

