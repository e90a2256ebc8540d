"""The task app on the real Banking77 panel (77 intents), against the simulated LM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from synth_ai.sdk.localapi._impl.contracts import RolloutResponse

from mipro_bench.data import load_banking77, make_splits
from mipro_bench.labels import intent_from_tool_arguments, map_to_label
from mipro_bench.lm.gateway import start_gateway
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice
from task_app.server import serve_task_app
from tests.task_app_support import ENV_KEY, SIM_SETTINGS, rollout_body

pytestmark = pytest.mark.integration


async def test_real_panel_rewards_match_direct_classification(real_data_dir: Path) -> None:
    splits = make_splits(load_banking77(real_data_dir), train_size=77, val_size=77,
                         test_size=154, seed=0)
    assert len(splits.labels) == 77
    with start_gateway(SIM_SETTINGS) as gateway, serve_task_app(
            splits, env_api_key=ENV_KEY, port=0) as app:
        url = gateway.endpoint.base_url("integration", "rollout")
        direct_url = gateway.endpoint.base_url("integration", "direct") + "/chat/completions"
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
            sem = asyncio.Semaphore(8)

            async def one(seed: int) -> tuple[RolloutResponse, str | None]:
                example = splits.test[seed]
                async with sem:
                    rollout = await client.post(
                        app.url + "/rollout", headers=app.headers,
                        json=rollout_body(seed, url, split="test", trace_id=f"r{seed}",
                                          api_key=gateway.token))
                    direct = await client.post(direct_url, headers=gateway.auth_headers, json={
                        "model": SIM_SETTINGS.model,
                        "messages": build_messages(BASELINE_INSTRUCTION, example.text,
                                                   splits.labels),
                        "tools": [classify_tool(splits.labels)], "tool_choice": tool_choice(),
                        "temperature": 0.0, "max_tokens": 256})
                arguments = direct.json()["choices"][0]["message"]["tool_calls"][0][
                    "function"]["arguments"]
                prediction = map_to_label(intent_from_tool_arguments(arguments), splits.labels)
                return RolloutResponse.model_validate(rollout.json()), prediction

            results = await asyncio.gather(*(one(seed) for seed in range(len(splits.test))))
    rewards = []
    for seed, (out, prediction) in enumerate(results):
        example = splits.test[seed]
        assert out.reward_info.details["prediction"] == prediction
        assert out.reward_info.outcome_reward == float(prediction == example.label)
        rewards.append(out.reward_info.outcome_reward)
    accuracy = sum(rewards) / len(rewards)
    # The simulated LM is far from perfect on the baseline prompt but well above chance (1/77).
    print(f"simulated baseline accuracy on {len(rewards)} real test items: {accuracy:.3f}")
    assert 0.05 < accuracy < 1.0, accuracy
