"""A plain-text "propose an instruction" prompt, as a text-only meta-model client sends it.

The simulated LM answers such prompts (any proposer that is not DSPy's, GEPA's or
Synth's tool-calling one); the sim's accuracy tests and benchmarks/sim_behaviour.py
drive its shared proposal model through this shape. The local Synth backend used to
send it; Synth's published MIPROv2 now proposes through native tool calls instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelledExample:
    query: str
    intent: str


def proposal_messages(instruction: str, examples: Sequence[LabelledExample], tip: str, *,
                      task: str) -> list[dict[str, str]]:
    lines = [f"Task: {task}", "", "Current instruction:", instruction, "",
             "Labelled examples from the training data:"]
    for ex in examples:
        lines += [f"Query: {ex.query}", f"Intent: {ex.intent}", ""]
    lines += [f"Tip: {tip}", "",
              "Propose one new instruction for this task that will make the model choose the "
              "correct intent more often. Reply with the instruction text only, no preamble."]
    return [{"role": "system",
             "content": "You are an expert prompt engineer. You improve the instruction "
                        "(system prompt) of a language-model classification task."},
            {"role": "user", "content": "\n".join(lines)}]


_PREAMBLE = re.compile(
    r"^\s*(?:here(?:'s| is) (?:the |a |my )?(?:new |improved |proposed )?instruction[:.]?|"
    r"(?:new |improved |proposed )?instruction:)\s*", re.IGNORECASE)


def clean_instruction(reply: str) -> str:
    """The instruction in a reply: preamble, code fences and wrapping quotes removed."""
    text = re.sub(r"^```[a-zA-Z]*\n?|\n?```$", "", reply.strip()).strip()
    text = _PREAMBLE.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise ValueError("empty instruction")
    return text
