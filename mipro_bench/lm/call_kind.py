"""What an LM call is for, read from the request, and the completion-token limit it gets.

The gateway sees every call of a run whatever the client, so the bound on what
one call may generate is applied there, once: the request's own `max_tokens` /
`max_completion_tokens` is lowered to the limit of its kind (or set when the
client sent none). The kinds (`LMSettings.token_limits`):
- tool_call: the request carries tools (the task app's forced `banking77_classify`);
- proposer: an instruction proposal (DSPy's grounded proposer and its dataset /
  program summaries, a "propose ... instruction" request, or a turn of Synth's ReAct
  proposer: native tools among which it may add instruction candidates);
- reflection: an optimizer reading its own traces (GEPA's reflective mutation prompt, a
  DSPy signature with a reflection field, or a request that asks to reflect);
- answer: everything else (a DSPy program's classification fields).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mipro_bench.lm.settings import CallKind

# DSPy MIPROv2's proposer signatures (GenerateSingleModuleInstruction, DatasetDescriptor,
# DescribeProgram, DescribeModule) name these output fields in the system message.
_PROPOSER_FIELDS = re.compile(
    r"\b(proposed_instruction|program_description|module_description|observations)\b")
_REFLECTION = re.compile(r"\b(reflection|reflect on|reflective)\b", re.IGNORECASE)
# GEPA's reflective mutation prompt (gepa.strategies.instruction_proposal's template).
_GEPA = re.compile(r"I provided an assistant with the following instructions|"
                   r"write a new instruction for the assistant", re.IGNORECASE)
_PROPOSE = re.compile(r"\bpropos", re.IGNORECASE)
_INSTRUCTION = re.compile(r"\binstruction", re.IGNORECASE)
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
# Tools only Synth's MIPROv2 proposer offers (synth_optimizers.miprov2 proposer_openenv).
_PROPOSER_TOOLS = frozenset({"add_instruction_candidate", "add_instruction_transform"})


def _tool_names(tools: Any) -> set[str]:
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, Mapping) and isinstance(part.get("text"), str))
    return ""


def call_kind(body: Mapping[str, Any]) -> CallKind:
    """The kind of a chat-completions request (see the module docstring)."""
    if body.get("tools"):
        return "proposer" if _tool_names(body["tools"]) & _PROPOSER_TOOLS else "tool_call"
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    system = " ".join(_text(m) for m in messages if m.get("role") in ("system", "developer"))
    last_user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    if _REFLECTION.search(system) or _REFLECTION.search(last_user[:2000]) \
            or _GEPA.search(last_user):
        return "reflection"
    if _PROPOSER_FIELDS.search(system) or (_PROPOSE.search(last_user)
                                           and _INSTRUCTION.search(last_user)):
        return "proposer"
    return "answer"


def capped(body: dict[str, Any], limit: int, *, legacy_field: bool = False,
           ) -> tuple[dict[str, Any], bool]:
    """`body` with its completion-token limit at most `limit` (set when absent); and whether
    the client's own limit was lowered. `legacy_field`: also set `max_tokens` when the
    client sent only `max_completion_tokens` (litellm does for OpenAI-looking names), for
    servers that read only the older field: llama-cpp-python ignores the newer one and
    generates up to its context size (a SmolLM2 proposer call then ran for minutes)."""
    present = [f for f in TOKEN_FIELDS if isinstance(body.get(f), int)
               and not isinstance(body.get(f), bool)]
    if not present:
        return {**body, "max_tokens": limit}, False
    lowered = any(body[f] > limit for f in present)
    out = {**body, **{f: min(body[f], limit) for f in present}} if lowered else body
    if legacy_field and "max_tokens" not in present:
        out = {**out, "max_tokens": out["max_completion_tokens"]}
    return out, lowered


def is_truncated(response: Mapping[str, Any]) -> bool:
    """Whether any choice stopped at the token limit (finish_reason "length")."""
    choices = response.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, Mapping) and c.get("finish_reason") == "length" for c in choices)
