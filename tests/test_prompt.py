"""The baseline prompt is one source of truth for the task app and Synth's initial_prompt."""

from __future__ import annotations

from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, initial_prompt

LABELS = ("card_arrival", "pin_blocked")


def test_initial_prompt_patterns_reproduce_the_messages() -> None:
    messages = build_messages(BASELINE_INSTRUCTION, "Where is my card?", LABELS)
    table = initial_prompt(LABELS)
    filled = [
        m["pattern"]
        .replace("{query}", "Where is my card?")
        .replace("{available_intents}", "\n".join(LABELS))
        for m in sorted(table["messages"], key=lambda m: m["order"])
    ]
    assert filled == [m["content"] for m in messages]
    assert [m["role"] for m in table["messages"]] == [m["role"] for m in messages]
