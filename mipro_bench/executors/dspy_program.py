"""The DSPy-program executor: a prompt runs as the `query -> intent` program DSPy compiles.

The program is built from the prompt value alone (instruction as the
signature's instructions, demos on every predictor), so the prompt that
`optimize` returned and the same prompt read back from its record run the
same program. Answers are mapped with the suite's one label rule, items run
in threads through the gateway under the case's scope and phase, with
DSPy's cache private to the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from mipro_bench.case_context import CaseContext
from mipro_bench.data import Example, Split
from mipro_bench.errors import UsageError
from mipro_bench.labels import match_label
from mipro_bench.prompt import BASELINE_INSTRUCTION
from mipro_bench.results import Demo, ItemResult, OptimizedPrompt
from mipro_bench.typed_config import OptionsBase, check_at_least

MODULES = ("predict", "cot")
OUTPUT_TYPES = ("str", "literal")


DEFAULT_NUM_THREADS = 4  # evaluation threads of a DSPy program


@dataclass(frozen=True)
class DSPyProgramOptions(OptionsBase):
    """The options of an optimizer whose prompt runs as a DSPy program: the program's
    format, which is also the format this executor scores its prompts in, and how the
    program calls the LM. An optimizer's options extend it with their own knobs, so the
    format is declared, defaulted and checked once for every DSPy optimizer."""

    module: Literal["predict", "cot"] = "predict"
    output_type: Literal["str", "literal"] = "str"
    num_threads: int = DEFAULT_NUM_THREADS
    num_retries: int = 2
    quiet: bool = True

    def __post_init__(self) -> None:
        if self.module not in MODULES:
            raise UsageError(f"module must be one of {', '.join(MODULES)}, got {self.module!r}")
        if self.output_type not in OUTPUT_TYPES:
            raise UsageError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, "
                             f"got {self.output_type!r}")
        check_at_least("num_threads", self.num_threads, 1)
        check_at_least("num_retries", self.num_retries, 0)

    def executor_options(self) -> dict[str, Any]:
        """What the executor needs to score this optimizer's prompts in its own format."""
        return {f.name: getattr(self, f.name) for f in fields(DSPyProgramOptions)}


DEFAULT_OPTIONS: dict[str, Any] = DSPyProgramOptions().executor_options()


def build_signature(
    labels: tuple[str, ...], instruction: str = BASELINE_INSTRUCTION, output_type: str = "str"
) -> Any:
    """`query -> intent` over the intents, with the given instruction.

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
        demos = []
        for d in prompt.demos:
            fields = {"query": d.query, "intent": d.intent}
            if d.reasoning is not None:
                fields["reasoning"] = d.reasoning
            demos.append(dspy.Example(**fields).with_inputs("query"))
        for predictor in program.predictors():
            predictor.demos = list(demos)
    return program


def prompt_of(program: Any) -> OptimizedPrompt:
    """The instruction and demos a (compiled) program carries, in the record's terms."""
    predictor = program.predictors()[0]
    demos = []
    for demo in predictor.demos or ():
        get = demo.get if hasattr(demo, "get") else (lambda k, d=demo: getattr(d, k, None))
        query, intent, reasoning = get("query"), get("intent"), get("reasoning")
        if query is not None and intent is not None:
            demos.append(Demo(query=str(query), intent=str(intent),
                              reasoning=None if reasoning is None else str(reasoning)))
    return OptimizedPrompt(instruction=predictor.signature.instructions, demos=tuple(demos))


@contextlib.contextmanager
def quiet_output(log_path: Path | None) -> Iterator[None]:
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


def dspy_lm(request: CaseContext, phase: str, *, num_retries: int,
            model: str | None = None, max_tokens: int | None = None) -> Any:
    """A dspy.LM whose calls count under this case's scope and `phase` (its completion-token
    limit the answer kind's unless `max_tokens` says otherwise)."""
    from mipro_bench.lm.dspy_lm import make_dspy_lm

    kwargs: dict[str, Any] = {"num_retries": num_retries}
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if model is not None:
        kwargs["model"] = model if "/" in model else f"openai/{model}"
    return make_dspy_lm(request.lm, request.scope, phase, **kwargs)


class DSPyProgramExecutor:
    """Runs a prompt as a DSPy Predict/ChainOfThought program, one thread per item."""

    name: ClassVar[str] = "dspy_program"
    # The options that change what the LM is sent (the rest only change speed): part of
    # the key under which a session shares one baseline evaluation.
    default_options: ClassVar[Mapping[str, Any]] = DEFAULT_OPTIONS
    format_options: ClassVar[tuple[str, ...]] = ("module", "output_type")

    def can_express(self, prompt: OptimizedPrompt) -> bool:
        return True  # instructions and (query, intent) demos are both native here

    def evaluate(self, prompt: OptimizedPrompt, split: Split, request: CaseContext,
                 phase: str, *, max_errors: int, options: Mapping[str, Any] | None = None,
                 ) -> tuple[ItemResult, ...]:
        """One item's LM failure scores it wrong and keeps its `error` (the runner judges
        the error rate); an answer that names no intent is wrong (predicted None, no error).
        Threads finish every item, so `max_errors` is not needed to stop early here."""
        from mipro_bench.lm.dspy_lm import isolated_dspy_cache

        opts = {**DEFAULT_OPTIONS, **(options or {})}
        labels = tuple(request.splits.labels)
        program = build_program(labels, prompt, opts["module"], opts["output_type"])
        program.set_lm(dspy_lm(request, phase, num_retries=opts["num_retries"]))

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
            matched = match_label(answer, labels)
            return ItemResult(id=example.id, expected=example.label, predicted=matched.label,
                              correct=matched.label == example.label, match=matched.step)

        log_path = request.workdir / f"dspy_{phase}.log" if opts["quiet"] else None
        with (
            isolated_dspy_cache(request.workdir),
            quiet_output(log_path),
            ThreadPoolExecutor(max_workers=int(opts["num_threads"]),
                               thread_name_prefix=f"eval-{phase}") as pool,
        ):
            return tuple(pool.map(run_one, split.examples))
