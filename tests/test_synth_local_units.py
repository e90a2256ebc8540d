"""The local Synth backend's pure parts: patterns, budget plan, config, jobs, keys, proposals.

No server and no data files: these are the rules the HTTP tests rely on.
"""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, PublicKey, SealedBox

from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, initial_prompt
from mipro_bench.synth_local.auth import AuthError, EnvKeyError, KeyRing
from mipro_bench.synth_local.config import ConfigError, parse_job_config, redacted_section
from mipro_bench.synth_local.jobs import JobStateError, JobStore
from mipro_bench.synth_local.mipro import (
    Candidate,
    best_candidate,
    leader,
    plan_budget,
    round_sizes,
)
from mipro_bench.synth_local.patterns import PatternError, PromptPattern
from mipro_bench.synth_local.proposer import (
    LabelledExample,
    ProposerSettings,
    clean_instruction,
    proposal_messages,
    propose,
)

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
@given(budget=st.integers(1, 3000), n_val=st.integers(0, 400), batch=st.integers(1, 64),
       full=st.integers(1, 8))
def test_the_plan_never_exceeds_the_rollout_budget(budget: int, n_val: int, batch: int,
                                                   full: int) -> None:
    plan = plan_budget(budget, n_val, batch, full)
    spent = plan.full_evals * plan.val_n + plan.search_rollouts
    assert spent <= budget
    assert plan.search_rollouts >= 0 and plan.val_n <= n_val
    # The trials spend the search budget exactly: full batches and one smaller last one.
    assert (plan.trials - 1) * batch < plan.search_rollouts <= plan.trials * batch \
        or plan.trials == plan.search_rollouts == 0
    assert plan.full_evals * plan.val_n <= budget // 2  # at most half on full evaluations


def test_the_default_matrix_budget_plan() -> None:
    plan = plan_budget(550, 50, 10, 3)
    assert (plan.val_n, plan.full_evals, plan.search_rollouts, plan.trials) == (50, 3, 400, 40)
    tiny = plan_budget(3, 3, 10, 3)  # the CLI smoke run: one val seed, one 2-rollout trial
    assert (tiny.val_n, tiny.full_evals, tiny.search_rollouts, tiny.trials) == (1, 1, 2, 1)


def test_round_sizes_split_the_proposals() -> None:
    assert round_sizes(6, 2) == [3, 3]
    assert round_sizes(7, 3) == [3, 2, 2]
    assert round_sizes(2, 5) == [1, 1]
    assert round_sizes(0, 2) == []


def _cand(cid: str, mb: tuple[float, int] | None = None, full: float | None = None,
          source: str = "proposal") -> Candidate:
    c = Candidate(cid, cid, baseline(), source)
    if mb:
        c.minibatch_reward, c.minibatch_rollouts = mb
    c.full_score = full
    return c


def test_selection_prefers_full_scores_and_the_baseline_keeps_a_tie() -> None:
    c0 = _cand("c0", (3, 10), 0.5, source="baseline")
    c1 = _cand("c1", (9, 10), 0.5)
    c2 = _cand("c2", (8, 10), None)
    assert best_candidate([c0, c1, c2]) is c0  # tie on val: the original instruction stays
    c1.full_score = 0.52
    assert best_candidate([c0, c1, c2]) is c1
    assert leader([c0, c1, c2], exclude_full=True) is c2


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


# --- proposals ------------------------------------------------------------------------------


def test_proposal_prompt_has_the_shape_the_simulated_lm_reads() -> None:
    examples = [LabelledExample("Where is my card?", "card_arrival")]
    text = proposal_messages(BASELINE_INSTRUCTION, examples, "Be brief.", task="t")[-1]["content"]
    assert f"Current instruction:\n{BASELINE_INSTRUCTION}" in text
    assert "Query: Where is my card?\nIntent: card_arrival" in text
    assert "Propose" in text and "instruction" in text


def test_clean_instruction_strips_preambles_and_fences() -> None:
    assert clean_instruction('```\nNew instruction: "Do X."\n```') == "Do X."
    assert clean_instruction("Here is the improved instruction: Do Y.") == "Do Y."
    with pytest.raises(ValueError):
        clean_instruction("  ``` ```  ")


async def test_propose_skips_failures_and_duplicates_and_records_what_was_shown() -> None:
    pool = [LabelledExample(f"q{i}", "card_arrival", seed=i) for i in range(10)]
    calls = iter(["Same.", "Same.", RuntimeError("boom"), BASELINE_INSTRUCTION, "Other."])
    errors: list[int] = []

    async def complete(messages: list[dict[str, str]], temperature: float) -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    out = await propose(complete, instruction=BASELINE_INSTRUCTION, pool=pool,
                        settings=ProposerSettings(num_candidates=5, examples_per_proposal=3),
                        rng=random.Random(0), on_error=lambda i, exc: errors.append(i))
    assert [p.instruction for p in out] == ["Same.", "Other."]
    assert errors == [2]
    assert all(len(p.seeds) == 3 and p.seeds <= set(range(10)) for p in out)
