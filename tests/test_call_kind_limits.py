"""The gateway's token cap reaches servers that only read `max_tokens`."""

from __future__ import annotations

from mipro_bench.lm.call_kind import capped


def test_a_newer_field_only_body_also_gets_max_tokens_for_compatible_servers() -> None:
    body = {"messages": [], "max_completion_tokens": 4000}
    out, lowered = capped(body, 96, legacy_field=True)
    assert lowered and out["max_completion_tokens"] == 96 and out["max_tokens"] == 96


def test_openai_bodies_keep_only_the_field_the_client_sent() -> None:
    out, _ = capped({"messages": [], "max_completion_tokens": 50}, 96, legacy_field=False)
    assert "max_tokens" not in out and out["max_completion_tokens"] == 50


def test_a_body_without_a_limit_gets_max_tokens() -> None:
    out, lowered = capped({"messages": []}, 96, legacy_field=True)
    assert out["max_tokens"] == 96 and not lowered
