"""A submitted job's `prompt_learning` table, checked and typed.

The SDK validates a config before sending it, but the local backend also
takes raw HTTP (the earlier script's route, curl, tests), so every field it
uses is checked again here and a bad one is a 400 naming the field, never a
crash inside the optimization loop.

Keys read from `prompt_learning` (Synth's names where Synth has one):
  task_app_url, task_app_id, initial_prompt, policy{model, provider,
  temperature, max_completion_tokens}, env_config (sent with every rollout),
  mipro{mode, bootstrap_train_seeds, online_pool, val_seeds, rollout_budget,
  batch_size, num_candidates|max_instructions, proposal_rounds, num_full_evals,
  full_eval_every_k, max_concurrent, seed, meta_model, proposer{mode, model,
  inference_url, temperature, max_tokens, examples_per_proposal},
  policy_inference_url, inference_api_key, rollout_timeout_s, policy_model, workdir}.
`policy_model` (the real model when policy.model is the SDK's stand-in),
`rollout_budget`, `proposal_rounds`, `num_full_evals`, `policy_inference_url`,
`inference_api_key` (the key for the config's inference URLs, e.g. the LM
gateway's per-run token; never stored with the job), `workdir` (where Synth's
MIPROv2 keeps its run ledger and traces), `rollout_timeout_s` and
the proposer's `examples_per_proposal` are this backend's own, documented here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mipro_bench.task_client.patterns import PatternError, PromptPattern

DEFAULT_BATCH_SIZE = 10
DEFAULT_NUM_CANDIDATES = 6
DEFAULT_NUM_FULL_EVALS = 3
DEFAULT_PROPOSAL_ROUNDS = 2
DEFAULT_MAX_CONCURRENT = 8
DEFAULT_ROLLOUT_TIMEOUT_S = 120.0
MAX_SEEDS = 100_000
MAX_BUDGET = 1_000_000


class ConfigError(ValueError):
    """A job config the backend cannot run (answered 400 with this message)."""


@dataclass(frozen=True)
class ProposerConfig:
    model: str
    inference_url: str | None
    temperature: float = 1.0
    max_tokens: int = 512
    examples_per_proposal: int = 8


@dataclass(frozen=True)
class MiproJobConfig:
    task_app_url: str
    task_app_id: str | None
    initial_prompt: PromptPattern
    policy_model: str
    policy_provider: str
    temperature: float
    max_completion_tokens: int
    env_config: dict[str, Any]
    mode: str  # offline | online
    train_seeds: tuple[int, ...]  # minibatch pool (online_pool)
    bootstrap_seeds: tuple[int, ...]  # examples shown to the proposer
    val_seeds: tuple[int, ...]
    rollout_budget: int
    batch_size: int
    num_candidates: int
    proposal_rounds: int
    num_full_evals: int
    full_eval_every_k: int | None
    max_concurrent: int
    seed: int
    proposer: ProposerConfig
    policy_inference_url: str | None
    rollout_timeout_s: float
    # Where Synth's MIPROv2 writes its run ledger and proposer traces (the case's working
    # directory); None: a temporary directory.
    workdir: str | None = None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    inference_api_key: str | None = field(default=None, repr=False)


def _table(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a table/object")
    return value


def _int(value: Any, name: str, *, default: int | None = None, low: int = 0,
         high: int = MAX_BUDGET) -> int:
    if value is None:
        if default is None:
            raise ConfigError(f"{name} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}]")
    return value


def _float(value: Any, name: str, *, default: float, low: float, high: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}]")
    return float(value)


def _str(value: Any, name: str, *, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string")
    return value.strip()


def _url(value: Any, name: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    url = _str(value, name)
    if not url.startswith(("http://", "https://")) or len(url) > 4096:
        raise ConfigError(f"{name} must be an http(s) URL")
    return url.rstrip("/")


def _seeds(value: Any, name: str, *, required: bool) -> tuple[int, ...]:
    if value is None:
        if required:
            raise ConfigError(f"{name} is required (a list of task-app seeds)")
        return ()
    if isinstance(value, Mapping) and "start" in value and "end" in value:  # Synth's range form
        start = _int(value.get("start"), f"{name}.start", high=MAX_SEEDS)
        end = _int(value.get("end"), f"{name}.end", high=MAX_SEEDS)
        step = _int(value.get("step"), f"{name}.step", default=1, low=1, high=MAX_SEEDS)
        value = list(range(start, end, step))
    if not isinstance(value, list) or len(value) > MAX_SEEDS:
        raise ConfigError(f"{name} must be a list of at most {MAX_SEEDS} integer seeds")
    seeds = tuple(_int(v, f"{name}[{i}]", high=2**31 - 1) for i, v in enumerate(value))
    if required and not seeds:
        raise ConfigError(f"{name} must not be empty")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{name} repeats a seed")
    return seeds


def prompt_learning_section(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The prompt_learning table of a submit body (SDK shape, or the table itself)."""
    body = payload.get("config_body", payload.get("config", payload))
    body = _table(body, "config_body")
    section = body.get("prompt_learning", body.get("policy_optimization"))
    if section is None:
        raise ConfigError("config_body.prompt_learning is missing")
    return _table(section, "prompt_learning")


def parse_job_config(section: Mapping[str, Any]) -> MiproJobConfig:
    algorithm = section.get("algorithm", "mipro")
    if algorithm != "mipro":
        raise ConfigError(f"the local backend runs algorithm 'mipro' only, got {algorithm!r}")
    try:
        pattern = PromptPattern.from_config(section.get("initial_prompt"))
    except PatternError as exc:
        raise ConfigError(f"prompt_learning.{exc}") from None
    policy = _table(section.get("policy"), "prompt_learning.policy")
    mipro = _table(section.get("mipro"), "prompt_learning.mipro")
    proposer = _table(mipro.get("proposer"), "prompt_learning.mipro.proposer")

    mode = mipro.get("mode", "offline")
    if mode not in ("offline", "online"):
        raise ConfigError("prompt_learning.mipro.mode must be 'offline' or 'online'")
    proposer_mode = proposer.get("mode", "instruction_only")
    if proposer_mode != "instruction_only":
        raise ConfigError("the local backend proposes instructions only "
                          "(mipro.proposer.mode = 'instruction_only')")
    p = "prompt_learning.mipro"
    pool = mipro.get("online_pool", section.get("online_pool"))
    bootstrap = mipro.get("bootstrap_train_seeds", section.get("bootstrap_train_seeds"))
    train_seeds = _seeds(pool if pool is not None else bootstrap, f"{p}.online_pool",
                         required=True)
    bootstrap_seeds = _seeds(bootstrap, f"{p}.bootstrap_train_seeds", required=False) or \
        train_seeds
    val_seeds = _seeds(mipro.get("val_seeds"), f"{p}.val_seeds", required=False)
    batch_size = _int(mipro.get("batch_size"), f"{p}.batch_size", default=DEFAULT_BATCH_SIZE,
                      low=1)
    budget = mipro.get("rollout_budget")
    if budget is None and all(mipro.get(k) is not None for k in
                              ("num_iterations", "num_evaluations_per_iteration")):
        budget = (_int(mipro["num_iterations"], f"{p}.num_iterations", low=1)
                  * _int(mipro["num_evaluations_per_iteration"],
                         f"{p}.num_evaluations_per_iteration", low=1) * batch_size)
    rollout_budget = _int(budget, f"{p}.rollout_budget", low=1)
    num_candidates = _int(mipro.get("num_candidates", mipro.get("max_instructions")),
                          f"{p}.num_candidates", default=DEFAULT_NUM_CANDIDATES, low=0,
                          high=100)
    # mipro.policy_model (local-only) names the real model when the SDK had to be shown a
    # stand-in in policy.model (its client-side list); every LM call uses the real one.
    model = _str(mipro.get("policy_model", policy.get("model")), "prompt_learning.policy.model")
    meta_model = mipro.get("meta_model")
    return MiproJobConfig(
        task_app_url=_url(section.get("task_app_url"), "prompt_learning.task_app_url",
                          required=True) or "",
        task_app_id=section.get("task_app_id") if isinstance(section.get("task_app_id"), str)
        else None,
        initial_prompt=pattern,
        policy_model=model,
        policy_provider=_str(policy.get("provider"), "prompt_learning.policy.provider",
                             default="openai"),
        temperature=_float(policy.get("temperature"), "prompt_learning.policy.temperature",
                           default=0.0, low=0.0, high=2.0),
        max_completion_tokens=_int(policy.get("max_completion_tokens"),
                                   "prompt_learning.policy.max_completion_tokens",
                                   default=256, low=1, high=32768),
        env_config=dict(_table(section.get("env_config"), "prompt_learning.env_config")),
        mode=mode,
        train_seeds=train_seeds,
        bootstrap_seeds=bootstrap_seeds,
        val_seeds=val_seeds,
        rollout_budget=rollout_budget,
        batch_size=batch_size,
        num_candidates=num_candidates,
        proposal_rounds=_int(mipro.get("proposal_rounds"), f"{p}.proposal_rounds",
                             default=DEFAULT_PROPOSAL_ROUNDS, low=1, high=100),
        num_full_evals=_int(mipro.get("num_full_evals"), f"{p}.num_full_evals",
                            default=DEFAULT_NUM_FULL_EVALS, low=1, high=100),
        full_eval_every_k=_int(mipro.get("full_eval_every_k"), f"{p}.full_eval_every_k",
                               default=0, low=0) or None,
        max_concurrent=_int(mipro.get("max_concurrent"), f"{p}.max_concurrent",
                            default=DEFAULT_MAX_CONCURRENT, low=1, high=256),
        seed=_int(mipro.get("seed"), f"{p}.seed", default=0, high=2**31 - 1),
        proposer=ProposerConfig(
            model=_str(proposer.get("model", meta_model), f"{p}.proposer.model", default=model),
            inference_url=_url(proposer.get("inference_url"), f"{p}.proposer.inference_url",
                               required=False),
            temperature=_float(proposer.get("temperature"), f"{p}.proposer.temperature",
                               default=1.0, low=0.0, high=2.0),
            max_tokens=_int(proposer.get("max_tokens"), f"{p}.proposer.max_tokens",
                            default=512, low=1, high=32768),
            examples_per_proposal=_int(proposer.get("examples_per_proposal"),
                                       f"{p}.proposer.examples_per_proposal", default=8,
                                       low=0, high=100),
        ),
        policy_inference_url=_url(mipro.get("policy_inference_url"),
                                  f"{p}.policy_inference_url", required=False),
        inference_api_key=None if mipro.get("inference_api_key") is None else _str(
            mipro.get("inference_api_key"), f"{p}.inference_api_key"),
        rollout_timeout_s=_float(mipro.get("rollout_timeout_s"), f"{p}.rollout_timeout_s",
                                 default=DEFAULT_ROLLOUT_TIMEOUT_S, low=0.1, high=3600.0),
        workdir=_workdir(mipro.get("workdir"), f"{p}.workdir"),
        raw=redacted_section(section),
    )


def _workdir(value: Any, name: str) -> str | None:
    if value is None:
        return None
    path = _str(value, name)
    if not path.startswith("/"):
        raise ConfigError(f"{name} must be an absolute path")
    return path


def redacted_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """The `prompt_learning` table as it may be kept or shown: without the inference key."""
    out = dict(section)
    mipro = out.get("mipro")
    if isinstance(mipro, Mapping) and "inference_api_key" in mipro:
        out["mipro"] = {**mipro, "inference_api_key": "[redacted]"}
    return out
