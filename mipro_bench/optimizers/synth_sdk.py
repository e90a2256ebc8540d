"""The synth-ai SDK side of a Synth MIPRO job: its config table, reading its result, and
the environment around SDK calls.

Shared by the adapter (synth_mipro.py: options, checks, the spec) and the job runner
(synth_job.py: servers, tunnel, submit, poll), so neither imports the other's module for
these: the runner needs them, and the adapter calls the runner.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from mipro_bench.data import Splits
from mipro_bench.optimizers.base import OptimizeOutcome, UsageError
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
