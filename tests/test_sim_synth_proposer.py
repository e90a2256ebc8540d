"""The simulated LM drives Synth's own ReAct instruction proposer (synth-optimizers 0.1.1).

Every session here is the package's REAL loop (`run_openenv_react_proposer`, and once
`run_phase3_loop`) with an agent whose turns are the package's own
`_next_action_via_openai_compatible`, posted to the simulated LM: in-process through
the respx router, and once over HTTP through the served gateway. Nothing of the loop
is imitated, so what the sessions show (reads before writes, candidates added, the
stop reason) is what the package does with a model that answers this way.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

core = pytest.importorskip("synth_optimizers.miprov2.core")
from synth_optimizers.miprov2.core import proposer_openenv as po  # noqa: E402

from mipro_bench.lm.gateway import GatewayHandle  # noqa: E402
from mipro_bench.offline.sim import SimulatedLM  # noqa: E402
from mipro_bench.offline.sim.proposer import HINTS_HEADER  # noqa: E402
from mipro_bench.prompt import BASELINE_INSTRUCTION  # noqa: E402

MODULE = "system_prompt"
COMPONENT = f"module:{MODULE}:instruction"  # program_compiler.instruction_component_key
ROWS = [
    ("my new card still has not arrived, where is it", "card_arrival"),
    ("how long until the card gets delivered to me", "card_delivery_estimate"),
    ("someone stole my wallet with the card inside", "lost_or_stolen_card"),
    ("what rate do you use to exchange euros to dollars", "exchange_rate"),
    ("my top up did not go through and failed again", "top_up_failed"),
    ("I typed the wrong pin three times and now it is blocked", "pin_blocked"),
]
HINT = re.compile(r"^([A-Za-z]\w*_\w+\??): (.+)$", re.MULTILINE)


def train_rows(pairs: list[tuple[str, str]] = ROWS) -> list[dict[str, Any]]:
    """Rows in the shape the backend's grounding hook supplies them."""
    return [
        {"row_id": f"train-{i}", "seed": i, "query": query, "intent": intent}
        for i, (query, intent) in enumerate(pairs)
    ]


class SimAgent:
    """The agent protocol, each turn sent by the package's own OpenAI-compatible call."""

    def __init__(self, url: str, api_key: str = "sim") -> None:
        self.url = url
        self.api_key = api_key
        self.bodies: list[dict[str, Any]] = []

    async def next_turn(
        self,
        *,
        objective: str,
        runtime_tools: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        proposer_state: Mapping[str, Any],
        config: po.MiproOpenEnvProposerConfig | None = None,
    ) -> po.MiproOpenEnvTurnResponse:
        turn = await po._next_action_via_openai_compatible(
            provider_url=self.url,
            api_key=self.api_key,
            model="gpt-4.1-nano",
            temperature=0.0,
            max_tokens=2048,
            max_tokens_field="max_completion_tokens",
            timeout_s=30.0,
            runtime_tools=runtime_tools,
            messages=messages,
            config=config or po.MiproOpenEnvProposerConfig(),
        )
        self.bodies.append(dict(turn.provider_trace.get("request") or {}))
        return turn

    async def next_action(self, **_: Any) -> po.MiproOpenEnvAction:
        raise NotImplementedError("the loop uses next_turn")


def compiled_space() -> Any:
    template = core.MiproProgramTemplate(
        program_id="banking77",
        modules=(core.MiproModuleTemplate(
            module_id=MODULE, instruction_candidates=(BASELINE_INSTRUCTION,)),),
    )
    return core.compile_search_space(template)


def run_session(
    url: str, rows: list[dict[str, Any]] | None = None, api_key: str = "sim", **config: Any
) -> Any:
    """One proposer session of the package's real loop; its outcome."""
    rows = train_rows() if rows is None else rows
    context = po.MiproOpenEnvProposerContext(
        objective="Improve train metric while preserving output constraints.",
        grounding_payload={"sampled_train_rows": rows},
        read_model_payload={"sampled_train_rows": rows},
    )
    return asyncio.run(
        po.run_openenv_react_proposer(
            compiled_space=compiled_space(),
            agent=SimAgent(url, api_key),
            context=context,
            config=po.MiproOpenEnvProposerConfig(**config),
        )
    )


def actions(outcome: Any) -> list[list[str]]:
    return [[r["action"]["name"] for r in turn["tool_results"]] for turn in outcome.transcript]


@pytest.fixture
def url(mipro_sim_respx: Any) -> str:
    return mipro_sim_respx.scoped_url("synth", "propose") + "/chat/completions"


def test_session_reads_then_adds_candidates_then_finishes(url: str) -> None:
    outcome = run_session(url)
    steps = actions(outcome)
    assert steps[0] == ["list_component_options", "list_sampled_train_rows"]
    assert steps[-1] == ["finish"] and outcome.stop_reason == "patch_limit_reached"
    assert len(outcome.instruction_patches) == 8  # the default max_instruction_patches
    options = outcome.compiled_space.search_space[COMPONENT]
    assert len(options) == 1 + len(outcome.instruction_patches)
    assert all(p.module_id == MODULE for p in outcome.instruction_patches)
    # Never more than two writes in a row: the read between batches keeps the session's
    # consecutive-write rule, so the only refusals are the patch limit's, at the end.
    assert "max_consecutive_patch_actions_reached" not in json.dumps(outcome.transcript)
    assert outcome.duplicate_patch_count == 0
    assert not [t for t in outcome.transcript if t["provider_trace"].get("provider_error")]


def test_candidates_are_built_from_the_rows_intents(url: str) -> None:
    outcome = run_session(url)
    texts = [p.instruction_text for p in outcome.instruction_patches]
    intents = {intent for _, intent in ROWS}
    hinted = [t for t in texts if HINTS_HEADER in t]
    assert hinted, texts
    for text in hinted:
        labels = {m.group(1) for m in HINT.finditer(text.split(HINTS_HEADER, 1)[1])}
        assert labels and labels <= intents
    # Every candidate keeps the task statement and they differ from each other.
    assert all(t.startswith(BASELINE_INSTRUCTION) for t in texts)
    assert len(set(texts)) == len(texts)


def test_max_instruction_patches_six_ends_without_policy_violations(url: str) -> None:
    outcome = run_session(url, max_instruction_patches=6)
    assert len(outcome.instruction_patches) == 6
    assert outcome.stop_reason == "patch_limit_reached"
    assert outcome.policy_violation_count == 0
    assert outcome.model_turn_count == 9


def test_same_request_same_answer_and_same_session(url: str) -> None:
    first = run_session(url)
    second = run_session(url)
    assert [p.instruction_text for p in first.instruction_patches] == [
        p.instruction_text for p in second.instruction_patches
    ]
    body = first_turn_body()
    assert SimulatedLM().complete(body) == SimulatedLM().complete(body)


def first_turn_body(**extra: Any) -> dict[str, Any]:
    """The body of a session's first turn, built with the package's own helpers."""
    space = compiled_space()
    runtime_tools = po.build_openenv_tool_catalog(space)["runtime_tools"]
    state = po.summarize_compiled_space(space)
    state["grounding_counts"] = {"sampled_train_rows": len(ROWS), "recent_trial_rows": 0}
    messages = po._initial_live_messages(
        objective="Improve train metric.",
        runtime_tools=runtime_tools,
        proposer_state=state,
        transcript=[],
    )
    return {
        "model": "gpt-4.1-nano",
        "messages": messages,
        "tools": po._openai_tools_payload_from_runtime_tools(runtime_tools),
        "tool_choice": "required",
        "temperature": 0.0,
        **extra,
    }


def tool_calls(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The answer's tool calls, each checked to be an offered tool with object arguments."""
    message = SimulatedLM().complete(body)["choices"][0]["message"]
    offered = {t["function"]["name"] for t in body["tools"]}
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
             for c in message["tool_calls"]]
    assert calls and all(name in offered and isinstance(args, dict) for name, args in calls)
    return calls


def with_history(body: dict[str, Any], *turns: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    """The body plus earlier turns: (tool name, arguments, raw tool-message content)."""
    messages = list(body["messages"])
    for k, (name, args, content) in enumerate(turns):
        call_id = f"call_{k}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "name": name,
                         "content": content})
    return {**body, "messages": messages}


def test_first_turn_reads_the_instruction_and_the_rows() -> None:
    calls = tool_calls(first_turn_body())
    assert calls == [
        ("list_component_options", {"component_key": COMPONENT}),
        ("list_sampled_train_rows", {"limit": 12}),
    ]


def test_unknown_tool_and_garbage_results_get_a_valid_call() -> None:
    body = with_history(
        first_turn_body(),
        ("frobnicate", {"x": 1}, "not json at all"),
        ("list_sampled_train_rows", {"limit": 12},
         json.dumps({"status": "error", "action": "list_sampled_train_rows",
                     "reason": "boom"})),
        ("list_component_options", {"component_key": COMPONENT}, "{garbage"),
    )
    calls = tool_calls(body)
    # It does not retry the read that failed, and it still writes (the loop forbids finish
    # before a successful patch): rows or no rows, the proposer writes a candidate.
    assert ("list_sampled_train_rows", {"limit": 12}) not in calls
    assert [name for name, _ in calls] in (
        ["list_registered_candidates"],
        ["add_instruction_candidate", "add_instruction_candidate"],
    )


def test_malformed_history_and_bare_tool_lists_never_fail() -> None:
    body = first_turn_body()
    broken = {**body, "messages": [*body["messages"],
                                   {"role": "assistant", "content": None,
                                    "tool_calls": [{"id": 3}, "junk", {"function": {}}]},
                                   {"role": "tool", "tool_call_id": "nope", "content": "[]"}]}
    assert tool_calls(broken)
    bare = {**body, "tools": [t for t in body["tools"]
                              if t["function"]["name"] in ("finish", "add_instruction_candidate")]}
    names = [name for name, _ in tool_calls(bare)]
    assert names[0] == "add_instruction_candidate"


def test_refusals_asking_for_reads_are_answered_with_reads(url: str) -> None:
    outcome = run_session(
        url,
        min_read_actions_before_patch=4,
        max_consecutive_patch_actions=1,
        require_distinct_read_tools_before_patch=True,
        proposer_runbook_policy="enforce_core",
        max_instruction_patches=3,
    )
    assert len(outcome.instruction_patches) == 3
    assert outcome.stop_reason == "patch_limit_reached"
    assert outcome.model_turn_count < 20


def test_cut_previews_are_read_in_full(url: str) -> None:
    long_query = "I ordered a replacement card weeks ago " * 6 + "and it never showed up"
    rows = train_rows([(long_query, "card_arrival"), *ROWS[2:]])
    outcome = run_session(url, rows=rows, max_instruction_patches=4)
    assert outcome.action_counts.get("get_sampled_train_row") == 1
    assert any("card_arrival:" in p.instruction_text for p in outcome.instruction_patches)


def test_few_turns_still_add_a_candidate_and_finish(url: str) -> None:
    outcome = run_session(url, max_turns=3)
    assert outcome.instruction_patches
    assert actions(outcome)[-1] == ["finish"] and outcome.stop_reason == "turns_exhausted"


def test_phase3_loop_with_the_grounding_hook(url: str, tmp_path: Path) -> None:
    """The whole phase-3 loop: rows come from MiproGroundingHooks.sample_train_rows."""

    async def main() -> Any:
        space = compiled_space()
        optimizer = await core.DiscreteMiproOptimizer.from_search_space(
            search_space=space.search_space, rng_seed=1)
        return await core.run_phase3_loop(
            compiled_space=space,
            optimizer=optimizer,
            agent=SimAgent(url),
            evaluate_train=lambda candidate: 0.5,
            evaluate_heldout=lambda candidate: 0.5,
            grounding_hooks=core.MiproGroundingHooks(
                sample_train_rows=lambda round_idx, limit: train_rows()),
            config=core.MiproPhase3Config(
                proposer_rounds=1, train_rounds_per_proposer_round=1,
                proposer_trace_dir=str(tmp_path / "traces"),
                proposer_config=po.MiproOpenEnvProposerConfig(max_instruction_patches=4)),
            ledger_path=str(tmp_path / "ledger.sqlite"),
        )

    outcome = asyncio.run(main())
    assert outcome.stop_reason_frequency == {"patch_limit_reached": 1}
    assert outcome.proposer_sessions


def test_over_http_through_the_served_gateway(gw: GatewayHandle) -> None:
    url = gw.endpoint.base_url("synth", "propose") + "/chat/completions"
    outcome = run_session(url, api_key=gw.token, max_instruction_patches=2)
    assert len(outcome.instruction_patches) == 2
    assert outcome.stop_reason == "patch_limit_reached"
    usage = gw.endpoint.usage()["synth"]["propose"]
    assert usage.calls == outcome.model_turn_count


@pytest.mark.integration
def test_measured_sessions_on_banking77(url: str, real_data_dir: Path) -> None:
    """The README's numbers: turns and candidates per session, and how the candidates score
    (the simulated LM on the task app's prompt, default panel's 308 test items, the suite's
    label rule). Printed; run with -s to see them."""
    import random

    from mipro_bench.data import load_banking77, make_splits
    from mipro_bench.labels import intent_from_tool_arguments, map_to_label
    from mipro_bench.prompt import build_messages, classify_tool, tool_choice

    panel = make_splits(load_banking77(real_data_dir), train_size=100, val_size=50,
                        test_size=308, seed=0)
    pairs = [(ex.text, ex.label) for ex in random.Random(0).sample(panel.train.examples, 50)]
    lm = SimulatedLM()

    def accuracy(instruction: str) -> float:
        right = 0
        for ex in panel.test.examples:
            body = {"model": "gpt-4.1-nano", "temperature": 0.0,
                    "messages": build_messages(instruction, ex.text, panel.labels),
                    "tools": [classify_tool(panel.labels)], "tool_choice": tool_choice()}
            call = lm.complete(body)["choices"][0]["message"]["tool_calls"][0]
            got = intent_from_tool_arguments(call["function"]["arguments"])
            right += map_to_label(got, panel.labels) == ex.label
        return right / len(panel.test.examples)

    baseline = accuracy(BASELINE_INSTRUCTION)
    configs = {"default": {}, "max_instruction_patches=6": {"max_instruction_patches": 6},
               "backend (6 and 6 patch actions)": {"max_instruction_patches": 6,
                                                   "max_patch_actions_per_session": 6}}
    print(f"\nbaseline {baseline:.1%}")
    for name, config in configs.items():
        outcome = run_session(url, rows=train_rows(pairs), **config)
        scores = [accuracy(p.instruction_text) for p in outcome.instruction_patches]
        hinted = sum(HINTS_HEADER in p.instruction_text for p in outcome.instruction_patches)
        print(f"{name}: {outcome.model_turn_count} turns, {outcome.tool_call_count} tool calls, "
              f"{len(scores)} candidates ({hinted} with hints), stop {outcome.stop_reason}, "
              f"violations {outcome.policy_violation_count}; candidates "
              f"mean {sum(scores) / len(scores):.1%}, best {max(scores):.1%}, "
              f"worst {min(scores):.1%}")
        assert outcome.stop_reason == "patch_limit_reached"
        assert max(scores) > baseline
