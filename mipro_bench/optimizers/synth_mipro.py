"""Synth MIPRO (synth-ai 0.7.3) behind the `Optimizer` protocol, hosted or local.

The unmodified SDK drives the job: `PolicyOptimizationJob.from_dict(config,
backend_url=..., api_key=...)` -> `submit()` -> `poll_until_complete()`,
against Synth's hosted backend (SYNTH_API_KEY, the task app behind a
Cloudflare tunnel) or, offline, against the local Synth-compatible backend
(the `mipro_bench.synth_backends` entry point `local`, task app on localhost). The
backend URL is always
passed explicitly: the SDK reads SYNTH_BACKEND_URL only once, at import.

What the earlier script got wrong and this adapter pins down:
- the job's own best score is `best_val_score` (the validation score when the
  job ran full evaluations), never shown as test accuracy;
- the optimized instruction is scored by the suite on the test split through
  the same task app and interceptor path as the baseline, same LM, same parser;
- the SDK never writes into the real home directory: ENVIRONMENT_API_KEY is set
  (so it never mints and persists one) and SYNTH_LOCALAPI_AUTH_PERSIST=0
  around every SDK call.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

from mipro_bench.argtypes import non_negative_int, port_number, positive_int
from mipro_bench.data import Splits
from mipro_bench.event_loop import off_event_loop
from mipro_bench.optimizers.base import (
    NotSupported,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
)
from mipro_bench.optimizers.spec import CliShortcut, OptimizerSpec, SeedCase, SeedCli
from mipro_bench.optimizers.typed_config import BudgetBase, OptionsBase, check_at_least
from mipro_bench.option_decl import Opt
from mipro_bench.prompt import initial_prompt
from mipro_bench.results import OptimizedPrompt, TrajectoryPoint

HOSTED_BACKEND_URL = "https://api.usesynth.ai"
TASK_APP_ID = "banking77"
# One seed space for a job: train seeds 0..n-1, val seeds n..n+m-1 (the task app's
# `trainval` split), because a hosted job sends one env_config with every rollout.
JOB_SPLIT = "trainval"
DEFAULT_ROLLOUTS = 100  # the earlier script's --rollouts default
ONLINE_GROUNDING_FRACTION = 0.5
SDK_ENV = ("ENVIRONMENT_API_KEY", "DEV_ENVIRONMENT_API_KEY", "SYNTH_LOCALAPI_AUTH_PERSIST")
# What synth-ai 0.7.3's client-side check accepts for an openai policy model (text models;
# `sdk_accepts_model` asks the SDK itself). The hosted backend really runs that model; the
# local backend only ever sends the model to the suite's gateway, so there the SDK is told
# STAND_IN_MODEL while the real name travels in `mipro.policy_model` (a local-only field).
SDK_OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
                     "gpt-5", "gpt-5-mini", "gpt-5-nano")
STAND_IN_MODEL = "gpt-4.1-nano"

BackendKind = Literal["auto", "local", "hosted"]
MiproMode = Literal["offline", "online"]
T = TypeVar("T")


class SynthJobFailed(RuntimeError):
    """The Synth job ended failed or cancelled (or never ended): its one-line reason."""


# --- the job's config -------------------------------------------------------------------------


@dataclass(frozen=True)
class MiproKnobs:
    """The MIPRO search knobs a job config carries. The adapter's options declare them
    (`SynthOptions` extends this), and one job's settings carry them on (`JobSettings`),
    with the case's budget overriding batch size and candidate count."""

    batch_size: int = 10
    num_candidates: int = 6
    proposal_rounds: int = 2
    num_full_evals: int = 3
    max_concurrent: int = 8
    examples_per_proposal: int = 50
    grounding_fraction: float | None = None
    proposer_model: str | None = None

    def knobs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(MiproKnobs)}


@dataclass(frozen=True, kw_only=True)
class JobSettings(MiproKnobs):
    """The MIPRO knobs of one job (the adapter's options plus the case's budget)."""

    rollouts: int
    mode: MiproMode = "offline"
    proposer_temperature: float = 1.0
    seed: int = 0


def job_config(
    splits: Splits,
    *,
    task_app_url: str,
    model: str,
    job: JobSettings,
    policy_inference_url: str | None = None,
    proposer_inference_url: str | None = None,
    inference_api_key: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 256,
    proposer_max_tokens: int = 512,
    sdk_model: str | None = None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """The `prompt_learning` table the SDK validates and submits.

    `temperature`/`max_tokens` are the run's LM settings (the suite's evaluations use the
    same). The two inference URLs are the local backend's (where its proposer and
    interceptor send LM calls: this case's gateway scope, phase optimize), and
    `inference_api_key` the key those URLs want (the gateway's per-run token); all
    three are left out for the hosted backend, which runs its own inference.
    `sdk_model` is given for the local backend only: the name `policy.model` shows the SDK
    (`sdk_model_for`); the real model then also travels in `mipro.policy_model`, which only
    the local backend reads, and is what every LM call names. The local backend reads the
    proposer's model from `proposer.model`, so `meta_model` (which the SDK checks against
    its list) is only sent to the hosted backend. `workdir` (local backend only) is the
    case's working directory, where Synth's MIPROv2 keeps its run ledger and traces.
    """
    n_train, n_val = len(splits.train), len(splits.val)
    # Offline, proposals are grounded on the whole train split by default and each
    # candidate's minibatches skip the examples its proposal was shown (the backend does
    # that), with the final choice on the disjoint val split. Online there is no val
    # evaluation and the backend cannot steer the client's traffic, so the train split is
    # halved: the proposer sees the first part, the traffic comes from the rest (else a
    # proposal would be rewarded for naming the cues of the very queries it was shown).
    # `grounding_fraction` sets that split explicitly, in both modes.
    fraction = job.grounding_fraction
    if fraction is None and job.mode == "online":
        fraction = ONLINE_GROUNDING_FRACTION
    if fraction is None or n_train < 2:
        grounding = pool = list(range(n_train))
    else:
        n_ground = min(n_train - 1, max(1, round(n_train * fraction)))
        grounding, pool = list(range(n_ground)), list(range(n_ground, n_train))
    proposer: dict[str, Any] = {
        "mode": "instruction_only",
        "model": job.proposer_model or model,
        "provider": "openai",
        "temperature": job.proposer_temperature,
        "max_tokens": proposer_max_tokens,
        "examples_per_proposal": job.examples_per_proposal,
    }
    mipro: dict[str, Any] = {
        "mode": job.mode,
        "bootstrap_train_seeds": grounding,
        "online_pool": pool,
        "val_seeds": list(range(n_train, n_train + n_val)),
        "rollout_budget": job.rollouts,
        "batch_size": job.batch_size,
        "num_candidates": job.num_candidates,
        "max_instructions": max(1, job.num_candidates),
        "proposal_rounds": job.proposal_rounds,
        "num_full_evals": job.num_full_evals,
        "max_concurrent": job.max_concurrent,
        "seed": job.seed,
        # Synth's iteration knobs, for a hosted backend that budgets by them:
        "num_iterations": max(1, math.ceil(job.rollouts / job.batch_size)),
        "num_evaluations_per_iteration": 1,
        "proposer": proposer,
    }
    if job.proposer_model and sdk_model is None:  # hosted only, and only when chosen (the
        mipro["meta_model"] = job.proposer_model  # SDK refuses nano meta models)
        mipro["meta_model_provider"] = "openai"
    if sdk_model is not None:
        mipro["policy_model"] = model
    if proposer_inference_url:
        proposer["inference_url"] = proposer_inference_url
    if policy_inference_url:
        mipro["policy_inference_url"] = policy_inference_url
    if inference_api_key and (policy_inference_url or proposer_inference_url):
        mipro["inference_api_key"] = inference_api_key
    if workdir:
        mipro["workdir"] = workdir
    return {
        "prompt_learning": {
            "algorithm": "mipro",
            "task_app_url": task_app_url,
            "task_app_id": TASK_APP_ID,
            "initial_prompt": initial_prompt(splits.labels),
            "policy": {
                "model": sdk_model or model,
                "provider": "openai",
                "inference_mode": "synth_hosted",
                "temperature": temperature,
                "max_completion_tokens": max_tokens,
            },
            "env_config": {"split": JOB_SPLIT},
            "mipro": mipro,
        }
    }


# --- reading the job's result ---------------------------------------------------------------


def system_instruction(best_prompt: Any) -> str | None:
    """The system message of a Synth prompt: a string, a pattern (`messages` with `pattern` or
    `content`, or `sections`, or `text_replacements`), or a candidate naming its text
    (`instruction`, `instruction_text`, `prompt_text`, `text`, `system_prompt`), possibly
    nested under `prompt`/`pattern`/`object`/`candidate`."""
    if isinstance(best_prompt, str):
        return best_prompt if best_prompt.strip() else None
    if not isinstance(best_prompt, Mapping):
        return None
    for key, text_keys in (("messages", ("pattern", "content")),
                           ("sections", ("content", "pattern"))):
        for message in best_prompt.get(key) or ():
            if isinstance(message, Mapping) and message.get("role") == "system":
                for text_key in text_keys:
                    text = message.get(text_key)
                    if isinstance(text, str) and text.strip():
                        return text
    for replacement in best_prompt.get("text_replacements") or ():
        if isinstance(replacement, Mapping) and replacement.get("apply_to_role") == "system":
            text = replacement.get("new_text")
            if isinstance(text, str) and text.strip():
                return text
    for key in ("instruction", "instruction_text", "prompt_text", "text", "system_prompt"):
        text = best_prompt.get(key)
        if isinstance(text, str) and text.strip():
            return text
    for key in ("prompt", "pattern", "object", "candidate"):
        nested = best_prompt.get(key)
        if isinstance(nested, Mapping):
            text = system_instruction(nested)
            if text:
                return text
    return None


# Where a hosted job view may carry its result, in the order synth-ai's later SDK releases
# prefer them (their prompt-learning client merges top level, `metadata`, `job_metadata`):
# the prompt as `best_candidate` else `best_prompt`, the score as `best_reward` else
# `best_score`. `best_instruction` (the local backend's) is deliberately not among them.
PROMPT_KEYS = ("best_candidate", "best_prompt")
SCORE_KEYS = ("best_reward", "best_score")
CONTAINERS = ("", "metadata", "job_metadata")
PL = "/api/prompt-learning/online"


def _containers(payload: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name in CONTAINERS:
        part = payload if not name else payload.get(name)
        if isinstance(part, Mapping):
            yield name, part


def prompt_in(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(instruction, where) of the first hosted prompt field in a job view, e.g.
    ("...", "metadata.best_prompt")."""
    for name, part in _containers(payload):
        for key in PROMPT_KEYS:
            text = system_instruction(part.get(key))
            if text:
                return text, f"{name}.{key}" if name else key
    return None


def score_in(payload: Mapping[str, Any]) -> tuple[float, str] | None:
    for name, part in _containers(payload):
        for key in SCORE_KEYS:
            value = part.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                return float(value), f"{name}.{key}" if name else key
    return None


def system_id_in(payload: Mapping[str, Any]) -> str | None:
    for _name, part in _containers(payload):
        for key in ("mipro_system_id", "system_id"):
            value = part.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def state_prompt(state: Mapping[str, Any]) -> str | None:
    """The best candidate's instruction in a MIPRO system state
    (`best_candidate_id` + `candidates`, a map by id or a list with `candidate_id`)."""
    best = state.get("best_candidate_id")
    candidates = state.get("candidates")
    if not best or candidates is None:
        return None
    if isinstance(candidates, Mapping):
        chosen = candidates.get(best)
    else:
        chosen = next((c for c in candidates if isinstance(c, Mapping)
                       and (c.get("candidate_id") or c.get("id")) == best), None)
    return system_instruction(chosen)


Fetch = Callable[[str], "Mapping[str, Any] | None"]


@dataclass(frozen=True)
class HostedResult:
    """The result read from a job's payloads: the instruction, the score, and where each was
    found (`shape`: field path; `route`: which payload)."""

    instruction: str | None
    score: float | None
    shape: str | None
    score_field: str | None
    route: str | None


def read_hosted_result(job_id: str, polled: Mapping[str, Any], fetch: Fetch | None = None,
                       system_id: str | None = None) -> HostedResult:
    """Find the best prompt and score in every payload shape the hosted backend sends, in
    order: the SDK's poll (legacy route), the canonical `/api/jobs/{id}`, the legacy
    prompt-learning route with metadata, then the MIPRO system state."""
    payloads: list[tuple[str, Mapping[str, Any]]] = [("poll", polled)]
    routes = (("canonical", f"/api/jobs/{job_id}"),
              ("legacy", f"{PL}/jobs/{job_id}?include_metadata=true"))

    def first_prompt() -> tuple[tuple[str, str], str] | None:
        for route, payload in payloads:
            found = prompt_in(payload)
            if found:
                return found, route
        return None

    found = first_prompt()
    for route, path in routes:
        if found or fetch is None:
            break
        payload = fetch(path)
        if isinstance(payload, Mapping):
            payloads.append((route, payload))
            found = first_prompt()
    scored = next(((s, r) for r, p in payloads if (s := score_in(p))), None)
    score, score_field = (scored[0][0], scored[0][1]) if scored else (None, None)
    if found:
        (text, shape), route = found
        return HostedResult(text, score, shape, score_field, route)
    system_id = system_id or next((sid for _r, p in payloads if (sid := system_id_in(p))), None)
    if system_id and fetch is not None:
        state = fetch(f"{PL}/mipro/systems/{system_id}/state")
        if isinstance(state, Mapping):
            text = state_prompt(state)
            if text:
                return HostedResult(text, score, "system_state.candidates[best_candidate_id]",
                                    score_field, "system_state")
    return HostedResult(None, score, None, score_field, None)


def trajectory_from(raw: Mapping[str, Any]) -> tuple[TrajectoryPoint, ...]:
    points = []
    for p in raw.get("trajectory") or ():
        if not isinstance(p, Mapping) or p.get("score") is None:
            continue
        points.append(TrajectoryPoint(
            lm_calls=int(p.get("lm_calls") or 0),
            rollouts=None if p.get("rollouts") is None else int(p["rollouts"]),
            score=float(p["score"]),
            label=f"{p.get('label', '')} ({p.get('kind', '')})".strip(),
        ))
    return tuple(points)


def outcome_from(result: Any, *, backend: str, job_id: str, extra: dict[str, Any],
                 fetch: Fetch | None = None, system_id: str | None = None) -> OptimizeOutcome:
    """Map the SDK's PolicyOptimizationResult (and the job's other payloads, via `fetch`:
    path -> JSON) to an outcome. The instruction and score come only from hosted payload
    shapes (`read_hosted_result`); the local backend's own fields only enrich details."""
    raw: Mapping[str, Any] = dict(result.raw or {})
    if result.best_prompt is not None and "best_prompt" not in raw:
        raw = {**raw, "best_prompt": result.best_prompt}
    if result.best_score is not None and not any(k in raw for k in SCORE_KEYS):
        raw = {**raw, "best_score": result.best_score}
    found = read_hosted_result(job_id, raw, fetch, system_id)
    if not found.instruction:
        raise SynthJobFailed(f"Synth job {job_id} succeeded without a best prompt (looked in "
                             f"{', '.join(PROMPT_KEYS)} at the top level, metadata and "
                             "job_metadata, /api/jobs/{id}, and the MIPRO system state)")
    best_full = raw.get("best_full_score")
    score = found.score
    kind = raw.get("score_kind") or ("val" if best_full is not None else "minibatch")
    details = {
        "synth": {
            "job_id": job_id,
            "backend": backend,
            "status": result.status.value,
            "best_score": score,
            "payload_shape": found.shape,
            "payload_route": found.route,
            "score_field": found.score_field,
            "best_full_score": best_full,
            "best_minibatch_score": raw.get("best_minibatch_score"),
            "score_kind": kind,
            "best_candidate_id": raw.get("best_candidate_id"),
            "baseline_full_score": raw.get("baseline_full_score"),
            "candidates": raw.get("candidates", []),
            "rollouts_used": raw.get("rollouts_used"),
            "rollout_budget": raw.get("rollout_budget"),
            "rollouts_failed": raw.get("rollouts_failed"),
            "lm_calls": raw.get("lm_calls"),
            "budget_plan": raw.get("budget_plan"),
            "budget_spent": raw.get("budget_spent"),
            # The local backend names the Synth code that ran (synth-optimizers' MIPROv2).
            "optimizer_package": (raw.get("synth_optimizer") or {}).get("name") and {
                k: raw["synth_optimizer"][k] for k in ("name", "version", "module")},
            "synth_optimizer": raw.get("synth_optimizer"),
            "job_seconds": raw.get("seconds"),
            **extra,
        }
    }
    ran = raw.get("synth_optimizer")
    if isinstance(ran, Mapping) and ran.get("first_proposer_error") and not (
            (ran.get("proposer") or {}).get("patches_added_total")):
        # Synth's loop treats a failed proposer turn as a no-op and goes on with the baseline
        # alone; the record says so (the table's PROPOSER FAILED flag) rather than hiding it.
        details["proposer_error"] = str(ran["first_proposer_error"])
    calls = raw.get("lm_calls")
    if isinstance(calls, Mapping) and "policy" in calls and "proposer" in calls:
        # The budget table's role split: rollouts (task model) vs Synth's proposer turns.
        details["lm_calls_by_role"] = {"task_model": calls["policy"],
                                       "proposer": calls["proposer"]}
    return OptimizeOutcome(
        prompt=OptimizedPrompt(instruction=found.instruction, demos=()),
        best_val_score=score,
        trajectory=trajectory_from(raw),
        backend=backend,
        details=details,
    )


# --- environment around SDK calls --------------------------------------------------------------


@contextlib.contextmanager
def sdk_environment(env_api_key: str) -> Iterator[None]:
    """ENVIRONMENT_API_KEY = the task app's key, no persistence; restored afterwards.

    With the key set, synth-ai never mints one, so it never writes
    ~/.synth-ai/user_config.json; it would still set DEV_ENVIRONMENT_API_KEY, which
    is undone here too.
    """
    saved = {name: os.environ.get(name) for name in SDK_ENV}
    os.environ["ENVIRONMENT_API_KEY"] = env_api_key
    os.environ["SYNTH_LOCALAPI_AUTH_PERSIST"] = "0"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def quiet_unknown_fields() -> Iterator[list[str]]:
    """Collect synth-ai's "Unknown field ... will be ignored" warnings instead of printing them.

    0.7.3's field list lacks keys its own MIPRO docs use (mode, val_seeds, proposer) and
    this suite's local-backend keys; the list of names goes into the record instead.
    """
    names: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield names
    for w in caught:
        text = str(w.message)
        match = re.match(r"Unknown field '([^']+)' in \[([^\]]+)\]", text)
        if match:
            names.append(f"{match.group(2)}.{match.group(1)}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


# --- the adapter ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutBudget(BudgetBase):
    """What a Synth MIPRO job may spend: task-app rollouts (one task-model call each)."""

    rollouts: int | None = None
    num_candidates: int | None = None
    minibatch_size: int | None = None


@dataclass(frozen=True)
class SynthOptions(MiproKnobs, OptionsBase):
    """How the Synth job runs and where (its MIPRO knobs are `MiproKnobs`');
    `eval_concurrency`/`rollout_timeout_s` also set how the task-app executor scores its
    prompts."""

    backend: BackendKind = "auto"
    backend_url: str | None = None
    mipro_mode: MiproMode = "offline"
    task_app_port: int = 0
    poll_interval_s: float | None = None
    job_timeout_s: float = 3 * 3600.0
    eval_concurrency: int = 8
    rollout_timeout_s: float = 120.0
    # Attempts per LM call inside the task app (its retry policy); None = its default.
    lm_max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "local", "hosted"):
            raise UsageError(f"backend must be auto, local or hosted, got {self.backend!r}")
        if self.mipro_mode not in ("offline", "online"):
            raise UsageError(f"--mode must be offline or online, got {self.mipro_mode!r}")
        for label in ("batch_size", "num_full_evals", "proposal_rounds", "max_concurrent",
                      "eval_concurrency"):
            check_at_least(label, getattr(self, label), 1)
        if self.grounding_fraction is not None and not 0.0 < self.grounding_fraction < 1.0:
            raise UsageError(f"grounding_fraction must be in (0, 1), got "
                             f"{self.grounding_fraction}")
        check_at_least("num_candidates", self.num_candidates, 0)
        check_at_least("lm_max_attempts", self.lm_max_attempts, 1)


class SynthMIPRO:
    """Synth's MIPRO, instruction-only, through the synth-ai SDK's own job client."""

    spec: ClassVar[OptimizerSpec]

    def __init__(self, options: SynthOptions | None = None, /, **kwargs: Any) -> None:
        self.options = options if options is not None else SynthOptions.parse(
            kwargs, where="synth_mipro options")

    # -- choosing the backend --

    def resolved_backend(self) -> Literal["local", "hosted"]:
        if self.options.backend == "auto":
            return "hosted" if os.environ.get("SYNTH_API_KEY") else "local"
        return self.options.backend

    def check(self, request: OptimizeRequest) -> None:
        """Refuse what cannot run, before any LM call (the runner calls this first).

        Besides the static checks this refuses a model the hosted backend does not offer
        (the local backend serves any model), validates the job config with the SDK's own
        validator (one line here, not a failure after the baseline evaluation) and, for a
        remote backend, that it answers at all.
        """
        self._check_static(request)
        kind = self.resolved_backend()
        if kind == "hosted":
            check_hosted_model(request.lm.settings.model)
        validate_with_sdk(self.job_settings(request), request, kind)
        if kind == "hosted" or self.options.backend_url:
            from mipro_bench.optimizers.synth_job import backend_url_for, check_backend_reachable

            url = backend_url_for(self, kind)
            if url is not None:
                key = os.environ.get("SYNTH_API_KEY")
                if not key:
                    raise UsageError(f"the Synth backend at {url} needs SYNTH_API_KEY")
                check_backend_reachable(url, key)

    def planned_calls(self, request: OptimizeRequest) -> int | None:
        """About how many LM calls the optimize phase spends through the gateway (for live
        progress only): its rollouts plus about one proposer call per candidate."""
        settings = self.job_settings(request)
        return settings.rollouts + settings.num_candidates

    def _check_static(self, request: OptimizeRequest) -> None:
        if request.mode != "instruction_only":
            raise NotSupported("Synth MIPRO (synth-ai 0.7.3) optimizes instructions only: "
                               "no few-shot mode")
        rollouts = request.budget.rollouts
        if rollouts is None or rollouts < 1:
            raise UsageError("Synth MIPRO needs a rollout budget of at least 1 (--rollouts)")
        if self.resolved_backend() == "hosted" and not os.environ.get("SYNTH_API_KEY"):
            raise UsageError("the hosted Synth backend needs SYNTH_API_KEY (environment or "
                             ".env); use --local for the local backend")

    def job_settings(self, request: OptimizeRequest) -> JobSettings:
        o, budget = self.options, request.budget
        return JobSettings(**{
            **o.knobs(),
            "batch_size": budget.minibatch_size or o.batch_size,
            "num_candidates": (budget.num_candidates if budget.num_candidates is not None
                               else o.num_candidates),
        }, rollouts=int(budget.rollouts or DEFAULT_ROLLOUTS), mode=o.mipro_mode,
            seed=request.seed)

    # -- Optimizer protocol --

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        self._check_static(request)
        return off_event_loop(lambda: self._optimize(request))

    def _optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        from mipro_bench.optimizers.synth_job import run_synth_job

        kind = self.resolved_backend()
        settings = self.job_settings(request)
        request.say(
            f"Synth MIPRO ({settings.mode}, {kind} backend): {settings.rollouts} rollouts, "
            f"{settings.num_candidates} proposals, minibatch {settings.batch_size}")
        return run_synth_job(self, request, settings, kind)

    def executor_options(self) -> dict[str, Any]:
        """The task-app executor scores this adapter's prompts with its concurrency,
        timeout and task-app retry policy."""
        return {"concurrency": self.options.eval_concurrency,
                "timeout_s": self.options.rollout_timeout_s,
                "task_app": self.task_app_options()}

    def task_app_options(self) -> dict[str, Any]:
        """Options of every task app this adapter uses (its LM retry policy)."""
        if self.options.lm_max_attempts is None:
            return {}
        from mipro_bench.lm.retry import RetryPolicy

        return {"retry": RetryPolicy(max_attempts=self.options.lm_max_attempts)}


def sdk_accepts_model(model: str) -> bool:
    """Whether synth-ai's client-side check takes `model` as an openai policy model."""
    from synth_ai.sdk.optimization.internal.validators import _validate_model_for_provider

    return not _validate_model_for_provider(model, "openai", "policy.model", allow_nano=True)


def sdk_model_for(model: str, kind: Literal["local", "hosted"]) -> str | None:
    """What `policy.model` tells the SDK: None for the hosted backend (the real model, which
    `check` has already refused when the hosted API does not offer it); for the local
    backend the real model when the SDK takes it, else STAND_IN_MODEL."""
    if kind == "hosted":
        return None
    return model if sdk_accepts_model(model) else STAND_IN_MODEL


def check_hosted_model(model: str) -> None:
    """UsageError (one line) unless the hosted Synth backend offers `model`."""
    if not sdk_accepts_model(model):
        raise UsageError(f"the hosted Synth backend does not offer model {model!r}; it accepts "
                         f"{', '.join(SDK_OPENAI_MODELS)} (use --synth-backend local for any "
                         "other model: the local backend serves it through the gateway)")


def validate_with_sdk(settings: JobSettings, request: OptimizeRequest,
                      kind: Literal["local", "hosted"] = "local") -> None:
    """Run synth-ai's own config validator (what `submit()` runs) on this case's config,
    as it will be sent (with the stand-in model for the local backend)."""
    from pathlib import Path

    import click
    from synth_ai.sdk.optimization.internal.validators import validate_prompt_learning_config

    model = request.lm.settings.model
    config = job_config(request.splits, task_app_url="http://127.0.0.1:8015",
                        model=model, job=settings, sdk_model=sdk_model_for(model, kind))
    try:
        with quiet_unknown_fields():
            validate_prompt_learning_config(config, Path("<mipro-bench synth_mipro>"))
    except (click.ClickException, ValueError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        message = message.split("📖")[0].replace("❌", "")  # drop the SDK's cookbook pointers
        raise UsageError("synth-ai rejects the job config: " + one_line(Exception(message))
                         ) from None



# --- run_synth_mipro_banking77.py: the earlier script's flags, declared once ----------------

SEED_GROUP = "Synth MIPRO"
EARLIER_TASK_APP_PORT = 8015
SEED_OPTIONS = (
    Opt("rollouts", f"rollout budget: task-app rollouts the job may run (default "
        f"{DEFAULT_ROLLOUTS}); proposals are LM calls, not rollouts", SEED_GROUP, positive_int,
        DEFAULT_ROLLOUTS, metavar="ROLLOUTS"),
    # Synth's own mode (who runs the rollouts), not a prompt mode: kept apart by its dest.
    Opt("mode", "offline: the backend runs the rollouts through the task app; online: this "
        "process serves the traffic through the job's proxy and reports rewards (default "
        "offline)", SEED_GROUP, default="offline", choices=("offline", "online"),
        dest_name="mipro_mode"),
    Opt("local", "use the local Synth-compatible backend even when SYNTH_API_KEY is set",
        SEED_GROUP, action="store_true", default=False),
    Opt("backend-url", f"a Synth backend URL (default: SYNTH_BACKEND_URL or "
        f"{HOSTED_BACKEND_URL} when hosted; with --local, an external local backend instead "
        "of the in-process one)", SEED_GROUP, metavar="BACKEND_URL"),
    Opt("num-candidates", "instructions the meta model proposes (default 6)", SEED_GROUP,
        non_negative_int, metavar="NUM_CANDIDATES"),
    Opt("minibatch-size", "train seeds per search trial (default 10)", SEED_GROUP,
        positive_int, metavar="MINIBATCH_SIZE"),
    Opt("task-app-port", f"task app port, or the next free one (default "
        f"{EARLIER_TASK_APP_PORT}; 0 = any)", SEED_GROUP, port_number, EARLIER_TASK_APP_PORT,
        metavar="TASK_APP_PORT"),
)


def seed_case(get: Callable[[str], Any], say: Callable[[str], None]) -> SeedCase:
    """The seed CLI's flags as one instruction-only case: Synth's hosted backend when
    SYNTH_API_KEY is set (a ./.env counts) and --local is not, else the local one, which
    says so in one line."""
    from mipro_bench.lm.settings import load_dotenv

    load_dotenv()
    hosted = bool(os.environ.get("SYNTH_API_KEY")) and not get("local")
    if not hosted:
        why = "--local" if get("local") else "no SYNTH_API_KEY"
        where = f"at {get('backend_url')}" if get("backend_url") else "in-process on 127.0.0.1"
        say(f"Synth: local Synth-compatible backend {where} ({why}); the record says "
            "backend=local")
    budget = {"rollouts": get("rollouts"), "num_candidates": get("num_candidates"),
              "minibatch_size": get("minibatch_size")}
    return SeedCase(
        mode="instruction_only",
        budget={k: v for k, v in budget.items() if v is not None},
        options={"backend": "hosted" if hosted else "local", "backend_url": get("backend_url"),
                 "mipro_mode": get("mipro_mode"), "task_app_port": get("task_app_port")})


SPEC = OptimizerSpec(
    name="synth_mipro",
    slug="synth_mipro",
    title="Synth MIPRO",
    modes=frozenset({"instruction_only"}),
    unsupported={"fewshot": "Synth MIPRO (synth-ai 0.7.3) optimizes instructions only (no demos)"},
    budget_type=RolloutBudget,
    options_type=SynthOptions,
    adapter="mipro_bench.optimizers.synth_mipro:SynthMIPRO",
    native_executor="task_app",
    concurrency_options=("max_concurrent", "eval_concurrency"),
    concurrency_flag="synth-concurrency",
    only_flag="synth-only",
    cli_shortcuts=(CliShortcut("rollouts", "rollouts", "Synth MIPRO rollout budget"),),
    session_option=("backend", "synth-backend",
                    "Synth backend: local (offline, in-process; default) or hosted (Synth's "
                    "API, needs SYNTH_API_KEY; the task app is tunnelled)", ("local", "hosted")),
    seed_cli=SeedCli(options=SEED_OPTIONS, to_case=seed_case),
)
SynthMIPRO.spec = SPEC
