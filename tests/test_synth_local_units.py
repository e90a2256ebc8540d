"""The local Synth backend's pure parts: patterns, budget plan, config, jobs, keys, agent.

No server and no data files: these are the rules the HTTP tests rely on.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, PublicKey, SealedBox

from mipro_bench.offline.synth_backend.auth import AuthError, EnvKeyError, KeyRing
from mipro_bench.offline.synth_backend.budget import plan_synth_budget
from mipro_bench.offline.synth_backend.config import ConfigError, parse_job_config, redacted_section
from mipro_bench.offline.synth_backend.jobs import JobStateError, JobStore
from mipro_bench.offline.synth_backend.proposer_agent import VIRTUAL_ROOT, GatewayProposerAgent
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, initial_prompt
from mipro_bench.task_client.patterns import PatternError, PromptPattern

LABELS = ("card_arrival", "lost_or_stolen_card", "Refund_not_showing_up")


def baseline() -> PromptPattern:
    return PromptPattern.from_config(initial_prompt(LABELS))


# --- patterns -----------------------------------------------------------------------------


def test_the_task_apps_baseline_messages_match_initial_prompt_and_give_the_wildcards() -> None:
    messages = build_messages(BASELINE_INSTRUCTION, "Where is my card?", LABELS)
    values = baseline().extract(messages)
    assert values["query"] == "Where is my card?"
    assert values["available_intents"] == "\n".join(LABELS)


def test_substitution_swaps_only_the_instruction() -> None:
    query = "My card: {not} here\n\nCustomer query: tricky"  # braces and the separator inside
    messages = build_messages(BASELINE_INSTRUCTION, query, LABELS)
    candidate = baseline().with_instruction("Think about cards first.")
    swapped = candidate.substitute(baseline(), messages)
    assert swapped[0] == {"role": "system", "content": "Think about cards first."}
    assert swapped[1] == messages[1]  # the user message is rendered back byte for byte


def test_messages_that_do_not_match_the_pattern_are_refused() -> None:
    messages = build_messages("A different system prompt.", "Where is my card?", LABELS)
    with pytest.raises(PatternError, match="does not match initial_prompt"):
        baseline().extract(messages)
    with pytest.raises(PatternError, match="expected 2 messages"):
        baseline().extract(messages[:1])


@pytest.mark.parametrize("bad", [None, {"messages": []}, {"messages": "x"},
                                 {"messages": [{"role": "user", "pattern": "{query}"}]},
                                 {"messages": [{"role": "system", "pattern": 3}]}])
def test_unusable_initial_prompts_are_pattern_errors(bad: object) -> None:
    with pytest.raises(PatternError):
        PromptPattern.from_config(bad)


# --- the budget ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(budget=st.integers(1, 3000), n_train=st.integers(1, 400), n_val=st.integers(0, 400),
       candidates=st.integers(0, 20), rounds=st.integers(1, 6))
def test_the_synth_plan_never_exceeds_the_rollout_budget(budget: int, n_train: int, n_val: int,
                                                         candidates: int, rounds: int) -> None:
    plan = plan_synth_budget(budget, n_train=n_train, n_val=n_val, num_candidates=candidates,
                             proposal_rounds=rounds)
    assert plan.planned_rollouts <= budget
    assert 1 <= plan.minibatch <= n_train and plan.val_n <= n_val
    assert plan.trials == 1 + plan.proposer_rounds * plan.top_k
    assert 2 * plan.val_n <= budget // 2  # at most half on held-out evaluations
    # Nothing worth a trial is left unspent: one more rollout per trial would not fit,
    # unless the minibatch is already the whole train pool.
    assert plan.minibatch == n_train or \
        2 * plan.val_n + plan.trials * (plan.minibatch + 1) > budget


def test_the_default_matrix_budget_plan() -> None:
    plan = plan_synth_budget(550, n_train=100, n_val=50, num_candidates=6, proposal_rounds=2)
    assert (plan.val_n, plan.proposer_rounds, plan.top_k, plan.trials, plan.minibatch) == \
        (50, 2, 3, 7, 64)
    assert plan.planned_rollouts == 548 and plan.proposals_per_round == 6
    # The CLI smoke run (3 rollouts, train 5, val 3): no held-out, baseline + 2 proposals.
    tiny = plan_synth_budget(3, n_train=5, n_val=3, num_candidates=6, proposal_rounds=2)
    assert (tiny.val_n, tiny.proposer_rounds, tiny.top_k, tiny.trials, tiny.minibatch) == \
        (0, 1, 2, 3, 1)


# --- the proposer agent's paths ---------------------------------------------------------------


async def test_the_agent_hides_the_workdir_and_maps_it_back_in_tool_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one case have different working directories; the requests must not."""
    from synth_optimizers.miprov2.core import proposer_openenv as openenv

    sent: list[dict[str, object]] = []

    async def fake_turn(**kwargs: object) -> openenv.MiproOpenEnvTurnResponse:
        sent.append(kwargs)
        args = {"path": f"{VIRTUAL_ROOT}/ledger_workspace/x.json"}
        call = {"id": "t1", "type": "function",
                "function": {"name": "read_evidence_file", "arguments": json.dumps(args)}}
        return openenv.MiproOpenEnvTurnResponse(
            assistant_message={"role": "assistant", "content": "", "tool_calls": [call]},
            tool_calls=(openenv.MiproOpenEnvToolInvocation(
                tool_call_id="t1",
                action=openenv.MiproOpenEnvAction(name="read_evidence_file", arguments=args)),))

    monkeypatch.setattr(openenv, "_next_action_via_openai_compatible", fake_turn)
    turns: list[str | None] = []
    agent = GatewayProposerAgent(chat_url="http://gw/v1/chat/completions", api_key="k",
                                 model="m", workdir="/tmp/run-123", on_turn=turns.append)
    messages = [{"role": "user", "content": "ledger at /tmp/run-123/ledger.sqlite"}]
    turn = await agent.next_turn(objective="o", runtime_tools=[], messages=messages,
                                 proposer_state={})
    assert "/tmp/run-123" not in json.dumps(sent[0]["messages"])
    assert f"{VIRTUAL_ROOT}/ledger.sqlite" in json.dumps(sent[0]["messages"])
    assert turn.tool_calls[0].action.arguments["path"] == "/tmp/run-123/ledger_workspace/x.json"
    function = turn.assistant_message["tool_calls"][0]["function"]
    assert json.loads(function["arguments"])["path"].startswith("/tmp/run-123/")
    assert turns == [None]


# --- config -------------------------------------------------------------------------------------


def _section(**mipro: object) -> dict[str, object]:
    return {
        "algorithm": "mipro",
        "task_app_url": "http://127.0.0.1:8015",
        "initial_prompt": initial_prompt(LABELS),
        "policy": {"model": "gpt-4.1-nano", "provider": "openai"},
        "mipro": {"online_pool": [0, 1, 2], "rollout_budget": 5, **mipro},
    }


def test_a_minimal_config_parses_with_defaults() -> None:
    cfg = parse_job_config(_section(val_seeds={"start": 3, "end": 6}))
    assert cfg.train_seeds == (0, 1, 2) and cfg.bootstrap_seeds == (0, 1, 2)
    assert cfg.val_seeds == (3, 4, 5) and cfg.mode == "offline" and cfg.rollout_budget == 5


@pytest.mark.parametrize("change, message", [
    ({"rollout_budget": 0}, "rollout_budget"),
    ({"rollout_budget": "ten"}, "rollout_budget"),
    ({"online_pool": []}, "online_pool"),
    ({"online_pool": [1, 1]}, "repeats"),
    ({"val_seeds": [True]}, "val_seeds"),
    ({"mode": "sideways"}, "mode"),
    ({"proposer": {"mode": "fewshot"}}, "instruction_only"),
    ({"max_concurrent": 0}, "max_concurrent"),
])
def test_bad_mipro_values_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_job_config(_section(**change))


def test_the_inference_key_is_read_but_never_kept_with_the_job() -> None:
    key = "gw-" + "t" * 40
    section = _section(policy_inference_url="http://127.0.0.1:9/v1", inference_api_key=key)
    cfg = parse_job_config(section)
    assert cfg.inference_api_key == key
    assert key not in repr(cfg) and key not in repr(cfg.raw)
    assert redacted_section(section)["mipro"]["inference_api_key"] == "[redacted]"
    assert section["mipro"]["inference_api_key"] == key  # the caller's table is untouched
    assert parse_job_config(_section()).inference_api_key is None
    with pytest.raises(ConfigError, match="inference_api_key"):
        parse_job_config(_section(inference_api_key=""))


def test_bad_top_level_values_name_the_field() -> None:
    for key, value, message in (("task_app_url", "ftp://x", "task_app_url"),
                                ("algorithm", "gepa", "mipro"),
                                ("initial_prompt", {"messages": []}, "initial_prompt"),
                                ("policy", {"provider": "openai"}, "policy.model")):
        with pytest.raises(ConfigError, match=message):
            parse_job_config({**_section(), key: value})


# --- jobs -----------------------------------------------------------------------------------------


def test_jobs_move_forward_only_and_log_numbered_events() -> None:
    store = JobStore()
    job = store.create(owner="k", algorithm="mipro", mode="offline", config_body={},
                       metadata={})
    assert job.id.startswith("pl_") and job.status == "queued"
    store.transition(job, "running")
    store.finish(job, {"best_score": 0.5}, {"best_score": 0.5})
    assert job.status == "succeeded" and job.view()["best_score"] == 0.5
    with pytest.raises(JobStateError):
        store.transition(job, "running")
    store.fail(job, "too late")  # a terminal job stays as it ended
    assert job.status == "succeeded" and job.error is None
    types = [e.type for e in job.events]
    assert types[-1] == "learning.policy.mipro.job.completed"
    assert [e.seq for e in job.events] == list(range(1, len(types) + 1))
    assert [e.seq for e in store.events(job, since_seq=1, limit=1)] == [2]


# --- keys -----------------------------------------------------------------------------------------


def test_keyring_accepts_both_auth_styles_and_opens_sealed_env_keys() -> None:
    ring = KeyRing(["sk_test"])
    assert ring.check({"x-api-key": "sk_test"}) == "sk_test"
    assert ring.check({"authorization": "Bearer sk_test"}) == "sk_test"
    for headers in ({}, {"x-api-key": "nope"}, {"authorization": "Basic sk_test"}):
        with pytest.raises(AuthError):
            ring.check(headers)
    public = PublicKey(base64.b64decode(ring.public_key_b64))
    sealed = base64.b64encode(SealedBox(public).encrypt(b"env-secret")).decode()
    ring.store_sealed("sk_test", "ENVIRONMENT_API_KEY", sealed)
    assert ring.env_key("sk_test") == "env-secret"
    assert ring.env_key("someone-else") is None
    with pytest.raises(EnvKeyError, match="base64"):
        ring.store_sealed("sk_test", "ENVIRONMENT_API_KEY", "not base64!")
    stranger = PrivateKey.generate().public_key
    other = base64.b64encode(SealedBox(stranger).encrypt(b"x")).decode()
    with pytest.raises(EnvKeyError, match="does not open"):
        ring.store_sealed("sk_test", "ENVIRONMENT_API_KEY", other)
