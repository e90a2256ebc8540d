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

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from mipro_bench.argtypes import non_negative_int, port_number, positive_int
from mipro_bench.event_loop import off_event_loop
from mipro_bench.optimizers.base import (
    NotSupported,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
)
from mipro_bench.optimizers.spec import CliShortcut, OptimizerSpec, SeedCase, SeedCli
from mipro_bench.optimizers.synth_job import (
    backend_url_for,
    check_backend_reachable,
    run_synth_job,
)
from mipro_bench.optimizers.synth_sdk import (
    DEFAULT_ROLLOUTS,
    HOSTED_BACKEND_URL,
    BackendKind,
    JobSettings,
    MiproKnobs,
    MiproMode,
    check_hosted_model,
    job_config,
    one_line,
    quiet_unknown_fields,
    sdk_model_for,
)
from mipro_bench.option_decl import Opt
from mipro_bench.typed_config import BudgetBase, OptionsBase, check_at_least

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

            url = backend_url_for(self, kind)
            if url is not None:
                key = os.environ.get("SYNTH_API_KEY")
                if not key:
                    raise UsageError(f"the Synth backend at {url} needs SYNTH_API_KEY")
                check_backend_reachable(url, key)

    def planned_calls(self, request: OptimizeRequest) -> int | None:
        """About how many LM calls the optimize phase spends through the gateway (for live
        progress only): its rollouts (the local backend plans at most that many) plus about
        three turns of Synth's proposer per candidate (it reads, then adds candidates two a
        turn with a read between: 18 turns for the default 6 candidates, measured)."""
        settings = self.job_settings(request)
        return settings.rollouts + 3 * settings.num_candidates

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
