"""What the journal and replay cost: bytes per call, per-call overhead, replay speed.

Run with numbers: `pytest benchmarks/perf/test_journal_perf.py --benchmark-enable -s`.
In the default run (`--benchmark-disable`) the test runs once on a small sample
as a plain test: it checks every call succeeded and was counted, prints the
table, and asserts no wall-clock limit (two shared cores make timings too
noisy to gate on).

Measured side by side in one run, sequential calls over one pooled httpx
connection per gateway, requests shaped like the task app's (77 labels, the
forced tool), interleaved call by call so machine noise hits all columns alike:
- a simulated gateway with no journal (live),
- the same with a journal (live, one JSON line written and flushed per call),
- a pure-replay gateway answering the same requests from the recording saved
  from that journal (no LM behind it at all).
Plus journal bytes per call (raw and in the gzip'd recording) and the
in-process cost of the fingerprint and of one journal write.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mipro_bench.lm.fingerprint import request_fingerprint
from mipro_bench.lm.gateway import GatewayHandle, start_gateway
from mipro_bench.lm.journal import JournalEntry, JournalWriter
from mipro_bench.lm.recording import Recording
from mipro_bench.lm.settings import LMSettings
from mipro_bench.prompt import BASELINE_INSTRUCTION, build_messages, classify_tool, tool_choice

SIM = LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)
WORDS = ("card", "rate", "top_up", "refund", "transfer", "pin", "atm")
LABELS = tuple(f"intent_{i:02d}_{WORDS[i % len(WORDS)]}" for i in range(77))


def body(i: int) -> dict[str, Any]:
    query = f"question {i} about my {WORDS[i % len(WORDS)].replace('_', ' ')}"
    return {"model": SIM.model, "messages": build_messages(BASELINE_INSTRUCTION, query, LABELS),
            "tools": [classify_tool(LABELS)], "tool_choice": tool_choice(),
            "temperature": 0.0, "max_tokens": 256}


def sample_size(benchmark: Any, enabled: int, disabled: int) -> int:
    return disabled if getattr(benchmark, "disabled", True) else enabled


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_us(fn: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def test_journal_and_replay_cost(benchmark: Any, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    n = sample_size(benchmark, enabled=1500, disabled=60)
    warmup = 10
    bodies = [body(i) for i in range(n + warmup)]
    journal_dir = tmp_path / "journal"
    rows: dict[str, list[float]] = {"live, no journal": [], "live, journal on": [],
                                    "replay (recording)": []}

    def record_then_measure() -> None:
        with contextlib.ExitStack() as stack:
            plain = stack.enter_context(start_gateway(SIM))
            journaled = stack.enter_context(start_gateway(SIM, journal_dir=journal_dir))
            # Record first (the replay gateway needs the recording), then interleave all three.
            clients = {}
            for name, gw in (("live, no journal", plain), ("live, journal on", journaled)):
                clients[name] = (gw, stack.enter_context(httpx.Client(
                    headers=gw.auth_headers, trust_env=False, timeout=30)))
            recorder = clients["live, journal on"][1]
            for b in bodies:  # the recording: the same requests, one occurrence each
                assert recorder.post(url(journaled, "record"), json=b).status_code == 200
            recording = Recording.from_journal_dir(journal_dir)
            recording.save(tmp_path / "session.jsonl.gz")
            replaying = stack.enter_context(start_gateway(
                SIM, replay=Recording.load(tmp_path / "session.jsonl.gz"), replay_mode="replay"))
            clients["replay (recording)"] = (replaying, stack.enter_context(httpx.Client(
                headers=replaying.auth_headers, trust_env=False, timeout=30)))
            for i, b in enumerate(bodies):
                for name, (gw, client) in clients.items():
                    scope = "record" if gw is replaying else "measure"
                    started = time.perf_counter()
                    response = client.post(url(gw, scope), json=b)
                    elapsed = (time.perf_counter() - started) * 1e6
                    assert response.status_code == 200, response.text
                    if i >= warmup:
                        rows[name].append(elapsed)
            assert replaying.usage()["record"]["p"].replayed_calls == n + warmup
            assert journaled.usage()["measure"]["p"].calls == n + warmup

    benchmark.pedantic(record_then_measure, rounds=1, iterations=1)

    # Bytes: the journal of the recording session (one line per call), and the gzip'd file.
    journal_bytes = (journal_dir / "record.journal.jsonl").stat().st_size
    recording_bytes = (tmp_path / "session.jsonl.gz").stat().st_size
    calls = n + warmup
    # In-process costs of the two things the journal adds to a call.
    sample = bodies[0]
    fingerprint_us = timed_us(lambda: request_fingerprint(sample), 200)
    fp, canonical = request_fingerprint(sample)
    entry = JournalEntry(scope="x", phase="p", fingerprint=fp, occurrence=0, status=200,
                         request=canonical, response=Recording.load(
                             tmp_path / "session.jsonl.gz").entries[0].response)
    writer = JournalWriter(tmp_path / "bench-writes")
    write_us = timed_us(lambda: writer.write(entry), 200)
    writer.close()

    p50 = {name: statistics.median(values) for name, values in rows.items()}
    off, on, replay = p50["live, no journal"], p50["live, journal on"], p50["replay (recording)"]
    lines = [f"\njournal and replay, sequential, n={n} per column (interleaved), 77 intents, "
             "simulated LM",
             f"{'per call':<34}{'p50 us':>10}{'p95 us':>10}{'x no journal':>14}"]
    for name, values in rows.items():
        lines.append(f"{name:<34}{p50[name]:>10.0f}{pct(values, 0.95):>10.0f}"
                     f"{p50[name] / off:>14.2f}")
    lines += [
        f"journal overhead per call (p50 on - off): {on - off:.0f} us "
        f"(ratio on/off {on / off:.2f})",
        f"replay / live simulated call (p50): {replay / off:.2f}",
        f"in process: fingerprint {fingerprint_us:.0f} us, one journal write "
        f"{write_us:.0f} us (json + write + flush)",
        f"journal bytes per call: {journal_bytes / calls:.0f} B raw; "
        f"{recording_bytes / calls:.0f} B in the gzip'd recording "
        f"({journal_bytes / recording_bytes:.1f}x smaller)",
    ]
    benchmark.extra_info.update({
        "p50_live_us": off, "p50_journal_us": on, "p50_replay_us": replay,
        "journal_overhead_ratio": on / off, "replay_ratio": replay / off,
        "journal_bytes_per_call": journal_bytes / calls,
        "recording_bytes_per_call": recording_bytes / calls,
        "fingerprint_us": fingerprint_us, "journal_write_us": write_us})
    with capsys.disabled():
        print("\n".join(lines))


def url(gw: GatewayHandle, scope: str) -> str:
    return gw.endpoint.base_url(scope, "p") + "/chat/completions"
