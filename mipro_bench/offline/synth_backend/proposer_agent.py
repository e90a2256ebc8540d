"""The agent that sends Synth's proposer turns through the suite's LM gateway.

Synth's phase-3 loop takes any object with the package's agent protocol
(`next_turn(objective=, runtime_tools=, messages=, proposer_state=, config=)`).
Its built-in agents post to hard-coded provider URLs; this one calls the
package's own OpenAI-compatible turn function (`_next_action_via_openai_compatible`:
Synth's request body, tools, `tool_choice: "required"` and reply parsing) with the
gateway's URL for this case's scope and `optimize` phase, so every turn is
counted, limited, journaled and replayable like any other LM call.

One thing is rewritten on the way: the loop tells the proposer where its run
ledger lives (absolute paths under the case's working directory). Those paths
differ between two runs of the same case (another results directory, a replay
in CI), which would make the requests differ, so journals could not replay
them and the simulated LM (seeded from the request) would answer differently.
The agent shows the model a fixed virtual root instead and maps it back in the
tool calls it returns, so the tools still read the real files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synth_optimizers.miprov2.core import proposer_openenv as openenv

# What the proposer is shown instead of the case's working directory.
VIRTUAL_ROOT = "/mipro-bench/case"


def _swap(value: Any, old: str, new: str) -> Any:
    """`value` (JSON-like) with every occurrence of `old` in its strings replaced."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(_swap(v, old, new) for v in value)
    if isinstance(value, Mapping):
        return {k: _swap(v, old, new) for k, v in value.items()}
    return value


@dataclass
class GatewayProposerAgent:
    """Synth's OpenAI-compatible proposer turn, sent to `chat_url` (the LM gateway)."""

    chat_url: str  # .../v1/chat/completions under this case's scope, phase optimize
    api_key: str | None
    model: str
    workdir: str  # the real root the loop's paths start with
    temperature: float = 1.0
    max_tokens: int = 512
    timeout_s: float = 120.0
    on_turn: Callable[[str | None], None] | None = None  # (error or None) after each turn
    turns: int = field(default=0, init=False)

    async def next_turn(self, *, objective: str, runtime_tools: list[dict[str, Any]],
                        messages: list[dict[str, Any]], proposer_state: Mapping[str, Any],
                        config: openenv.MiproOpenEnvProposerConfig | None = None,
                        ) -> openenv.MiproOpenEnvTurnResponse:
        del objective, proposer_state  # in the messages already, as for Synth's own agents
        self.turns += 1
        try:
            turn = await openenv._next_action_via_openai_compatible(
                provider_url=self.chat_url,
                api_key=self.api_key or "unused",
                model=self.model,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                max_tokens_field="max_completion_tokens",
                timeout_s=self.timeout_s,
                runtime_tools=_swap(runtime_tools, self.workdir, VIRTUAL_ROOT),
                messages=_swap(messages, self.workdir, VIRTUAL_ROOT),
                config=config or openenv.MiproOpenEnvProposerConfig(),
            )
        except Exception as exc:  # the loop records it as a no-op turn and goes on
            if self.on_turn is not None:
                self.on_turn(str(exc)[:500])
            raise
        if self.on_turn is not None:
            self.on_turn(None)
        return self._real_paths(turn)

    async def next_action(self, *, objective: str, runtime_tools: list[dict[str, Any]],
                          transcript: list[dict[str, Any]], proposer_state: Mapping[str, Any],
                          ) -> openenv.MiproOpenEnvAction:
        """The protocol's single-action form, built as Synth's own OpenAI agent builds it."""
        turn = await self.next_turn(
            objective=objective, runtime_tools=runtime_tools,
            messages=openenv._conversation_messages(
                system_prompt=openenv._build_openenv_research_prompt(runtime_tools),
                initial_user_message=openenv._orientation_user_message(
                    objective=objective, proposer_state=proposer_state, transcript=transcript),
                transcript=transcript),
            proposer_state=proposer_state)
        if turn.tool_calls:
            return turn.tool_calls[0].action
        return openenv.MiproOpenEnvAction(name="finish", arguments={"reason": "no_tool_calls"})

    def _real_paths(self, turn: openenv.MiproOpenEnvTurnResponse
                    ) -> openenv.MiproOpenEnvTurnResponse:
        """The model's tool calls with the virtual root mapped back to the real one."""
        def real(value: Any) -> Any:
            return _swap(value, VIRTUAL_ROOT, self.workdir)

        message = dict(turn.assistant_message)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [_real_call(c, real) for c in calls]
        return openenv.MiproOpenEnvTurnResponse(
            assistant_message=message,
            tool_calls=tuple(
                openenv.MiproOpenEnvToolInvocation(
                    tool_call_id=inv.tool_call_id,
                    action=openenv.MiproOpenEnvAction(name=inv.action.name,
                                                      arguments=real(inv.action.arguments)))
                for inv in turn.tool_calls),
            usage=turn.usage,
            provider_trace=turn.provider_trace,
        )


def _real_call(call: Any, real: Callable[[Any], Any]) -> Any:
    """One OpenAI tool call of the assistant message, its JSON arguments mapped by `real`."""
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str) and VIRTUAL_ROOT in arguments:
        try:
            function["arguments"] = json.dumps(real(json.loads(arguments)))
        except ValueError:
            function["arguments"] = real(arguments)
    return {**call, "function": function}
