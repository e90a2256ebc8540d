"""DSPy GEPA (dspy 3.4.1 + gepa) behind the `Optimizer` protocol: reflective instruction evolution.

GEPA runs the `query -> intent` program on small training minibatches, shows the
reflection LM the failures with textual feedback, and keeps a rewritten
instruction when it does better on the same minibatch (then scores it on the
whole val split, its Pareto set). What this adapter pins down:
- Budget: exactly one of `max_metric_calls`, `max_full_evals` or `auto` (DSPy's
  own rule), refused in one line otherwise; what it resolved to is recorded.
- The feedback metric uses `mipro_bench.labels.match_label`, the rule every scorer
  uses, and its feedback names the expected and the predicted intent (or says the
  answer named none), which is all the reflection LM learns from.
- The reflection LM is the session's model through the gateway under this case's
  scope and the optimize phase; its calls are counted apart at the wire (the
  optimize-phase count across each reflection call; GEPA reflects between
  evaluations, never during one) and recorded as `reflection_calls`, the rest of
  the optimize phase as `task_model_calls`.
- DSPy's cache is off and private to the run, its prints and GEPA's progress go to
  a log file, and GEPA's own run directory (`log_dir`) is the case's workdir, fresh
  per case, so a rerun never silently resumes an old run.
- GEPA's `seed` is used as given (`random.Random(seed)`; 0 is a real seed here,
  unlike MIPROv2's `seed or self.seed`): requested and effective seeds are recorded.
- Instruction-only: GEPA evolves instruction text, never demos.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from mipro_bench.data import Example
from mipro_bench.executors.base import EvaluationFailed, allowed_item_errors
from mipro_bench.executors.dspy_program import (
    DSPyProgramOptions,
    build_program,
    dspy_lm,
    prompt_of,
    quiet_output,
)
from mipro_bench.labels import match_label
from mipro_bench.optimizers.base import (
    BASELINE_PROMPT,
    NotSupported,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
    UsageReader,
)
from mipro_bench.optimizers.spec import CliShortcut, OptimizerSpec
from mipro_bench.results import Mode, TrajectoryPoint
from mipro_bench.typed_config import BudgetBase, check_at_least

log = logging.getLogger(__name__)

AUTO_PRESETS = ("light", "medium", "heavy")  # dspy.GEPA's AUTO_RUN_SETTINGS
DEFAULT_METRIC_CALLS = 500  # when the budget names none; see benchmarks/matrix.toml
SELECTION_STRATEGIES = ("pareto", "current_best")
PROGRAM_FILE = "dspy_program.json"
GEPA_RUN_DIR = "gepa_run"
FEWSHOT_REASON = ("DSPy GEPA (dspy 3.4.1) evolves instructions only; it never selects "
                  "few-shot demos")
__all__ = ["SPEC", "DSPyGEPA", "GepaBudget", "GepaOptions", "GepaPlan", "make_feedback_metric",
           "plan_gepa"]


@dataclass(frozen=True)
class GepaBudget(BudgetBase):
    """What GEPA may spend: one of metric calls, full evaluations (train+val) or a preset.

    A metric call is one (candidate, example) evaluation, i.e. one task-model call for
    the one-predictor program; reflection calls come on top (matrix.toml measures both).
    """

    max_metric_calls: int | None = None
    max_full_evals: int | None = None
    auto: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [k for k in ("max_metric_calls", "max_full_evals", "auto")
                 if getattr(self, k) is not None]
        if len(given) > 1:
            raise UsageError(f"give exactly one of max_metric_calls, max_full_evals, auto "
                             f"(got {' and '.join(given)})")
        if self.auto is not None and self.auto not in AUTO_PRESETS:
            raise UsageError(f"auto must be one of {', '.join(AUTO_PRESETS)}, got {self.auto!r}")
        check_at_least("max_metric_calls", self.max_metric_calls, 1)
        check_at_least("max_full_evals", self.max_full_evals, 1)


@dataclass(frozen=True)
class GepaOptions(DSPyProgramOptions):
    """How GEPA runs (the program format and LM call options are the DSPy executor's)."""

    reflection_minibatch_size: int = 3
    candidate_selection_strategy: Literal["pareto", "current_best"] = "pareto"
    skip_perfect_score: bool = True
    use_merge: bool = True
    max_merge_invocations: int = 5
    # None: the session's model (the fairness rule: one model on every side).
    reflection_model: str | None = None
    # None: the session's reflection limit (--max-tokens reflection=N; the gateway caps every
    # reflection call at that limit whatever this says)
    reflection_max_tokens: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidate_selection_strategy not in SELECTION_STRATEGIES:
            raise UsageError(f"candidate_selection_strategy must be one of "
                             f"{', '.join(SELECTION_STRATEGIES)}, "
                             f"got {self.candidate_selection_strategy!r}")
        check_at_least("reflection_minibatch_size", self.reflection_minibatch_size, 1)
        check_at_least("max_merge_invocations", self.max_merge_invocations, 0)
        check_at_least("reflection_max_tokens", self.reflection_max_tokens, 1)


@dataclass(frozen=True)
class GepaPlan:
    """The dspy.GEPA budget arguments one case runs with; pure data, testable without an LM."""

    max_metric_calls: int | None
    max_full_evals: int | None
    auto: str | None
    reflection_minibatch_size: int
    requested_seed: int
    effective_seed: int

    def init_kwargs(self) -> dict[str, Any]:
        return {"max_metric_calls": self.max_metric_calls, "max_full_evals": self.max_full_evals,
                "auto": self.auto, "reflection_minibatch_size": self.reflection_minibatch_size,
                "seed": self.effective_seed}


def plan_gepa(budget: GepaBudget, mode: Mode, *, train_size: int, val_size: int, seed: int,
              reflection_minibatch_size: int = 3) -> GepaPlan:
    """Turn a budget into dspy.GEPA arguments, refusing what GEPA cannot run."""
    if mode != "instruction_only":
        raise NotSupported(FEWSHOT_REASON)
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if train_size < 1 or val_size < 1:
        raise UsageError("GEPA needs a train and a val split of at least one example each")
    if reflection_minibatch_size > train_size:
        raise UsageError(f"reflection_minibatch_size ({reflection_minibatch_size}) is larger "
                         f"than the train split ({train_size})")
    calls = budget.max_metric_calls
    if calls is None and budget.max_full_evals is None and budget.auto is None:
        calls = DEFAULT_METRIC_CALLS
    if calls is not None and calls < val_size:
        raise UsageError(f"max_metric_calls ({calls}) is below one val evaluation ({val_size}): "
                         "GEPA would stop after scoring the baseline")
    return GepaPlan(max_metric_calls=calls, max_full_evals=budget.max_full_evals,
                    auto=budget.auto, reflection_minibatch_size=reflection_minibatch_size,
                    requested_seed=seed, effective_seed=seed)


# --- the feedback metric ---------------------------------------------------------------------


def to_dspy_examples(examples: tuple[Example, ...]) -> list[Any]:
    import dspy

    return [dspy.Example(query=ex.text, intent=ex.label).with_inputs("query") for ex in examples]


ANSWER_QUOTE_CHARS = 80


def feedback_for(expected: str, answer: Any, labels: Sequence[str]) -> tuple[float, str]:
    """(score, feedback) for one answer under the suite's label rule."""
    text = None if answer is None else str(answer)
    match = match_label(text, labels)
    if match.label == expected:
        return 1.0, f"Correct: the answer names the expected intent {expected}."
    if match.label is not None:
        return 0.0, (f"Wrong: the expected intent is {expected}, but the answer named "
                     f"{match.label}.")
    if match.named:
        said = f"it named several intents ({', '.join(match.named)}) instead of one"
    elif text is None or not text.strip():
        said = "it was empty"
    else:
        quoted = text.strip().replace("\n", " ")
        if len(quoted) > ANSWER_QUOTE_CHARS:
            quoted = quoted[: ANSWER_QUOTE_CHARS - 3] + "..."
        said = f"it said {quoted!r}"
    return 0.0, (f"Wrong: the expected intent is {expected}, but the answer named no intent "
                 f"of the list ({said}).")


def make_feedback_metric(labels: Sequence[str]) -> Callable[..., Any]:
    """GEPA's five-argument metric: score 1/0 by `match_label`, with feedback text."""
    labels = tuple(labels)

    def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None,
               pred_trace: Any = None) -> Any:
        import dspy

        score, feedback = feedback_for(gold.intent, getattr(pred, "intent", None), labels)
        return dspy.Prediction(score=score, feedback=feedback)

    return metric


# --- counting and recording during the search ----------------------------------------------


def _calls(probe: UsageReader | None, phase: str = "optimize") -> int | None:
    if probe is None:
        return None
    try:
        usage = probe().get(phase)
    except Exception as exc:  # a missing count beats a failed search
        log.debug("usage read failed: %s", exc)
        return None
    return usage.calls if usage is not None else 0


class _LMCounter:
    """A dspy LM callback: requests, failures and (reflection LM) wire calls of one LM.

    Shared, not copied, when DSPy deep-copies a program (its counts stay one count).
    For the reflection LM it also reads the gateway's optimize-phase count around
    each call: GEPA reflects between evaluations, so that delta is the reflection's
    own wire calls, retries included.
    """

    def __init__(self, probe: UsageReader | None = None) -> None:
        self.probe = probe
        self.requests = 0
        self.failures = 0
        self.first_failure: str | None = None
        self.wire_calls: int | None = 0 if probe is not None else None
        self._started: dict[str, int | None] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> _LMCounter:
        return self

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        before = _calls(self.probe) if self.probe is not None else None
        with self._lock:
            self.requests += 1
            self._started[call_id] = before

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        after = _calls(self.probe) if self.probe is not None else None
        with self._lock:
            before = self._started.pop(call_id, None)
            if exception is not None:
                self.failures += 1
                if self.first_failure is None:
                    self.first_failure = f"{type(exception).__name__}: {str(exception)[:300]}"
            if self.wire_calls is not None:
                if before is None or after is None:
                    self.wire_calls = None  # one unreadable count spoils the total
                else:
                    self.wire_calls += after - before

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("on_"):  # dspy's other hooks (module, adapter, tool): nothing
            return lambda *args, **kwargs: None
        raise AttributeError(name)


@dataclass
class _ValEval:
    iteration: int
    candidate: int
    score: float  # 0..1, GEPA's average over the val split
    metric_calls: int  # GEPA's metric calls so far (its budget)
    lm_calls: int | None  # optimize-phase LM calls so far (gateway)
    reflection_calls: int  # reflection LM requests so far


@dataclass
class _Recorder:
    """GEPA callbacks: full val evaluations, proposals, acceptances, budget."""

    probe: UsageReader | None
    reflection: _LMCounter
    metric_calls: int = 0
    evaluations: list[_ValEval] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    skipped_perfect: int = 0

    def on_budget_updated(self, event: dict[str, Any]) -> None:
        self.metric_calls = int(event["metric_calls_used"])

    def on_valset_evaluated(self, event: dict[str, Any]) -> None:
        if event["iteration"] == 0:  # the seed's evaluation happens before the budget hook
            self.metric_calls = max(self.metric_calls, int(event["num_examples_evaluated"]))
        self.evaluations.append(_ValEval(
            iteration=int(event["iteration"]), candidate=int(event["candidate_idx"]),
            score=float(event["average_score"]), metric_calls=self.metric_calls,
            lm_calls=_calls(self.probe), reflection_calls=self.reflection.requests))

    def on_proposal_end(self, event: dict[str, Any]) -> None:
        for name, text in (event.get("new_instructions") or {}).items():
            self.proposals.append({"iteration": int(event["iteration"]), "component": name,
                                   "instruction": text})

    def on_candidate_accepted(self, event: dict[str, Any]) -> None:
        self.accepted += 1

    def on_candidate_rejected(self, event: dict[str, Any]) -> None:
        self.rejected += 1

    def on_evaluation_skipped(self, event: dict[str, Any]) -> None:
        self.skipped_perfect += 1

    def trajectory(self) -> tuple[TrajectoryPoint, ...]:
        """Best val score so far against optimize-phase LM calls and GEPA's metric calls."""
        points = []
        best: float | None = None
        for ev in self.evaluations:
            best = ev.score if best is None else max(best, ev.score)
            calls = ev.lm_calls if ev.lm_calls is not None else ev.metric_calls + \
                ev.reflection_calls
            label = "default program" if ev.iteration == 0 else f"candidate {ev.candidate}"
            points.append(TrajectoryPoint(lm_calls=calls, rollouts=ev.metric_calls, score=best,
                                          label=label))
        return tuple(points)


# --- the adapter ---------------------------------------------------------------------------


class DSPyGEPA:
    """dspy.GEPA on a `query -> intent` program whose instruction starts as the baseline."""

    spec: ClassVar[OptimizerSpec]

    def __init__(self, options: GepaOptions | None = None, /, **kwargs: Any) -> None:
        self.options = options if options is not None else GepaOptions.parse(
            kwargs, where="dspy_gepa options")

    def executor_options(self) -> dict[str, Any]:
        return self.options.executor_options()

    def plan(self, request: OptimizeRequest) -> GepaPlan:
        return plan_gepa(request.budget, request.mode, train_size=len(request.splits.train),
                         val_size=len(request.splits.val), seed=request.seed,
                         reflection_minibatch_size=self.options.reflection_minibatch_size)

    def check(self, request: OptimizeRequest) -> None:
        """Refuse a budget or mode GEPA cannot run, before the runner spends any LM call."""
        self.plan(request)

    def planned_calls(self, request: OptimizeRequest) -> int | None:
        """About how many LM calls the optimize phase spends (for live progress only):
        max_metric_calls task-model calls plus about one reflection call per accepted
        iteration (2b + V metric calls each; see benchmarks/matrix.toml). None for
        max_full_evals or a preset."""
        plan = self.plan(request)
        if plan.max_metric_calls is None:
            return None
        val = len(request.splits.val)
        per_iteration = 2 * plan.reflection_minibatch_size + val
        return plan.max_metric_calls + max(0, plan.max_metric_calls - val) // per_iteration

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        import dspy

        from mipro_bench.lm.dspy_lm import isolated_dspy_cache

        o = self.options
        splits = request.splits
        plan = self.plan(request)
        request.workdir.mkdir(parents=True, exist_ok=True)
        labels = tuple(splits.labels)
        probe = request.read_usage

        task_counter = _LMCounter()
        reflection_counter = _LMCounter(probe)
        task_lm = dspy_lm(request, "optimize", num_retries=o.num_retries)
        task_lm.callbacks = [task_counter]
        reflection_lm = dspy_lm(request, "optimize", num_retries=o.num_retries,
                                model=o.reflection_model, max_tokens=(
                                    o.reflection_max_tokens if o.reflection_max_tokens
                                    is not None else request.lm.settings.limit_for("reflection")))
        reflection_lm.callbacks = [reflection_counter]
        student = build_program(labels, BASELINE_PROMPT, o.module, o.output_type)
        student.set_lm(task_lm)
        recorder = _Recorder(probe=probe, reflection=reflection_counter)
        run_dir = request.workdir / GEPA_RUN_DIR
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(f"{run_dir} holds an earlier GEPA run (GEPA would resume it); "
                             "use a fresh workdir")

        optimizer = dspy.GEPA(
            metric=make_feedback_metric(labels),
            reflection_lm=reflection_lm,
            candidate_selection_strategy=o.candidate_selection_strategy,
            skip_perfect_score=o.skip_perfect_score,
            use_merge=o.use_merge,
            max_merge_invocations=o.max_merge_invocations,
            num_threads=o.num_threads,
            log_dir=str(run_dir),
            track_stats=True,
            warn_on_score_mismatch=False,
            gepa_kwargs={"callbacks": [recorder]},
            **plan.init_kwargs(),
        )
        request.say(
            "GEPA (instruction_only): "
            + (f"auto={plan.auto}" if plan.auto else
               f"max_full_evals={plan.max_full_evals}" if plan.max_full_evals else
               f"{plan.max_metric_calls} metric calls")
            + f", reflection minibatch {plan.reflection_minibatch_size}, valset {len(splits.val)}"
        )
        calls_before = _calls(probe)
        started = time.perf_counter()
        log_path = request.workdir / "dspy.log" if o.quiet else None
        with isolated_dspy_cache(request.workdir), quiet_output(log_path):
            compiled = optimizer.compile(
                student,
                trainset=to_dspy_examples(splits.train.examples),
                valset=to_dspy_examples(splits.val.examples),
            )
        seconds = time.perf_counter() - started
        allowed = allowed_item_errors(max(task_counter.requests, 1))
        if task_counter.failures > allowed:
            raise EvaluationFailed(
                f"GEPA search: {task_counter.failures} of {task_counter.requests} task-model "
                f"calls failed in the LM (first: {task_counter.first_failure})")

        prompt = prompt_of(compiled)
        if prompt.demos:
            raise AssertionError("GEPA returned demos; it should only evolve instructions")
        program_path = request.workdir / PROGRAM_FILE
        compiled.save(str(program_path))  # a native artifact for users; scoring uses `prompt`

        results = getattr(compiled, "detailed_results", None)
        best_val = None
        if results is not None and results.val_aggregate_scores:
            best_val = float(results.val_aggregate_scores[results.best_idx])
        optimize_calls = _calls(probe)
        reflection_calls = reflection_counter.wire_calls
        if reflection_calls is None:
            reflection_calls = reflection_counter.requests
        task_model_calls = (None if optimize_calls is None
                            else optimize_calls - (calls_before or 0) - reflection_calls)
        details: dict[str, Any] = {
            # The generic split the budget table shows (task-model vs reflection calls).
            "lm_calls_by_role": {"task_model": task_model_calls,
                                 "reflection": reflection_calls},
            "dspy_gepa": {
                **asdict(plan),
                "resolved_max_metric_calls": optimizer.max_metric_calls,
                "module": o.module,
                "output_type": o.output_type,
                "task_model": request.lm.settings.model,
                "reflection_model": o.reflection_model or request.lm.settings.model,
                "num_threads": o.num_threads,
                "candidate_selection_strategy": o.candidate_selection_strategy,
                "skip_perfect_score": o.skip_perfect_score,
                "use_merge": o.use_merge,
                "max_merge_invocations": o.max_merge_invocations,
                "reflection_calls": reflection_calls,
                "reflection_lm_requests": reflection_counter.requests,
                "task_model_calls": task_model_calls,
                "task_model_requests": task_counter.requests,
                "task_model_failures": task_counter.failures,
                "metric_calls": None if results is None else results.total_metric_calls,
                "num_full_val_evals": None if results is None else results.num_full_val_evals,
                "candidates": 0 if results is None else len(results.candidates),
                "best_candidate": None if results is None else results.best_idx,
                "val_aggregate_scores": [] if results is None else
                [float(s) for s in results.val_aggregate_scores],
                "accepted": recorder.accepted,
                "rejected": recorder.rejected,
                "skipped_perfect_minibatches": recorder.skipped_perfect,
                "proposals": recorder.proposals,
                "evaluations": [asdict(ev) for ev in recorder.evaluations],
                "calls_before_search": calls_before,
                "compile_seconds": round(seconds, 3),
            },
            "requested_seed": plan.requested_seed,
            "effective_seed": plan.effective_seed,
        }
        return OptimizeOutcome(
            prompt=prompt,
            best_val_score=best_val,
            trajectory=recorder.trajectory(),
            backend="dspy",
            details=details,
            artifacts={"program": Path(program_path)},
        )


SPEC = OptimizerSpec(
    name="dspy_gepa",
    slug="dspy_gepa",
    title="DSPy GEPA",
    modes=frozenset({"instruction_only"}),
    unsupported={"fewshot": FEWSHOT_REASON},
    budget_type=GepaBudget,
    options_type=GepaOptions,
    adapter="mipro_bench.optimizers.dspy_gepa:DSPyGEPA",
    native_executor="dspy_program",
    concurrency_options=("num_threads",),
    concurrency_flag="gepa-threads",
    only_flag="gepa-only",
    cli_shortcuts=(CliShortcut("metric-calls", "max_metric_calls",
                               "DSPy GEPA metric calls (one task-model call each)"),),
)
DSPyGEPA.spec = SPEC
