"""Instruction proposals: the meta model writes new instructions from examples.

MIPRO's proposer step, instruction-only: each proposal shows the meta model
the current instruction and a few labelled training examples (a different
seeded sample each time, plus one of MIPRO's style tips, so the candidates
differ), and asks for one new instruction; the reply is the instruction text.
Proposals are LM calls, not rollouts: they never count against the rollout
budget (they are counted as LM calls, phase `optimize`).

The prompt is plain text a real model understands; the simulated LM
recognises the same request by its shape (the current instruction, `Query:` /
`Intent:` example lines, and the words "Propose" and "instruction").
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

# MIPROv2's proposer tips, shortened: one per proposal, for diversity.
TIPS: tuple[str, ...] = (
    "Keep the instruction simple and clear.",
    "Be creative: find a fresh way to frame the task.",
    "Describe the distinctions between similar intents the examples reveal.",
    "Make the instruction detailed and specific about the cues in the query.",
    "Write it as a persona the model should adopt.",
    "Stress that mistakes are costly: the customer is routed by this answer.",
)

MAX_INSTRUCTION_CHARS = 4000

Complete = Callable[[list[dict[str, str]], float], Awaitable[str]]


class ProposalError(ValueError):
    """The meta model's reply held no usable instruction."""


@dataclass(frozen=True)
class LabelledExample:
    query: str
    intent: str
    seed: int | None = None  # the task-app seed it came from, when known


@dataclass(frozen=True)
class Proposal:
    instruction: str
    seeds: frozenset[int]  # seeds of the examples the meta model was shown


def proposal_messages(
    instruction: str, examples: Sequence[LabelledExample], tip: str, *, task: str
) -> list[dict[str, str]]:
    lines = [
        f"Task: {task}",
        "",
        "Current instruction:",
        instruction,
        "",
        "Labelled examples from the training data:",
    ]
    for ex in examples:
        lines += [f"Query: {ex.query}", f"Intent: {ex.intent}", ""]
    lines += [
        f"Tip: {tip}",
        "",
        "Propose one new instruction for this task that will make the model choose the "
        "correct intent more often. Reply with the instruction text only, no preamble.",
    ]
    return [
        {
            "role": "system",
            "content": "You are an expert prompt engineer. You improve the instruction "
                       "(system prompt) of a language-model classification task.",
        },
        {"role": "user", "content": "\n".join(lines)},
    ]


_PREAMBLE = re.compile(
    r"^\s*(?:here(?:'s| is) (?:the |a |my )?(?:new |improved |proposed )?instruction[:.]?|"
    r"(?:new |improved |proposed )?instruction:)\s*",
    re.IGNORECASE,
)


def clean_instruction(reply: str) -> str:
    """The instruction in a reply: preamble, code fences and wrapping quotes removed."""
    text = reply.strip()
    text = re.sub(r"^```[a-zA-Z]*\n?|\n?```$", "", text).strip()
    text = _PREAMBLE.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise ProposalError("the meta model answered with an empty instruction")
    return text[:MAX_INSTRUCTION_CHARS]


@dataclass(frozen=True)
class ProposerSettings:
    num_candidates: int = 6
    examples_per_proposal: int = 8
    temperature: float = 1.0
    task: str = "Classify a banking customer's query into exactly one intent."


async def propose(
    complete: Complete,
    *,
    instruction: str,
    pool: Sequence[LabelledExample],
    settings: ProposerSettings,
    rng: random.Random,
    tip_offset: int = 0,
    exclude: Sequence[str] = (),
    on_error: Callable[[int, BaseException], None] | None = None,
) -> list[Proposal]:
    """Up to `num_candidates` distinct new instructions (never `instruction` or `exclude`).

    The calls run concurrently; the example samples and tips are drawn first, in
    order, so the same seed gives the same prompts. A failed or empty call is
    reported through `on_error` and skipped: a flaky meta model costs candidates.
    """
    prompts, shown = [], []
    for index in range(settings.num_candidates):
        k = min(settings.examples_per_proposal, len(pool))
        examples = rng.sample(list(pool), k) if k else []
        tip = TIPS[(tip_offset + index) % len(TIPS)]
        prompts.append(proposal_messages(instruction, examples, tip, task=settings.task))
        shown.append(frozenset(e.seed for e in examples if e.seed is not None))

    async def one(index: int, messages: list[dict[str, str]]) -> str | None:
        try:
            return clean_instruction(await complete(messages, settings.temperature))
        except Exception as exc:  # one proposal's failure is not the job's
            if on_error is not None:
                on_error(index, exc)
            return None

    replies = await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts)))
    out: list[Proposal] = []
    seen = {instruction.strip(), *(e.strip() for e in exclude)}
    for text, seeds in zip(replies, shown, strict=True):
        if text is not None and text.strip() not in seen:
            seen.add(text.strip())
            out.append(Proposal(text, seeds))
    return out
