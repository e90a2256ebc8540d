"""DSPy MIPROv2 (dspy 3.4.1 + optuna) behind the `Optimizer` protocol.

What the earlier benchmark got wrong and this adapter pins down:
- `--trials N` really runs N search trials (auto=None plus explicit candidates);
  `auto` is the other way in, and asking for both is a usage error.
- The valset is always the val split (DSPy otherwise takes 80 % of train), the
  minibatch never exceeds it, and seed 0 (which DSPy silently ignores) becomes a
  non-zero derived seed; both seeds are recorded.
- Every LM call goes through the gateway under this case's scope and a phase,
  with DSPy's cache off and its cache directory private to the run, so usage
  is counted completely (DSPy's own counters miss proposer and thread calls).
- Answers are mapped with `mipro_bench.labels.map_to_label`, the rule the task
  app uses, so both optimizers are scored by the same parser.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from mipro_bench.argtypes import non_negative_int, positive_int
from mipro_bench.data import Example
from mipro_bench.executors.base import EvaluationFailed
from mipro_bench.executors.dspy_program import (
    DEFAULT_NUM_THREADS,
    MODULES,
    OUTPUT_TYPES,
    DSPyProgramOptions,
    build_program,
    dspy_lm,
    prompt_of,
    quiet_output,
)
from mipro_bench.labels import map_to_label
from mipro_bench.optimizers.base import (
    BASELINE_PROMPT,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
    UsageReader,
)
from mipro_bench.optimizers.spec import CliShortcut, OptimizerSpec, SeedCase, SeedCli
from mipro_bench.option_decl import Opt
from mipro_bench.results import MODES, Mode, TrajectoryPoint
from mipro_bench.typed_config import BudgetBase, check_at_least

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 20  # the earlier script's --trials default
AUTO_PRESETS = ("light", "medium", "heavy")
DEFAULT_MINIBATCH_SIZE = 35  # MIPROv2.compile's default
# DSPy's auto presets only minibatch a valset larger than this (MIN_MINIBATCH_SIZE);
# below it a minibatch saves little and the periodic full evaluations cost more.
MIN_MINIBATCH_VALSET = 50
MIN_CANDIDATES = 3  # fewer and DSPy builds only the zero-shot demo set: one instruction
PROGRAM_FILE = "dspy_program.json"
__all__ = ["MODULES", "OUTPUT_TYPES", "SPEC", "DSPyMIPROv2", "MiproBudget", "MiproOptions",
           "build_program", "prompt_of"]


@dataclass(frozen=True)
class MiproBudget(BudgetBase):
    """What MIPROv2 may spend: explicit search trials (or a preset) and demo knobs."""

    trials: int | None = None
    auto: str | None = None
    num_candidates: int | None = None
    minibatch_size: int | None = None
    # Few-shot demo knobs (DSPy's defaults are 4 and 4 when unset).
    max_bootstrapped_demos: int | None = None
    max_labeled_demos: int | None = None

    def for_mode(self, mode: str) -> MiproBudget:
        """Instruction-only runs use no demos whatever the table says; the record says so."""
        if mode != "instruction_only":
            return self
        return self.replace(
            max_bootstrapped_demos=None if self.max_bootstrapped_demos is None else 0,
            max_labeled_demos=None if self.max_labeled_demos is None else 0,
        )


@dataclass(frozen=True)
class MiproOptions(DSPyProgramOptions):
    """How MIPROv2 runs (the program format and LM call options are the DSPy executor's)."""

    prompt_model: str | None = None
    fewshot_aware_proposer: bool | None = None
    minibatch_full_eval_steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least("minibatch_full_eval_steps", self.minibatch_full_eval_steps, 1)


@dataclass(frozen=True)
class MiproPlan:
    """The MIPROv2 arguments one case runs with, derived from (budget, mode, val size, seed).

    Pure data, so the arithmetic (and what the record says about it) is testable
    without an LM.
    """

    auto: str | None
    num_trials: int | None
    num_candidates: int | None
    minibatch: bool
    minibatch_size: int
    minibatch_full_eval_steps: int
    max_bootstrapped_demos: int
    max_labeled_demos: int
    fewshot_aware_proposer: bool
    requested_seed: int
    effective_seed: int

    def init_kwargs(self) -> dict[str, Any]:
        return {
            "auto": self.auto,
            "num_candidates": self.num_candidates,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "seed": self.effective_seed,
        }

    def compile_kwargs(self) -> dict[str, Any]:
        return {
            "num_trials": self.num_trials,
            "minibatch": self.minibatch,
            "minibatch_size": self.minibatch_size,
            "minibatch_full_eval_steps": self.minibatch_full_eval_steps,
            "fewshot_aware_proposer": self.fewshot_aware_proposer,
            "seed": self.effective_seed,
        }


def effective_seed(seed: int) -> int:
    """DSPy does `seed or self.seed`, so 0 would silently become 9: shift every seed by one.

    Injective over the seeds users pass (>= 0), never 0, and readable in the record.
    """
    if seed < 0:
        raise UsageError(f"--seed must be >= 0 (optuna's sampler needs it), got {seed}")
    return seed + 1


def candidates_for_trials(trials: int) -> int:
    """DSPy's own ratio run backwards: its presets spend trials ~= 1.5 x candidates."""
    return max(MIN_CANDIDATES, round(trials / 1.5))


DSPY_DEFAULT_DEMOS = 4  # MIPROv2's own default for both demo knobs


def _demo_knob(value: int | None) -> int:
    return DSPY_DEFAULT_DEMOS if value is None else value


def plan_mipro(
    budget: MiproBudget,
    mode: Mode,
    *,
    val_size: int,
    seed: int,
    fewshot_aware_proposer: bool | None = None,
    minibatch_full_eval_steps: int = 5,
) -> MiproPlan:
    """Turn a budget into MIPROv2 arguments, refusing combinations DSPy would misread."""
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if budget.trials is not None and budget.auto is not None:
        raise UsageError(
            "give either --trials (explicit search trials) or --auto (a DSPy preset), not both"
        )
    if budget.auto is not None and budget.auto not in AUTO_PRESETS:
        raise UsageError(f"--auto must be one of {', '.join(AUTO_PRESETS)}, got {budget.auto!r}")
    if budget.auto is not None and budget.num_candidates is not None:
        raise UsageError("num_candidates is set by the --auto preset; drop one of the two")
    if budget.trials is not None and budget.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {budget.trials}")
    if budget.num_candidates is not None and budget.num_candidates < MIN_CANDIDATES:
        raise UsageError(
            f"num_candidates must be at least {MIN_CANDIDATES}, got {budget.num_candidates}"
        )
    if val_size < 1:
        raise UsageError("MIPROv2 needs a val split of at least one example")

    if budget.auto is not None:
        auto, trials, candidates = budget.auto, None, None
    else:
        trials = budget.trials if budget.trials is not None else DEFAULT_TRIALS
        candidates = budget.num_candidates or candidates_for_trials(trials)
        auto = None

    size = min(budget.minibatch_size or DEFAULT_MINIBATCH_SIZE, val_size)
    if budget.minibatch_size is not None and budget.minibatch_size < 1:
        raise UsageError(f"minibatch_size must be at least 1, got {budget.minibatch_size}")
    # Explicit minibatch_size asks for minibatching whenever it is smaller than the valset;
    # otherwise follow DSPy's preset rule. Never a minibatch as large as the valset: it would
    # be a full evaluation that MIPROv2 does not count as one.
    if budget.minibatch_size is not None:
        minibatch = size < val_size
    else:
        minibatch = val_size > MIN_MINIBATCH_VALSET
    fewshot = mode == "fewshot"
    if fewshot_aware_proposer is None:
        # Instruction-only: the proposer still sees up to 3 bootstrapped demos (DSPy's default
        # zero-shot behaviour), so its instructions are grounded in solved examples, as a
        # Synth proposer is shown training examples. The demos never enter the program.
        fewshot_aware_proposer = True
    return MiproPlan(
        auto=auto,
        num_trials=trials,
        num_candidates=candidates,
        minibatch=minibatch,
        minibatch_size=size,
        minibatch_full_eval_steps=minibatch_full_eval_steps,
        max_bootstrapped_demos=_demo_knob(budget.max_bootstrapped_demos) if fewshot else 0,
        max_labeled_demos=_demo_knob(budget.max_labeled_demos) if fewshot else 0,
        fewshot_aware_proposer=fewshot_aware_proposer,
        requested_seed=seed,
        effective_seed=effective_seed(seed),
    )


def estimate_mipro_calls(plan: MiproPlan, *, train_size: int, val_size: int) -> int | None:
    """MIPROv2's optimize-phase LM calls, estimated (see benchmarks/matrix.toml): the search
    (V * (T + 1) without minibatching; T minibatches plus a full evaluation every
    `minibatch_full_eval_steps` with it), about 10 bootstrap calls per demo set beyond the
    first two (capped by the train split) and N + 13 proposer calls. None for an `auto`
    preset (DSPy picks T and N itself)."""
    if plan.num_trials is None or plan.num_candidates is None:
        return None
    trials, candidates = plan.num_trials, plan.num_candidates
    if plan.minibatch:
        search = trials * plan.minibatch_size + (
            trials // max(1, plan.minibatch_full_eval_steps) + 1) * val_size
    else:
        search = val_size * (trials + 1)
    bootstrap = min(train_size, 10 * max(0, candidates - 2))
    return search + bootstrap + candidates + 13


# --- the DSPy program (built by the DSPy-program executor) -----------------------------


def to_dspy_examples(examples: tuple[Example, ...]) -> list[Any]:
    import dspy

    return [dspy.Example(query=ex.text, intent=ex.label).with_inputs("query") for ex in examples]


def make_metric(labels: tuple[str, ...]) -> Callable[..., bool]:
    """MIPROv2's metric: the same answer->intent rule the suite scores with."""

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        return map_to_label(getattr(prediction, "intent", None), labels) == example.intent

    return metric


# --- usage during the search --------------------------------------------------------------

def _calls(probe: UsageReader | None, phase: str) -> int | None:
    if probe is None:
        return None
    try:
        usage = probe().get(phase)
    except Exception as exc:  # a trajectory point without a count beats a failed search
        log.debug("usage read failed: %s", exc)
        return None
    return usage.calls if usage is not None else 0


@dataclass
class _Evaluation:
    """One evaluation MIPROv2 ran during the search (captured by the evaluate wrapper)."""

    index: int
    kind: str  # "full" | "minibatch"
    size: int
    score: float | None  # 0..1
    eval_calls_so_far: int
    lm_calls: int | None  # optimize-phase LM calls when it finished (gateway count)
    error: str | None = None


class _SearchRecorder:
    """Wraps MIPROv2's `Evaluate` to note each evaluation's score and the LM calls spent.

    MIPROv2 swallows an exception in an evaluation and scores it 0, which would turn an
    LM outage into a silently "optimized" program: the recorder keeps the error so the
    adapter can fail the run instead.
    """

    def __init__(self, evaluate: Any, valset_size: int, probe: UsageReader | None) -> None:
        self._evaluate = evaluate
        self._valset_size = valset_size
        self._probe = probe
        self.evaluations: list[_Evaluation] = []
        self.calls_before_search: int | None = _calls(probe, "optimize")
        self._eval_calls = 0

    def __call__(self, program: Any, *args: Any, **kwargs: Any) -> Any:
        devset = kwargs.get("devset")
        size = len(devset) if devset is not None else self._valset_size
        kind = "full" if size >= self._valset_size else "minibatch"
        self._eval_calls += size
        try:
            result = self._evaluate(program, *args, **kwargs)
        except Exception as exc:
            self._note(kind, size, None, f"{type(exc).__name__}: {exc}")
            raise
        self._note(kind, size, float(result.score) / 100.0, None)
        return result

    def _note(self, kind: str, size: int, score: float | None, error: str | None) -> None:
        self.evaluations.append(
            _Evaluation(
                index=len(self.evaluations),
                kind=kind,
                size=size,
                score=score,
                eval_calls_so_far=self._eval_calls,
                lm_calls=_calls(self._probe, "optimize"),
                error=error,
            )
        )

    def __getattr__(self, name: str) -> Any:  # Evaluate's attributes (devset, metric, ...)
        return getattr(self._evaluate, name)

    def trajectory(self) -> tuple[TrajectoryPoint, ...]:
        """Best full-valset score so far against LM calls (gateway) and val rollouts."""
        points = []
        best: float | None = None
        for ev in self.evaluations:
            if ev.kind != "full" or ev.score is None:
                continue
            best = ev.score if best is None else max(best, ev.score)
            calls = ev.lm_calls
            if calls is None:  # no gateway probe: the search's own count (bootstrap excluded)
                calls = ev.eval_calls_so_far
            label = "default program" if ev.index == 0 else f"full eval {ev.index}"
            points.append(
                TrajectoryPoint(
                    lm_calls=calls, rollouts=ev.eval_calls_so_far, score=best, label=label
                )
            )
        return tuple(points)


def _first_lm_error() -> Any:
    """A DSPy callback keeping the first exception an LM call raised. DSPy's parallel
    evaluation logs each item's error and then raises a bare "Execution cancelled due to
    errors or interruption.", which hides why the calls failed (e.g. the gateway's 409
    saying which replayed request changed and how)."""
    from dspy.utils.callback import BaseCallback

    class FirstLMError(BaseCallback):
        def __init__(self) -> None:
            self.first: str | None = None

        def on_lm_end(self, call_id: str, outputs: Any,
                      exception: BaseException | None = None) -> None:
            if exception is not None and self.first is None:
                self.first = f"{type(exception).__name__}: {exception}"

    return FirstLMError()


def _mipro_class() -> type:
    """MIPROv2 with two taps: the proposed instructions and the search's evaluations."""
    from dspy.teleprompt import MIPROv2

    class RecordingMIPROv2(MIPROv2):  # type: ignore[misc, valid-type]
        probe: UsageReader | None = None
        recorder: _SearchRecorder | None = None
        proposed: dict[int, list[str]] | None = None

        def _propose_instructions(self, *args: Any, **kwargs: Any) -> Any:
            out = super()._propose_instructions(*args, **kwargs)
            self.proposed = {k: list(v) for k, v in out.items()}
            return out

        def _optimize_prompt_parameters(
            self, program: Any, instruction_candidates: Any, demo_candidates: Any,
            evaluate: Any, valset: list, *args: Any, **kwargs: Any,
        ) -> Any:
            self.recorder = _SearchRecorder(evaluate, len(valset), self.probe)
            return super()._optimize_prompt_parameters(
                program, instruction_candidates, demo_candidates, self.recorder, valset,
                *args, **kwargs,
            )

    return RecordingMIPROv2


# --- the adapter ---------------------------------------------------------------------------


def _trial_summary(trial_logs: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The JSON-safe part of DSPy's trial logs (indices and scores, no program objects)."""
    rows = []
    for number in sorted(trial_logs):
        entry = trial_logs[number]
        row: dict[str, Any] = {"trial": number}
        for key, value in entry.items():
            if key.endswith("_predictor_instruction") or key.endswith("_predictor_demos"):
                row[key] = value
            elif key in ("full_eval_score", "mb_score"):
                row[key] = float(value) / 100.0
            elif key == "total_eval_calls_so_far":
                row[key] = int(value)
        rows.append(row)
    return rows


def count_search_trials(trial_logs: Mapping[int, Mapping[str, Any]]) -> int:
    """Optuna trials MIPROv2 ran: the entries where it chose an instruction.

    trial_logs also holds the default program's evaluation (entry 1) and, with
    minibatching, the periodic full evaluations; neither picks parameters.
    """
    picked = "_predictor_instruction"
    return sum(1 for entry in trial_logs.values() if any(k.endswith(picked) for k in entry))



class DSPyMIPROv2:
    """DSPy's MIPROv2 on a `query -> intent` program whose instructions are the baseline."""

    spec: ClassVar[OptimizerSpec]

    def __init__(self, options: MiproOptions | None = None, /, **kwargs: Any) -> None:
        self.options = options if options is not None else MiproOptions.parse(
            kwargs, where="dspy_miprov2 options")

    def executor_options(self) -> dict[str, Any]:
        return self.options.executor_options()

    def _log_path(self, request: OptimizeRequest, name: str) -> Path | None:
        return request.workdir / name if self.options.quiet else None

    def plan(self, request: OptimizeRequest) -> MiproPlan:
        return plan_mipro(
            request.budget,
            request.mode,
            val_size=len(request.splits.val),
            seed=request.seed,
            fewshot_aware_proposer=self.options.fewshot_aware_proposer,
            minibatch_full_eval_steps=self.options.minibatch_full_eval_steps,
        )

    def check(self, request: OptimizeRequest) -> None:
        """Refuse a budget MIPROv2 would misread, before the runner spends any LM call."""
        self.plan(request)

    def planned_calls(self, request: OptimizeRequest) -> int | None:
        """About how many LM calls the optimize phase spends (for live progress only)."""
        return estimate_mipro_calls(self.plan(request), train_size=len(request.splits.train),
                                    val_size=len(request.splits.val))

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        import dspy

        from mipro_bench.lm.dspy_lm import isolated_dspy_cache

        o = self.options
        splits = request.splits
        plan = self.plan(request)
        request.workdir.mkdir(parents=True, exist_ok=True)
        labels = tuple(splits.labels)
        student = build_program(labels, BASELINE_PROMPT, o.module, o.output_type)
        task_lm = dspy_lm(request, "optimize", num_retries=o.num_retries)
        prompt_lm = dspy_lm(request, "optimize", num_retries=o.num_retries,
                            model=o.prompt_model,
                            max_tokens=request.lm.settings.limit_for("proposer"))
        probe = request.read_usage

        optimizer_cls = _mipro_class()
        optimizer = optimizer_cls(
            metric=make_metric(labels),
            prompt_model=prompt_lm,
            task_model=task_lm,
            num_threads=o.num_threads,
            verbose=False,
            track_stats=True,
            log_dir=None,
            **plan.init_kwargs(),
        )
        optimizer.probe = probe
        request.say(
            f"MIPROv2 ({request.mode}): "
            + (f"auto={plan.auto}" if plan.auto else
               f"{plan.num_trials} trials, {plan.num_candidates} candidates")
            + f", valset {len(splits.val)}, minibatch "
            + (f"{plan.minibatch_size}" if plan.minibatch else "off")
        )
        started = time.perf_counter()
        lm_errors = _first_lm_error()
        with isolated_dspy_cache(request.workdir), quiet_output(
                self._log_path(request, "dspy.log")), dspy.context(callbacks=[lm_errors]):
            compiled = optimizer.compile(
                student,
                trainset=to_dspy_examples(splits.train.examples),
                valset=to_dspy_examples(splits.val.examples),
                **plan.compile_kwargs(),
            )
        seconds = time.perf_counter() - started
        recorder: _SearchRecorder | None = optimizer.recorder
        if recorder is not None:
            failures = [ev for ev in recorder.evaluations if ev.error]
            if failures:
                raise EvaluationFailed(
                    f"MIPROv2 search: {len(failures)} evaluation(s) failed in the LM "
                    f"(first: {lm_errors.first or failures[0].error})"
                )

        prompt = prompt_of(compiled)
        if request.mode == "instruction_only" and prompt.demos:
            raise AssertionError("instruction_only run returned demos; MIPROv2 plan is wrong")
        program_path = request.workdir / PROGRAM_FILE
        compiled.save(str(program_path))  # a native artifact for users; scoring uses `prompt`

        trial_logs = getattr(compiled, "trial_logs", {}) or {}
        score = getattr(compiled, "score", None)
        details: dict[str, Any] = {
            "dspy": {
                **{k: v for k, v in asdict(plan).items()},
                "module": o.module,
                "output_type": o.output_type,
                "prompt_model": o.prompt_model or request.lm.settings.model,
                "task_model": request.lm.settings.model,
                "num_threads": o.num_threads,
                "search_trials_run": count_search_trials(trial_logs),
                "trials": _trial_summary(trial_logs),
                "instruction_candidates": (optimizer.proposed or {}).get(0, []),
                "calls_before_search": recorder.calls_before_search if recorder else None,
                "evaluations": [asdict(ev) for ev in recorder.evaluations] if recorder else [],
                "compile_seconds": round(seconds, 3),
            },
            "requested_seed": plan.requested_seed,
            "effective_seed": plan.effective_seed,
        }
        return OptimizeOutcome(
            prompt=prompt,
            best_val_score=None if score is None else float(score) / 100.0,
            trajectory=recorder.trajectory() if recorder else (),
            backend="dspy",
            details=details,
            artifacts={"program": program_path},
        )


# --- run_dspy_mipro_banking77.py: the earlier script's flags, declared once -----------------

SEED_GROUP = "DSPy MIPROv2"
DEFAULT_MAX_DEMOS = 4
SEED_OPTIONS = (
    Opt("trials", f"MIPROv2 search trials, really run (default {DEFAULT_TRIALS} unless --auto)",
        SEED_GROUP, positive_int, metavar="TRIALS"),
    Opt("auto", "a DSPy preset instead of --trials (not both)", SEED_GROUP,
        choices=AUTO_PRESETS),
    Opt("num-candidates", "instruction/demo candidates (default: trials / 1.5, at least 3)",
        SEED_GROUP, positive_int, metavar="NUM_CANDIDATES"),
    Opt("mode", "instruction_only (as Synth MIPRO) or fewshot (instructions + demos; what the "
        "earlier script ran)", SEED_GROUP, default="instruction_only", choices=tuple(MODES)),
    Opt("max-demos", f"fewshot: max bootstrapped and max labeled demos each (default "
        f"{DEFAULT_MAX_DEMOS})", SEED_GROUP, non_negative_int, DEFAULT_MAX_DEMOS,
        metavar="MAX_DEMOS"),
    Opt("module", "dspy.Predict or dspy.ChainOfThought (default predict)", SEED_GROUP,
        default="predict", choices=tuple(MODULES)),
    Opt("output-type", "intent field: str listing the intents, parsed by the suite's label "
        "rule (default), or a Literal DSPy validates itself", SEED_GROUP, default="str",
        choices=tuple(OUTPUT_TYPES)),
    Opt("threads", f"evaluation threads (default {DEFAULT_NUM_THREADS})", SEED_GROUP,
        positive_int, DEFAULT_NUM_THREADS, metavar="THREADS"),
)


def seed_case(get: Callable[[str], Any], say: Callable[[str], None]) -> SeedCase:
    """The seed CLI's flags as one case: `--trials` really run (the earlier script logged
    and ignored it), or a preset; demo knobs for few-shot; the program's format."""
    trials, auto, candidates = get("trials"), get("auto"), get("num_candidates")
    if trials is not None and auto is not None:
        raise UsageError("give --trials or --auto, not both")
    if auto is not None and candidates is not None:
        raise UsageError("--num-candidates is set by --auto; drop one")
    budget = {
        "trials": DEFAULT_TRIALS if trials is None and auto is None else trials,
        "auto": auto,
        "num_candidates": candidates,
        "max_bootstrapped_demos": get("max_demos"),
        "max_labeled_demos": get("max_demos"),
    }
    return SeedCase(mode=get("mode"),
                    budget={k: v for k, v in budget.items() if v is not None},
                    options={"module": get("module"), "output_type": get("output_type"),
                             "num_threads": get("threads")})


SPEC = OptimizerSpec(
    name="dspy_miprov2",
    slug="dspy_mipro",
    title="DSPy MIPROv2",
    modes=frozenset(MODES),
    budget_type=MiproBudget,
    options_type=MiproOptions,
    adapter="mipro_bench.optimizers.dspy_mipro:DSPyMIPROv2",
    native_executor="dspy_program",
    concurrency_options=("num_threads",),
    concurrency_flag="dspy-threads",
    only_flag="dspy-only",
    cli_shortcuts=(CliShortcut("trials", "trials", "DSPy MIPROv2 search trials"),),
    seed_cli=SeedCli(options=SEED_OPTIONS, to_case=seed_case),
)
DSPyMIPROv2.spec = SPEC
