"""The gateway's journal and its replay: what a line holds, what it never holds, resume and
strict replay through a real gateway, and the fingerprint that decides "same call"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mipro_bench.lm.backends import resolve_lm_settings
from mipro_bench.lm.fingerprint import differences, request_fingerprint
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.journal import (
    JournalEntry,
    JournalWriter,
    journal_path,
    read_journal,
    read_journal_dir,
)
from mipro_bench.lm.recording import Recording
from mipro_bench.lm.settings import LMSettings
from mipro_bench.prompt import build_messages, classify_tool, tool_choice
from mipro_bench.results import LMInfo, PhaseUsage
from tests.lm_support import RecordingResponder, counting_upstream

HTTP = httpx.Client(timeout=30.0, trust_env=False)
LABELS = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card"]
SIM = LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)


def chat_body(query: str = "when will my new card arrive?", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1-nano",
            "messages": build_messages("Classify the banking query.", query, LABELS),
            "tools": [classify_tool(LABELS)], "tool_choice": tool_choice(),
            "temperature": 0.0, **extra}


def post(gw: GatewayHandle, body: dict[str, Any], scope: str = "case-1",
         phase: str = "optimize") -> httpx.Response:
    return HTTP.post(gw.endpoint.base_url(scope, phase) + "/chat/completions", json=body,
                     headers=gw.auth_headers)


def journal_lines(journal_dir: Path, scope: str = "case-1") -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal_path(journal_dir, scope).read_text()
            .splitlines()]


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """A journal dir of one sim session: 3 distinct calls, one of them twice, one 429."""
    journal_dir = tmp_path / "journal"
    answers = []
    with start_gateway(SIM, journal_dir=journal_dir) as gw:
        for body in (chat_body("card 1"), chat_body("rate 2"), chat_body("card 1")):
            response = post(gw, body)
            assert response.status_code == 200
            answers.append(response.json())
        gw.set_knobs(fail_next=1, error_status=429)
        assert post(gw, chat_body("stolen 3"), phase="test_eval").status_code == 429
        answers.append(post(gw, chat_body("stolen 3"), phase="test_eval").json())
    yield journal_dir, answers


# -- the fingerprint ------------------------------------------------------------------------


def test_fingerprint_ignores_what_cannot_change_the_answer() -> None:
    base, _ = request_fingerprint(chat_body())
    reordered = dict(reversed(list(chat_body().items())))
    assert request_fingerprint(reordered)[0] == base
    assert request_fingerprint(chat_body(temperature=0))[0] == base  # 0 == 0.0
    assert request_fingerprint(chat_body(stream=False, user="u1", seed=None))[0] == base
    for change in ({"temperature": 0.7}, {"max_tokens": 12}, {"seed": 3}, {"n": 2},
                   {"model": "gpt-4o-mini"}, {"stop": ["\n"]}, {"top_p": 0.5}):
        assert request_fingerprint({**chat_body(), **change})[0] != base, change
    assert request_fingerprint(chat_body("other query"))[0] != base


def test_differences_say_where_in_a_few_words() -> None:
    _, old = request_fingerprint(chat_body())
    _, new = request_fingerprint(chat_body("another query"))
    assert differences(old, new) == ["messages[1].content differs"]
    _, hot = request_fingerprint(chat_body(temperature=0.7))
    assert differences(old, hot) == ["temperature differs (recorded 0, now 0.7)"]
    _, extra = request_fingerprint(chat_body(seed=1))
    assert differences(old, extra) == ["seed is new (recorded request has none)"]


# -- the journal ----------------------------------------------------------------------------


def test_every_call_is_one_flushed_line_with_what_replay_needs(
        recorded: tuple[Path, list[dict[str, Any]]]) -> None:
    journal_dir, answers = recorded
    lines = journal_lines(journal_dir)
    assert len(lines) == 5  # the injected 429 too
    first = lines[0]
    assert set(first) == {"scope", "phase", "fp", "occ", "status", "source", "latency_s", "at",
                          "usage", "request", "response"}
    assert first["scope"] == "case-1" and first["phase"] == "optimize"
    assert first["status"] == 200 and first["source"] == "live"
    assert first["response"] == answers[0]
    assert first["usage"]["input_tokens"] == answers[0]["usage"]["prompt_tokens"]
    assert first["latency_s"] > 0
    assert first["fp"] == request_fingerprint(chat_body("card 1"))[0]
    # identical requests: occurrences 0 and 1 of one fingerprint
    assert [(line["fp"] == first["fp"], line["occ"]) for line in lines[:3]] == [
        (True, 0), (False, 0), (True, 1)]
    assert [(line["phase"], line["status"], line["occ"]) for line in lines[3:]] == [
        ("test_eval", 429, 0), ("test_eval", 200, 1)]
    assert (journal_dir / "session.meta.json").is_file()


def test_no_key_and_no_token_in_any_journal_byte(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-" + "x" * 40  # a real-looking key, assembled at run time
    monkeypatch.setenv("OPENAI_API_KEY", key)
    journal_dir = tmp_path / "j"
    with counting_upstream() as (base_url, upstream):
        settings = LMSettings(backend="compatible", model="gpt-4.1-nano", base_url=base_url,
                              api_key_env="OPENAI_API_KEY", max_retries=0)
        with start_gateway(settings, journal_dir=journal_dir) as gw:
            token = gw.token
            # a client that (wrongly) pastes both into its prompt: redacted all the same
            leaky = chat_body(f"my key is {key} and the token {token}")
            for body in (chat_body(), leaky):
                assert post(gw, body).status_code == 200
        assert upstream.count == 2
        assert upstream.requests[0]["headers"]["authorization"] == f"Bearer {key}"
    raw = b"".join(p.read_bytes() for p in sorted(journal_dir.iterdir()))
    assert raw.count(b"\n") >= 2
    assert key.encode() not in raw and token.encode() not in raw
    assert b"Authorization" not in raw and b"authorization" not in raw
    assert b"[redacted]" in raw
    recording = tmp_path / "r.jsonl.gz"
    Recording.from_journal_dir(journal_dir).save(recording)
    import gzip

    unpacked = gzip.decompress(recording.read_bytes())
    assert key.encode() not in unpacked and token.encode() not in unpacked


def test_a_torn_last_line_is_skipped_counted_and_ended_before_appending(
        recorded: tuple[Path, list[dict[str, Any]]]) -> None:
    journal_dir, _ = recorded
    path = journal_path(journal_dir, "case-1")
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:57])  # killed mid-write
    read = read_journal(path)
    assert (len(read.entries), read.torn_lines) == (5, 1)
    writer = JournalWriter(journal_dir)
    writer.write(read.entries[0])
    writer.close()
    again = read_journal(path)
    assert (len(again.entries), again.torn_lines) == (6, 1)  # the new line stayed whole
    assert read_journal_dir(journal_dir).files == 1


# -- resume ---------------------------------------------------------------------------------


def test_resume_answers_recorded_calls_without_the_lm_then_goes_live(
        recorded: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    journal_dir, answers = recorded
    recording = Recording.from_journal_dir(journal_dir)
    with start_gateway(SIM, replay=recording, replay_mode="resume",
                       journal_dir=journal_dir) as gw:
        lm = RecordingResponder(gw.gateway.responder)
        gw.gateway.responder = lm
        replayed = [post(gw, b) for b in (chat_body("card 1"), chat_body("rate 2"),
                                           chat_body("card 1"))]
        assert [r.json() for r in replayed] == answers[:3]
        assert replayed[0].headers["x-mipro-bench-replayed"] == "true"
        assert replayed[0].headers["x-mipro-bench-simulated"] == "true"
        assert lm.calls == 0
        # the recorded 429 is tried again live (it succeeds now); its retry is replayed
        assert post(gw, chat_body("stolen 3"), phase="test_eval").status_code == 200
        assert lm.calls == 1
        assert post(gw, chat_body("stolen 3"), phase="test_eval").json() == answers[3]
        # beyond the recording: live, and journaled
        assert post(gw, chat_body("card 1")).status_code == 200  # third time: not recorded
        assert post(gw, chat_body("new 4")).status_code == 200
        assert lm.calls == 3
        usage = gw.usage("case-1")["case-1"]
    assert (usage["optimize"].calls, usage["optimize"].replayed_calls) == (5, 3)
    assert (usage["test_eval"].calls, usage["test_eval"].replayed_calls) == (2, 1)
    assert usage["optimize"].input_tokens > 0  # replayed calls keep their recorded usage
    lines = journal_lines(journal_dir)
    assert [line["source"] for line in lines[5:]] == [
        "replayed", "replayed", "replayed", "live", "replayed", "live", "live"]
    # the journal, read again, now holds one success per call of both sessions
    index = Recording.from_journal_dir(journal_dir).index()
    assert len(index) == 7 and all(e.ok for e in index.entries())


async def test_identical_concurrent_requests_get_recorded_answers_in_order(
        tmp_path: Path) -> None:
    fp, canonical = request_fingerprint(chat_body())
    entries = [JournalEntry(scope="s", phase="p", fingerprint=fp, occurrence=i, status=200,
                            request=canonical, response={"id": f"answer-{i}", "choices": []},
                            at=float(i)) for i in range(8)]
    recording = Recording(entries=tuple(entries), lm=LMInfo("sim", "gpt-4.1-nano", None, True),
                          suite_version="t", created="t")
    with start_gateway(SIM, replay=recording, replay_mode="replay") as gw:
        url = gw.endpoint.base_url("s", "p") + "/chat/completions"
        async with httpx.AsyncClient(headers=gw.auth_headers, trust_env=False) as client:
            first = await client.post(url, json=chat_body())
            rest = await asyncio.gather(*[client.post(url, json=chat_body())
                                          for _ in range(7)])
    assert first.json()["id"] == "answer-0"
    assert sorted(r.json()["id"] for r in rest) == [f"answer-{i}" for i in range(1, 8)]


# -- strict replay ----------------------------------------------------------------------------


@pytest.fixture
def no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated LM cannot be loaded at all: a pure replay must not need it."""
    from mipro_bench.offline import sim_responder

    def unavailable() -> Any:
        raise sim_responder.PolicyUnavailable("no policy in this test")

    monkeypatch.setattr(sim_responder, "_load_policy", unavailable)


def test_strict_replay_needs_no_lm_and_refuses_what_was_not_recorded(
        recorded: tuple[Path, list[dict[str, Any]]], no_policy: None) -> None:
    journal_dir, answers = recorded
    recording = Recording.from_journal_dir(journal_dir)
    with pytest.raises(Exception, match="no policy"), start_gateway(SIM):
        pass  # the policy really is unavailable
    with start_gateway(recording.settings(), replay=recording, replay_mode="replay") as gw:
        assert [post(gw, b).json() for b in (chat_body("card 1"), chat_body("rate 2"),
                                              chat_body("card 1"))] == answers[:3]
        # a recorded error is replayed as it happened, then its retry
        assert post(gw, chat_body("stolen 3"), phase="test_eval").status_code == 429
        assert post(gw, chat_body("stolen 3"), phase="test_eval").json() == answers[3]
        changed = post(gw, chat_body("card 9"))
        hotter = post(gw, chat_body("card 1", temperature=0.9), phase="optimize")
        again = post(gw, chat_body("rate 2"))
        elsewhere = post(gw, chat_body("card 1"), scope="case-2")
        bad = HTTP.post(gw.endpoint.base_url("case-1", "p") + "/chat/completions",
                        content=b"{", headers=gw.auth_headers)
        health = HTTP.get(gw.url + "/health", headers=gw.auth_headers).json()
        usage = gw.usage("case-1")["case-1"]
    for response in (changed, hotter, again, elsewhere):
        assert response.status_code == 409, response.text
        message = response.json()["error"]["message"]
        assert "\n" not in message and "re-record" in message
        assert response.json()["error"]["type"] == "replay_mismatch"
    first = changed.json()["error"]["message"]
    assert "scope 'case-1'" in first and "phase 'optimize'" in first
    assert "messages[1].content differs" in first
    assert "temperature differs (recorded 0, now 0.9)" in hotter.json()["error"]["message"]
    assert "recorded 1 time(s)" in again.json()["error"]["message"]
    assert "no scope 'case-2'" in elsewhere.json()["error"]["message"]
    assert bad.status_code == 400
    assert health["model"] == "gpt-4.1-nano" and health["simulated"] is True
    assert usage["optimize"].replayed_calls == usage["optimize"].calls == 3
    assert usage["optimize"].errors == 3  # the three refusals
    assert usage["p"] == PhaseUsage(errors=1)  # the bad body: a 400, as without replay


def test_replay_mode_is_checked() -> None:
    recording = Recording(entries=(), lm=LMInfo("sim", "m", None, True), suite_version="t",
                          created="t")
    with pytest.raises(ValueError, match="replay_mode"), start_gateway(
            SIM, replay=recording, replay_mode="strict"):  # type: ignore[arg-type]
        pass


def test_old_usage_records_read_without_replayed_calls() -> None:
    from mipro_bench.lm.usage import usage_from_json, usage_to_json

    old = {"a": {"optimize": {"calls": 3, "input_tokens": 1, "output_tokens": 2,
                              "cost_usd": None, "errors": 0}}}
    assert usage_from_json(old)["a"]["optimize"].replayed_calls == 0
    usage = {"a": {"p": PhaseUsage(calls=2, replayed_calls=1)}}
    assert usage_from_json(usage_to_json(usage))["a"]["p"].replayed_calls == 1
    assert (PhaseUsage(calls=2, replayed_calls=1) + PhaseUsage(calls=1)).replayed_calls == 1
    settings, _ = resolve_lm_settings(env={})
    assert settings.simulated


@pytest.fixture(scope="module")
def resuming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHandle]:
    journal_dir = tmp_path_factory.mktemp("fuzz-journal")
    with start_gateway(SIM, journal_dir=journal_dir) as gw:
        assert post(gw, chat_body()).status_code == 200
    with start_gateway(SIM, journal_dir=journal_dir, replay_mode="resume",
                       replay=Recording.from_journal_dir(journal_dir)) as gw:
        yield gw


def test_fuzzed_bodies_never_get_a_5xx_with_journal_and_replay(resuming: GatewayHandle) -> None:
    from hypothesis import HealthCheck, given, settings

    from tests.test_gateway import _bodies

    @settings(max_examples=100, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=_bodies)
    def check(body: dict[str, Any]) -> None:
        response = post(resuming, body, scope="fuzz")
        assert response.status_code < 500, (body, response.text)
        assert "error" in response.json() or "choices" in response.json()

    check()
    lines = journal_lines(resuming.journal_dir or Path(), "fuzz")  # every one journaled
    assert lines and all(isinstance(line["response"], dict) for line in lines)


_SERVE_AND_WAIT = """
import sys, time
from pathlib import Path
from mipro_bench.lm.gateway import start_gateway
from mipro_bench.lm.settings import LMSettings
settings = LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)
with start_gateway(settings, journal_dir=Path(sys.argv[1]), testing=True) as gw:
    print(gw.url, gw.token, flush=True)
    time.sleep(300)
"""


def test_kill_9_loses_only_the_call_in_flight(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), os.environ.get("PYTHONPATH", "")])}
    journal_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _SERVE_AND_WAIT, str(journal_dir)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url, token = proc.stdout.readline().split()
        headers = {"Authorization": f"Bearer {token}"}
        chat = f"{url}/s/killed/optimize/v1/chat/completions"
        for i in range(20):
            assert HTTP.post(chat, json=chat_body(f"card {i}"),
                             headers=headers).status_code == 200
        assert HTTP.post(f"{url}/admin/knobs", json={"latency_s": 30},
                         headers=headers).status_code == 200
        threading.Thread(target=lambda: _post_ignoring_errors(chat, headers),
                         daemon=True).start()
        time.sleep(0.5)  # the 21st call is in flight, sleeping in the gateway
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    read = read_journal_dir(journal_dir)
    assert (len(read.entries), read.torn_lines) == (20, 0)
    assert sorted(e.request["messages"][1]["content"] for e in read.entries) == sorted(
        chat_body(f"card {i}")["messages"][1]["content"] for i in range(20))


def _post_ignoring_errors(url: str, headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
        HTTP.post(url, json=chat_body("in flight"), headers=headers, timeout=60)
