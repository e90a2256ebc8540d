"""The recording file: one gzip'd JSON-lines file per session, and its one-line refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from mipro_bench.lm.gateway import start_gateway
from mipro_bench.lm.journal import JournalEntry
from mipro_bench.lm.recording import FORMAT, FORMAT_VERSION, Recording, RecordingError
from mipro_bench.lm.settings import LMSettings
from mipro_bench.results import LMInfo

SIM = LMSettings(backend="sim", model="gpt-4.1-nano", base_url=None)


def entry(i: int, scope: str = "s", status: int = 200) -> JournalEntry:
    return JournalEntry(scope=scope, phase="p", fingerprint=f"fp{i % 3}", occurrence=i // 3,
                        status=status, request={"model": "m", "messages": [{"c": i}]},
                        response={"id": f"r{i}"}, input_tokens=i, output_tokens=1,
                        latency_s=0.001, at=float(i))


def recording(n: int = 7) -> Recording:
    return Recording(entries=tuple(entry(i) for i in range(n)),
                     lm=LMInfo("openai", "gpt-4.1-nano", "https://api.openai.com/v1", False),
                     suite_version="0.1.0", created="2026-01-01T00:00:00+00:00")


def test_save_then_load_is_the_same_recording(tmp_path: Path) -> None:
    path = recording().save(tmp_path / "sub" / "session.jsonl.gz")
    header = json.loads(gzip.decompress(path.read_bytes()).splitlines()[0])
    assert header == {"format": FORMAT, "format_version": FORMAT_VERSION,
                      "suite_version": "0.1.0", "model": "gpt-4.1-nano",
                      "lm": {"backend": "openai", "model": "gpt-4.1-nano",
                             "base_url": "https://api.openai.com/v1", "simulated": False,
                             "replayed_from": None, "transport": "http"},
                      "created": "2026-01-01T00:00:00+00:00", "entries": 7, "scopes": 1}
    loaded = Recording.load(path)
    assert loaded == recording()
    assert loaded.model == "gpt-4.1-nano"
    assert loaded.settings().backend == "openai" and loaded.settings().model == "gpt-4.1-nano"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644  # shared like a record, not mkstemp's 0600


def test_from_journal_dir_dedupes_and_keeps_the_lm_the_gateway_noted(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with start_gateway(SIM, journal_dir=journal) as gw:
        url = gw.endpoint.base_url("case", "optimize") + "/chat/completions"
        body = {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "card?"}]}
        for _ in range(2):
            assert httpx.post(url, json=body, headers=gw.auth_headers,
                              trust_env=False).status_code == 200
    first = Recording.from_journal_dir(journal)
    # a resumed session journaling into the same dir adds replayed copies: not duplicated
    with start_gateway(SIM, journal_dir=journal, replay=first) as gw:
        again_url = gw.endpoint.base_url("case", "optimize") + "/chat/completions"
        for _ in range(2):
            replayed = httpx.post(again_url, json=body, headers=gw.auth_headers,
                                  trust_env=False)
            assert replayed.headers.get("x-mipro-bench-replayed") == "true"
    again = Recording.from_journal_dir(journal)
    assert len(first.entries) == len(again.entries) == 2
    assert again.lm == LMInfo("sim", "gpt-4.1-nano", None, True)
    assert again.torn_lines == 0
    assert Recording.load(again.save(tmp_path / "r.gz")).entries == again.entries


def test_lm_base_url_never_keeps_credentials() -> None:
    from mipro_bench.lm.recording import lm_info

    settings = LMSettings(backend="compatible", model="m",
                          base_url="https://user:pw@example.test:8443/v1?key=abc#x")
    assert lm_info(settings).base_url == "https://example.test:8443/v1"


def _refusal(path: Path) -> str:
    with pytest.raises(RecordingError) as info:
        Recording.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, ValueError)
    return message


def test_each_bad_file_gets_one_clear_line(tmp_path: Path) -> None:
    good = recording(200).save(tmp_path / "good.gz").read_bytes()
    cases = {
        "missing.gz": None,
        "truncated.gz": good[: len(good) // 2],
        "corrupt.gz": good[:40] + bytes(b ^ 0xFF for b in good[40:80]) + good[80:],
        "plain.jsonl": b'{"format": "mipro-bench-lm-recording"}\n',
        "bad-crc.gz": good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:],
        "foreign.gz": gzip.compress(b"hello, world\n"),
        "other-version.gz": gzip.compress(json.dumps(
            {"format": FORMAT, "format_version": 99}).encode() + b"\n"),
        "bad-entry.gz": gzip.compress(json.dumps(recording().header()).encode()
                                      + b"\n{\"scope\": 1}\n"),
        "empty.gz": gzip.compress(b""),
    }
    messages = {}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        messages[name] = _refusal(path)
    assert "does not exist" in messages["missing.gz"]
    assert "truncated" in messages["truncated.gz"]
    assert "corrupt" in messages["corrupt.gz"] or "truncated" in messages["corrupt.gz"]
    assert "not gzip" in messages["plain.jsonl"]
    assert "corrupt (gzip: CRC check failed" in messages["bad-crc.gz"]
    assert "not a mipro-bench-lm-recording file" in messages["foreign.gz"]
    assert "format version 99" in messages["other-version.gz"]
    assert "line 2" in messages["bad-entry.gz"]
    assert "not a mipro-bench-lm-recording file" in messages["empty.gz"]
    assert "is a directory" in _refusal(tmp_path)
    with pytest.raises(RecordingError, match="does not exist"):
        Recording.from_journal_dir(tmp_path / "nope")
    with pytest.raises(RecordingError, match="pass lm="):
        Recording.from_journal_dir(tmp_path)
