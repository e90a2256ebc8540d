"""The `mipro_sim_respx` fixture, used as a user would use it (this file is the example in
docs/simulated-lm.md): an httpx client of your own, answered by the simulated LM with no socket."""

from __future__ import annotations

import httpx
import pytest

from mipro_bench.prompt import build_messages, classify_tool, tool_choice

LABELS = ("card_arrival", "lost_or_stolen_card", "exchange_rate")


def body(query: str) -> dict:
    return {"model": "gpt-4.1-nano", "temperature": 0.0,
            "messages": build_messages("Respond with only the intent name, spelled exactly "
                                       "as listed.", query, LABELS),
            "tools": [classify_tool(LABELS)], "tool_choice": tool_choice()}


def test_my_client_gets_simulated_answers_and_usage(mipro_sim_respx) -> None:
    with httpx.Client(base_url=mipro_sim_respx.scoped_url("my-app", "eval")) as client:
        response = client.post("/chat/completions", json=body("my card has not arrived yet"))
    assert response.status_code == 200
    assert response.headers["x-mipro-bench-simulated"] == "true"
    assert response.json()["system_fingerprint"].startswith("mipro-bench")
    call = response.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "banking77_classify"
    usage = mipro_sim_respx.usage("my-app")["my-app"]["eval"]
    assert usage.calls == 1 and usage.input_tokens > 0


async def test_async_clients_too(mipro_sim_respx) -> None:
    async with httpx.AsyncClient(base_url=mipro_sim_respx.base_url) as client:
        response = await client.post("/chat/completions", json=body("exchange rate today?"))
    assert response.status_code == 200
    assert mipro_sim_respx.usage()


def test_bad_bodies_are_400_and_counted_as_errors(mipro_sim_respx) -> None:
    with httpx.Client(base_url=mipro_sim_respx.base_url) as client:
        assert client.post("/chat/completions", content=b"{not json").status_code == 400
        assert client.post("/chat/completions", json=[1, 2]).status_code == 400


def test_other_requests_are_not_mocked(mipro_sim_respx) -> None:
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get("http://127.0.0.1:9/nothing-listens-here", timeout=2)
