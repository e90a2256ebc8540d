"""The baseline prompt: the one source of truth both optimizers start from.

The task app sends exactly these messages; the Synth job's `initial_prompt`
is derived from the same templates (so an interceptor can find and swap the
instruction), and the DSPy signature's instructions are the same text. If the
two sides started from different prompts, "baseline" would mean two things.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BASELINE_INSTRUCTION = (
    "You are a banking customer-support assistant. Classify the customer's query "
    "into exactly one of the available intents."
)

TOOL_NAME = "banking77_classify"

# The user message keeps the fixed intent list first and the query last, so a
# local server with prefix caching (llama.cpp) reuses the long shared prefix.
USER_TEMPLATE = (
    "Available intents:\n{intents}\n\n"
    "Customer query: {query}\n\n"
    "Call banking77_classify with the single best intent."
)


def format_intents(labels: Sequence[str]) -> str:
    return "\n".join(labels)


def build_messages(instruction: str, query: str, labels: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages of one classification call (system instruction + user query)."""
    return [
        {"role": "system", "content": instruction},
        {
            "role": "user",
            "content": USER_TEMPLATE.format(intents=format_intents(labels), query=query),
        },
    ]


def classify_tool(labels: Sequence[str]) -> dict[str, Any]:
    """The forced tool the task app asks for (OpenAI tools format)."""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Report the single intent of the customer's banking query.",
            "parameters": {
                "type": "object",
                "properties": {
                    "intent": {
                        "type": "string",
                        "description": "One of the available intents, spelled exactly.",
                        "enum": list(labels),
                    }
                },
                "required": ["intent"],
            },
        },
    }


def tool_choice() -> dict[str, Any]:
    return {"type": "function", "function": {"name": TOOL_NAME}}


def initial_prompt(labels: Sequence[str], instruction: str = BASELINE_INSTRUCTION) -> dict:
    """Synth's `initial_prompt` table: the same messages as patterns with wildcards."""
    return {
        "id": "banking77_baseline",
        "name": "Banking77 intent classification",
        "messages": [
            {"role": "system", "order": 0, "pattern": instruction},
            {
                "role": "user",
                "order": 1,
                "pattern": USER_TEMPLATE.replace("{intents}", "{available_intents}"),
            },
        ],
        "wildcards": {"query": "REQUIRED", "available_intents": "OPTIONAL"},
    }
