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

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from mipro_bench.data import Example, Split
from mipro_bench.labels import map_to_label
from mipro_bench.optimizers.base import (
    BASELINE_PROMPT,
    Budget,
    OptimizeOutcome,
    OptimizeRequest,
    UsageError,
    UsageReader,
)
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import (
    MODES,
    Demo,
    ItemResult,
    Mode,
    OptimizedPrompt,
    TrajectoryPoint,
)

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 20  # the earlier script's --trials default
AUTO_PRESETS = ("light", "medium", "heavy")
DEFAULT_MINIBATCH_SIZE = 35  # MIPROv2.compile's default
# DSPy's auto presets only minibatch a valset larger than this (MIN_MINIBATCH_SIZE);
# below it a minibatch saves little and the periodic full evaluations cost more.
MIN_MINIBATCH_VALSET = 50
MIN_CANDIDATES = 3  # fewer and DSPy builds only the zero-shot demo set: one instruction
MODULES = ("predict", "cot")
OUTPUT_TYPES = ("str", "literal")
PROGRAM_FILE = "dspy_program.json"


class EvaluationFailed(RuntimeError):
    """Too many items of one evaluation failed in the LM (the run is failed, not scored)."""


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
    budget: Budget,
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


# --- the DSPy program -------------------------------------------------------------------


def build_signature(
    labels: tuple[str, ...], instruction: str = BASELINE_INSTRUCTION, output_type: str = "str"
) -> Any:
    """`query -> intent` over the intents, with the baseline instruction.

    By default the output is a plain string listing the intents in its description, so the
    parsing is ours: `map_to_label` (the task app's rule) accepts "Card Arrival" where a
    `Literal` output would make DSPy reject it. `output_type="literal"` gives the typed
    Literal signature of DSPy's own classification tutorial instead.
    """
    import dspy

    if output_type == "literal":
        intent_type: Any = Literal[tuple(labels)]  # type: ignore[valid-type]
        desc = "the customer's intent"
    else:
        intent_type = str
        desc = "exactly one of these intents, spelled as listed: " + ", ".join(labels)
    fields = {
        "query": (str, dspy.InputField(desc="the customer's message to the bank")),
        "intent": (intent_type, dspy.OutputField(desc=desc)),
    }
    return dspy.make_signature(fields, instruction, signature_name="Banking77Intent")


def build_program(
    labels: tuple[str, ...], prompt: OptimizedPrompt, module: str, output_type: str = "str"
) -> Any:
    """A fresh program carrying `prompt`'s instruction and demos (no LM attached)."""
    import dspy

    signature = build_signature(labels, prompt.instruction, output_type)
    program = dspy.ChainOfThought(signature) if module == "cot" else dspy.Predict(signature)
    if prompt.demos:
        demos = [
            dspy.Example(query=d.query, intent=d.intent).with_inputs("query") for d in prompt.demos
        ]
        for predictor in program.predictors():
            predictor.demos = list(demos)
    return program


def prompt_of(program: Any) -> OptimizedPrompt:
    """The instruction and demos a (compiled) program carries, in the record's terms."""
    predictor = program.predictors()[0]
    demos = []
    for demo in predictor.demos or ():
        get = demo.get if hasattr(demo, "get") else (lambda k, d=demo: getattr(d, k, None))
        query, intent = get("query"), get("intent")
        if query is not None and intent is not None:
            demos.append(Demo(query=str(query), intent=str(intent)))
    return OptimizedPrompt(instruction=predictor.signature.instructions, demos=tuple(demos))


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


@contextlib.contextmanager
def _quiet(log_path: Path | None) -> Iterator[None]:
    """Send DSPy's prints and tqdm bars to a log file in the workdir, not the user's terminal."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("a", encoding="utf-8") as fh,
        contextlib.redirect_stdout(fh),
        contextlib.redirect_stderr(fh),
    ):
        yield


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

    name: ClassVar[str] = "dspy_miprov2"
    slug: ClassVar[str] = "dspy_mipro"
    supported_modes: ClassVar[frozenset[Mode]] = frozenset(MODES)

    def __init__(
        self,
        *,
        module: Literal["predict", "cot"] = "predict",
        output_type: Literal["str", "literal"] = "str",
        num_threads: int = 4,
        prompt_model: str | None = None,
        fewshot_aware_proposer: bool | None = None,
        minibatch_full_eval_steps: int = 5,
        max_item_error_rate: float = 0.1,
        num_retries: int = 2,
        quiet: bool = True,
    ) -> None:
        if module not in MODULES:
            raise UsageError(f"module must be one of {', '.join(MODULES)}, got {module!r}")
        if output_type not in OUTPUT_TYPES:
            raise UsageError(
                f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}"
            )
        if num_threads < 1:
            raise UsageError(f"num_threads must be at least 1, got {num_threads}")
        self.module = module
        self.output_type = output_type
        self.num_threads = num_threads
        self.prompt_model = prompt_model
        self.fewshot_aware_proposer = fewshot_aware_proposer
        self.minibatch_full_eval_steps = minibatch_full_eval_steps
        self.max_item_error_rate = max_item_error_rate
        self.num_retries = num_retries
        self.quiet = quiet
        # The compiled program of each optimized prompt, so `evaluate` runs exactly what
        # MIPROv2 returned (not a rebuild from the record's text).
        self._programs: dict[OptimizedPrompt, Any] = {}

    # -- LMs --

    def _lm(self, request: OptimizeRequest, phase: str, model: str | None = None) -> Any:
        from mipro_bench.lm.dspy_lm import make_dspy_lm

        kwargs: dict[str, Any] = {"num_retries": self.num_retries}
        if model is not None:
            kwargs["model"] = model if "/" in model else f"openai/{model}"
        return make_dspy_lm(request.lm, request.scope, phase, **kwargs)

    def _log_path(self, request: OptimizeRequest, name: str) -> Path | None:
        return request.workdir / name if self.quiet else None

    # -- Optimizer protocol --

    def plan(self, request: OptimizeRequest) -> MiproPlan:
        return plan_mipro(
            request.budget,
            request.mode,
            val_size=len(request.splits.val),
            seed=request.seed,
            fewshot_aware_proposer=self.fewshot_aware_proposer,
            minibatch_full_eval_steps=self.minibatch_full_eval_steps,
        )

    def check(self, request: OptimizeRequest) -> None:
        """Refuse a budget MIPROv2 would misread, before the runner spends any LM call."""
        self.plan(request)

    def optimize(self, request: OptimizeRequest) -> OptimizeOutcome:
        from mipro_bench.lm.dspy_lm import isolated_dspy_cache

        splits = request.splits
        plan = self.plan(request)
        request.workdir.mkdir(parents=True, exist_ok=True)
        labels = tuple(splits.labels)
        student = build_program(labels, BASELINE_PROMPT, self.module, self.output_type)
        task_lm = self._lm(request, "optimize")
        prompt_lm = self._lm(request, "optimize", self.prompt_model)
        probe = request.read_usage

        optimizer_cls = _mipro_class()
        optimizer = optimizer_cls(
            metric=make_metric(labels),
            prompt_model=prompt_lm,
            task_model=task_lm,
            num_threads=self.num_threads,
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
        with isolated_dspy_cache(request.workdir), _quiet(self._log_path(request, "dspy.log")):
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
                    f"(first: {failures[0].error})"
                )

        prompt = prompt_of(compiled)
        if request.mode == "instruction_only" and prompt.demos:
            raise AssertionError("instruction_only run returned demos; MIPROv2 plan is wrong")
        self._programs[prompt] = compiled
        program_path = request.workdir / PROGRAM_FILE
        compiled.save(str(program_path))

        trial_logs = getattr(compiled, "trial_logs", {}) or {}
        score = getattr(compiled, "score", None)
        details: dict[str, Any] = {
            "dspy": {
                **{k: v for k, v in asdict(plan).items()},
                "module": self.module,
                "output_type": self.output_type,
                "prompt_model": self.prompt_model or request.lm.settings.model,
                "task_model": request.lm.settings.model,
                "num_threads": self.num_threads,
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

    def evaluate(
        self, prompt: OptimizedPrompt, split: Split, request: OptimizeRequest, phase: str
    ) -> tuple[ItemResult, ...]:
        """Run the program for `prompt` on every item, in threads, through the gateway.

        One item's LM failure scores it wrong and is kept in its `error`; more failures
        than `max_item_error_rate` of the split fail the evaluation (an outage, not a score).
        An answer that names no intent is simply wrong (predicted None, no error).
        """
        labels = tuple(request.splits.labels)
        known = self._programs.get(prompt)
        program = (known.deepcopy() if known is not None
                   else build_program(labels, prompt, self.module, self.output_type))
        program.set_lm(self._lm(request, phase))

        def run_one(example: Example) -> ItemResult:
            from dspy.utils.exceptions import AdapterParseError

            try:
                answer = program(query=example.text).intent
            except AdapterParseError:
                answer = None
            except Exception as exc:
                return ItemResult(
                    id=example.id, expected=example.label, predicted=None, correct=False,
                    error=f"{type(exc).__name__}: {str(exc)[:300]}",
                )
            predicted = map_to_label(answer, labels)
            return ItemResult(
                id=example.id, expected=example.label, predicted=predicted,
                correct=predicted == example.label,
            )

        from mipro_bench.lm.dspy_lm import isolated_dspy_cache

        with (
            isolated_dspy_cache(request.workdir),
            _quiet(self._log_path(request, f"dspy_{phase}.log")),
            ThreadPoolExecutor(max_workers=self.num_threads,
                               thread_name_prefix=f"eval-{phase}") as pool,
        ):
            items = tuple(pool.map(run_one, split.examples))
        errors = [item for item in items if item.error]
        allowed = math.floor(self.max_item_error_rate * len(items))
        if len(errors) > allowed:
            raise EvaluationFailed(
                f"{phase}: {len(errors)}/{len(items)} items failed in the LM "
                f"(more than {self.max_item_error_rate:.0%}); first: {errors[0].error}"
            )
        return items
