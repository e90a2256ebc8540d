"""What a real model behind an OpenAI-compatible server needs (issue 11), offline.

- the gateway downgrades a response_format the server rejects, once, remembers it and
  records it; a deterministic client error is not retried;
- every call's completion tokens are bounded by its kind, and truncations are counted;
- costs say what they are: null for an unpriced server, given prices when given, an
  estimate for simulated runs;
- bad prices and token limits are one line and exit 2.
The upstream is a tiny real HTTP server on 127.0.0.1 (tests/lm_support.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mipro_bench.lm.call_kind import call_kind, capped
from mipro_bench.lm.gateway import start_gateway
from mipro_bench.lm.retry import RetryPolicy
from mipro_bench.lm.run_lm import resolve
from mipro_bench.lm.settings import LMConfigError, LMSettings, parse_token_limits
from tests.lm_support import counting_upstream

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff_s=0.0, max_backoff_s=0.0, jitter_s=0.0)
SCHEMA = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}


def compatible(base_url: str, **kw: Any) -> LMSettings:
    return LMSettings(backend="compatible", model="gpt-4.1-nano", base_url=base_url, **kw)


def chat(gw: Any, **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{gw.url}/s/case/test_eval/v1/chat/completions", json=body,
                      headers=gw.auth_headers, timeout=10, trust_env=False)


@pytest.mark.parametrize("status", [500, 400])
def test_a_rejected_json_schema_is_downgraded_once_and_remembered(status: int) -> None:
    with counting_upstream(reject_formats={"json_schema": status}) as (url, upstream), \
            start_gateway(compatible(url), retry=FAST_RETRY) as gw:
        first = chat(gw, response_format=SCHEMA)
        second = chat(gw, response_format=SCHEMA)
        assert first.status_code == second.status_code == 200
        sent = [json.loads(r["body"]).get("response_format") for r in upstream.requests]
        # one refused json_schema (not retried), then json_object for the session
        assert sent == [SCHEMA, {"type": "json_object"}, {"type": "json_object"}]
        (downgrade,) = gw.diagnostics()["request_downgrades"]
        assert downgrade["feature"] == "response_format:json_schema"
        assert downgrade["fallback"] == "response_format:json_object"
        assert downgrade["status"] == status and "response_format" in downgrade["reason"]
        assert gw.usage()["case"]["test_eval"].errors == 0


def test_when_json_object_is_refused_too_the_call_goes_without_response_format() -> None:
    with counting_upstream(reject_formats={"json_schema": 500, "json_object": 500}) as (
            url, upstream), start_gateway(compatible(url), retry=FAST_RETRY) as gw:
        assert chat(gw, response_format=SCHEMA).status_code == 200
        assert chat(gw, response_format={"type": "json_object"}).status_code == 200
        sent = [json.loads(r["body"]).get("response_format") for r in upstream.requests]
        assert sent == [SCHEMA, {"type": "json_object"}, None, None]
        assert [d["fallback"] for d in gw.diagnostics()["request_downgrades"]] == [
            "response_format:json_object", "no response_format"]


def test_a_deterministic_client_error_is_not_retried() -> None:
    with counting_upstream(reject_formats={"text": 422}) as (url, upstream), \
            start_gateway(compatible(url), retry=FAST_RETRY) as gw:
        reply = chat(gw, response_format={"type": "text"})
        assert reply.status_code == 422 and upstream.count == 1


def test_completion_tokens_are_bounded_by_call_kind_and_truncations_counted() -> None:
    limits = {"answer": 32, "tool_call": 16, "proposer": 64, "reflection": 128}
    settings = compatible("", token_limits=tuple(sorted(limits.items())))
    with counting_upstream(finish_reason="length") as (url, upstream), \
            start_gateway(settings.with_base_url(url), retry=FAST_RETRY) as gw:
        chat(gw, max_tokens=5000)
        chat(gw, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
        chat(gw, messages=[{"role": "user", "content": "Propose a new instruction."}],
             max_completion_tokens=9000)
        sent = [json.loads(r["body"]) for r in upstream.requests]
        assert [b.get("max_tokens") or b.get("max_completion_tokens") for b in sent] == [
            32, 16, 64]
        usage = gw.usage()["case"]["test_eval"]
        assert usage.truncated == 3 and usage.cost_usd is None  # unpriced server
        assert gw.diagnostics()["token_limits"] == limits


def test_call_kinds_are_read_from_the_request() -> None:
    dspy_proposer = {"messages": [{"role": "system", "content": "Your output fields are: "
                                   "1. `proposed_instruction` (str)"}]}
    assert call_kind(dspy_proposer) == "proposer"
    assert call_kind({"messages": [{"role": "user", "content": "card lost"}]}) == "answer"
    assert call_kind({"messages": [{"role": "system", "content": "Write your reflection"}]}) \
        == "reflection"
    assert capped({"max_tokens": 10}, 20) == ({"max_tokens": 10}, False)


def test_cost_is_null_for_a_compatible_server_unless_prices_are_given() -> None:
    with counting_upstream() as (url, _):
        with start_gateway(compatible(url)) as gw:
            chat(gw)
            assert gw.usage()["case"]["test_eval"].cost_usd is None  # named like OpenAI's
        with start_gateway(compatible(url, prices_per_mtok=(1.0, 2.0))) as gw:
            chat(gw)  # 11 prompt + 3 completion tokens
            assert gw.usage()["case"]["test_eval"].cost_usd == pytest.approx(17e-6)


def test_a_simulated_run_shows_an_estimate_never_a_cost() -> None:
    with start_gateway(LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)) as gw:
        chat(gw)
        usage = gw.usage()["case"]["test_eval"]
    assert usage.cost_usd is None and usage.cost_usd_estimate is not None
    assert usage.cost_usd_estimate > 0


@pytest.mark.parametrize("flags", [["--price-in", "-1", "--price-out", "1"],
                                   ["--price-in", "abc", "--price-out", "1"],
                                   ["--max-tokens", "answer=0"],
                                   ["--max-tokens", "bogus=5"]])
def test_bad_prices_and_limits_are_one_line_and_exit_2(flags: list[str]) -> None:
    for script in ("run_comparison.py", "run_dspy_mipro_banking77.py"):
        done = subprocess.run([sys.executable, str(ROOT / script), *flags], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "MIPRO_BENCH_DOTENV": "0",
                                   "PYTHONPATH": str(ROOT)})
        assert done.returncode == 2, (script, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_prices_come_in_pairs_and_limits_parse() -> None:
    with pytest.raises(LMConfigError, match="both --price-in and --price-out"):
        resolve("sim", None, "gpt-4.1-nano", price_in="1")
    settings, line = resolve("sim", None, "gpt-4.1-nano", max_tokens="answer=64",
                             price_in="0.5", price_out="1.5")
    assert settings.limit_for("answer") == 64 and settings.limit_for("proposer") == 512
    assert settings.prices_per_mtok == (0.5, 1.5) and "per 1M" in line
    assert parse_token_limits("100") == dict.fromkeys(
        ("answer", "tool_call", "proposer", "reflection"), 100)


def test_gepas_reflective_prompt_is_a_reflection() -> None:
    prompt = ("I provided an assistant with the following instructions to perform a task for "
              "me:\n```\nClassify.\n```\nYour task is to write a new instruction for the "
              "assistant.")
    assert call_kind({"messages": [{"role": "user", "content": prompt}]}) == "reflection"
