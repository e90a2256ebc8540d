"""The simulated LM policy: one deterministic answer per chat-completions request.

The gateway (mipro_bench.lm.gateway) serves `SimulatedLM.complete` over HTTP;
this module holds no I/O and reads no data: only the request. Given the same
(seed, request body) it returns the same bytes, at any temperature; the
temperature only changes how much a seeded draw may stray from the best
answer, and it is part of the body, so different temperatures give different
outputs (DSPy's proposer relies on that).

Request shapes recognised, first match wins:
0. Synth's ReAct proposer turns (synth-optimizers' `run_openenv_react_proposer`): tools
   that include `add_instruction_candidate` and `finish`, tool_choice "required" (or
   "auto"/absent). Answered with native tool calls that read the current instruction
   and the sampled train rows, add candidates from proposer.py, then finish
   (synth_proposer.py).
1. DSPy adapter prompts (ChatAdapter `[[ ## field ## ]]` and JSONAdapter; a
   system message with "Your input fields are:" / "Your output fields are:").
   Every output field is answered, by name and type:
   - a `Literal[...]` field, or one named intent/label/category/class/answer:
     the classifier's choice (labels from the Literal, else the prompt);
   - `reasoning`/`rationale`: one sentence naming the query words that matched;
   - GEPA's reflection (`new_instruction` from `current_instruction` and
     `examples_with_feedback`; any instruction output with a feedback input):
     the current instruction plus hint lines drawn from the feedback shown
     (reflection.py);
   - `proposed_instruction` (MIPROv2 GenerateSingleModuleInstruction) or any
     field with "instruction" in its name: a new instruction (proposer.py) from
     `basic_instruction`, the Query/Intent task demos and the hint lines of the
     dataset description;
   - `observations` (DatasetDescriptor[WithPriorObservations]): typical words
     per intent of the `Example({...})` reprs shown ("COMPLETE" when a prior
     already covers every intent); `summary` (ObservationSummarizer): two
     sentences plus the merged `intent: words` lines;
   - `program_description` / `module_description` (DescribeProgram/Module):
     a fixed sentence naming the fields; any other field: a short sentence,
     or a placeholder of its declared type (int 1, float 0.5, bool True, list).
   Chat format ends with `[[ ## completed ## ]]`; JSON when the request has a
   json response_format or the prompt is JSONAdapter's.
2. Requests with tools (tool_choice not "none"): a call of the forced tool (or
   the first), arguments `{"intent": "<label>"}` for the task app's
   `banking77_classify` (any enum property gets the classifier's choice over
   its enum), finish_reason "tool_calls".
3. GEPA's plain reflection template (reflection.py): the current instruction
   in a ``` block, "# Example N" sections with their feedback, "write a new
   instruction"; answered with the new instruction inside a ``` block.
4. Instruction proposals (Synth-style, mipro_bench.offline.synth_backend.proposer): no
   tools, the final user message contains the words "propose" and
   "instruction"; the current instruction follows a "Current instruction:"
   line (up to the next "Labelled examples" / "Examples" / "Query:" / "Tip:" /
   "Propose" line); examples are "Query: <text>" / "Intent: <label>" lines.
   The reply is only the new instruction text.
5. Classification prompts without tools (labels found per reading.py and a
   query): the label name as plain text.
6. Anything else: a short fixed sentence (never an error).

With probability `malformed_rate` (a seeded draw per request and choice) the
answer is garbage instead: plain text without tool calls, field markers or
JSON, so callers' parser fallbacks get exercised.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from mipro_bench.offline.sim.answer_form import answer_text, pins_format
from mipro_bench.offline.sim.classifier import Decision, build_index
from mipro_bench.offline.sim.dspy_shape import DSPyPrompt, FieldSpec, read_dspy
from mipro_bench.offline.sim.examples import labelled_examples
from mipro_bench.offline.sim.formats import (
    Choice,
    as_chat_text,
    chat_completion,
    dspy_chat_fields,
    dspy_json_fields,
    typed_value,
)
from mipro_bench.offline.sim.proposer import (
    DEFAULT_TASK,
    current_instruction,
    observations,
    propose_instruction,
    summarize,
)
from mipro_bench.offline.sim.reading import (
    ClassificationView,
    label_field,
    read_classification,
    string_enum,
)
from mipro_bench.offline.sim.reflection import (
    dspy_reflection,
    fenced,
    reflect_instruction,
    text_reflection,
)
from mipro_bench.offline.sim.request import ChatRequest, SimRequestError, parse_request
from mipro_bench.offline.sim.synth_proposer import is_synth_turn, synth_turn
from mipro_bench.offline.sim.text import content_words, stem

__all__ = ["SimRequestError", "SimulatedLM"]

GENERIC_ANSWER = (
    "This is a simulated language model. It answers classification prompts that name "
    "their labels, DSPy adapter prompts and instruction-proposal requests."
)
GARBAGE = (
    "Hmm, I am not sure which one you mean.",
    "Sorry, I cannot help with that request right now.",
    "The answer is probably one of those, hard to say",
    "...",
)
_PROPOSE = re.compile(r"\bpropos", re.IGNORECASE)
_INSTRUCTION = re.compile(r"\binstruction", re.IGNORECASE)
_SEED_MASK = (1 << 63) - 1


class SimulatedLM:
    """A deterministic chat model that classifies from what the prompt gives it."""

    def __init__(
        self, *, seed: int = 0, malformed_rate: float = 0.0, format_drift: bool = True
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if isinstance(malformed_rate, bool) or not isinstance(malformed_rate, int | float):
            raise ValueError(f"malformed_rate must be a number, got {malformed_rate!r}")
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError(f"malformed_rate must be between 0 and 1, got {malformed_rate!r}")
        self.seed = seed
        self.malformed_rate = float(malformed_rate)
        # Off only for tests of the classifier's evidence: the served LM always drifts.
        self.format_drift = bool(format_drift)
        self._seed_bytes = f"sim-lm:{seed}:".encode()

    def complete(self, body: dict) -> dict:
        """OpenAI chat.completion response dict (id, object, created=0, model, choices,
        usage) for an OpenAI chat-completions request body; SimRequestError if invalid."""
        request = parse_request(body)
        digest = hashlib.sha256(self._seed_bytes + request.key).digest()
        choices = []
        for index in range(request.n):
            # At temperature 0 every choice is the same answer, as with a real model.
            seed = _derive(digest, "choice", 0 if request.temperature == 0 else index)
            choice = self._choice(request, seed)
            choices.append(
                Choice(
                    content=choice.content,
                    tool_name=choice.tool_name,
                    tool_arguments=choice.tool_arguments,
                    tool_call_id=f"call_{digest.hex()[:20]}_{index}",
                    extra_calls=choice.extra_calls,
                )
            )
        return chat_completion(request, choices, response_id=f"chatcmpl-sim-{digest.hex()[:24]}")

    def _choice(self, request: ChatRequest, seed: int) -> Choice:
        if self.malformed_rate > 0 and _unit(seed, "malformed") < self.malformed_rate:
            return Choice(content=GARBAGE[_derive_int(seed, "garbage") % len(GARBAGE)])
        if request.tools and is_synth_turn(request):
            return synth_turn(request, seed)
        dspy = read_dspy(request)
        if dspy is not None:
            return _dspy_answer(request, dspy, seed, self.format_drift)
        tool = request.forced_tool()
        if tool is not None:
            return _tool_call(request, tool, seed, self.format_drift)
        reflection = text_reflection(request.last_user())
        if reflection is not None:
            return Choice(content=fenced(reflect_instruction(reflection, seed)))
        if _is_proposal(request):
            return Choice(content=_generic_proposal(request, seed))
        view = read_classification(request, None)
        if view.labels and view.query:
            decision = _decide(view, view.labels, request.temperature, seed)
            return Choice(content=_written(view, decision, self.format_drift))
        return Choice(content=GENERIC_ANSWER)


def _decide(
    view: ClassificationView, labels: tuple[str, ...], temperature: float, seed: int
) -> Decision:
    index = build_index(labels, view.hint_text, view.demos)
    return index.decide(view.query, temperature=temperature, seed=seed)


def _written(view: ClassificationView, decision: Decision, drift: bool = True) -> str:
    """The decision as the model writes it (answer_form.py: drift unless the format is pinned)."""
    if not drift:
        return decision.label
    return answer_text(
        decision, view.query, pinned=pins_format(view.instruction), demos=len(view.demos)
    )


def _tool_call(request: ChatRequest, tool: dict[str, Any], seed: int, drift: bool) -> Choice:
    function = tool["function"]
    params = function.get("parameters") or {}
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required = params.get("required")
    names = [n for n in props if not isinstance(required, list) or n in required]
    view = read_classification(request, None) if names else None
    arguments: dict[str, Any] = {}
    for name in names:
        spec = props[name] if isinstance(props[name], dict) else {}
        kind = spec.get("type", "string")
        enum = string_enum(spec)
        if view is not None and enum:
            arguments[name] = _written(view, _decide(view, enum, request.temperature, seed), drift)
        elif view is not None and kind == "string" and view.labels and view.query:
            arguments[name] = _written(
                view, _decide(view, view.labels, request.temperature, seed), drift
            )
        else:
            arguments[name] = typed_value(str(kind), GENERIC_ANSWER)
    return Choice(
        tool_name=function["name"],
        tool_arguments=json.dumps(arguments, ensure_ascii=False),
    )


def _dspy_answer(request: ChatRequest, dspy: DSPyPrompt, seed: int, drift: bool) -> Choice:
    spec_by_name = {s.name: s for s in dspy.signature.outputs}
    names = list(spec_by_name)
    for extra in request.json_fields:
        if extra not in spec_by_name:
            names.append(extra)
    target = label_field(dspy)
    decision: Decision | None = None
    view: ClassificationView | None = None
    if target is not None:
        view = read_classification(request, dspy)
        if view.labels:
            decision = _decide(view, view.labels, request.temperature, seed)
    values: dict[str, Any] = {}
    for name in names:
        spec = spec_by_name.get(name, FieldSpec(name, "str", ""))
        if target is not None and name == target.name:
            text = (
                _written(view, decision, drift)
                if decision is not None and view is not None
                else GENERIC_ANSWER
            )
            values[name] = text
            continue
        text = _field_text(name, dspy, decision, view, seed)
        values[name] = typed_value(spec.type, text)
    if request.json_mode or dspy.signature.json_outputs:
        return Choice(content=dspy_json_fields(values))
    return Choice(content=dspy_chat_fields({k: as_chat_text(v) for k, v in values.items()}))


def _field_text(
    name: str,
    dspy: DSPyPrompt,
    decision: Decision | None,
    view: ClassificationView | None,
    seed: int,
) -> str:
    key = name.lower()
    inputs = dspy.inputs
    if key in ("reasoning", "rationale"):
        return _reasoning(decision, view)
    reflection = dspy_reflection(dspy) if "instruction" in key else None
    if reflection is not None:
        return reflect_instruction(reflection, seed)
    if "instruction" in key:
        current = inputs.get("basic_instruction") or dspy.signature.instruction or DEFAULT_TASK
        if "basic_instruction" not in inputs:
            current = current_instruction("\n".join(inputs.values())) or DEFAULT_TASK
        texts = [v for k, v in inputs.items() if k != "basic_instruction"]
        pairs = [p for text in texts for p in labelled_examples(text)]
        return propose_instruction(current, pairs, texts, seed)
    if key == "observations":
        pairs = [p for text in inputs.values() for p in labelled_examples(text)]
        return observations(pairs, inputs.get("prior_observations", ""))
    if key == "summary":
        return summarize(inputs.get("observations") or "\n".join(inputs.values()))
    if key in ("program_description", "module_description"):
        fields = ", ".join(s.name for s in dspy.signature.inputs) or "its inputs"
        return (
            "It is a language-model program that reads the given inputs "
            f"({fields}) and answers with the requested fields; it appears designed to "
            "classify short texts into one of a fixed set of labels."
        )
    return f"Simulated answer for {name}."


def _reasoning(decision: Decision | None, view: ClassificationView | None) -> str:
    if decision is None or view is None:
        return "The request gives no labels to choose from, so I answer generically."
    matched = set(decision.matched)
    words = [
        w
        for w in dict.fromkeys(content_words(view.query))
        if stem(w) in matched or f"={w}" in matched
    ]
    if not words:
        return f"The query shares no clear cue with any intent; {decision.label} is the closest."
    return f"The query mentions {', '.join(words[:4])}, which points to {decision.label}."


def _is_proposal(request: ChatRequest) -> bool:
    text = request.last_user()
    return bool(_PROPOSE.search(text) and _INSTRUCTION.search(text))


def _generic_proposal(request: ChatRequest, seed: int) -> str:
    text = request.last_user()
    current = current_instruction(text) or DEFAULT_TASK
    pairs = [p for m in request.messages for p in labelled_examples(m.content)]
    return propose_instruction(current, pairs, [text], seed)


def _derive_int(seed: int, *parts: object) -> int:
    data = f"{seed}:{':'.join(map(str, parts))}".encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") & _SEED_MASK


def _derive(digest: bytes, *parts: object) -> int:
    data = digest + ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") & _SEED_MASK


def _unit(seed: int, *parts: object) -> float:
    """A uniform draw in [0, 1) from the seed: the malformed coin."""
    return _derive_int(seed, *parts) / float(1 << 63)
