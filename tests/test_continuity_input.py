"""Bad --resume / --record / --replay input: one line, exit 2 (pytest: its usage error, 4),
before anything runs and with nothing written or overwritten; and a --resume that finds an
incompatible record reruns that case and says why."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import run_comparison
import run_dspy_mipro_banking77
import run_synth_mipro_banking77
from mipro_bench.lm.recording import FORMAT, FORMAT_VERSION
from mipro_bench.resume import key_hash
from tests.cli_support import call_main
from tests.plugin_support import REPO, clean_env, run_benchmarks

CLIS: dict[str, Callable[[list[str]], int]] = {
    "run_comparison.py": run_comparison.main,
    "run_dspy_mipro_banking77.py": run_dspy_mipro_banking77.main,
    "run_synth_mipro_banking77.py": run_synth_mipro_banking77.main,
}


def recording_of_kind(tmp: Path, kind: str) -> Path:
    """A file `--replay` must refuse, of the given kind."""
    path = tmp / f"{kind}.recording.gz"
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": "gpt-4.1-nano",
              "lm": {"backend": "sim", "model": "gpt-4.1-nano", "simulated": True}}
    whole = gzip.compress((json.dumps(header) + "\n").encode() * 50, mtime=0)
    if kind == "missing":
        return path
    path.write_bytes({
        "truncated": whole[: len(whole) // 2],  # a copy cut short (a killed cp, a full disk)
        "foreign_gzip": gzip.compress(b"id,text\n1,hello\n", mtime=0),  # someone's CSV.gz
        "not_gzip": b'{"format": "something else"}\n',
        "newer_format": gzip.compress(
            (json.dumps({**header, "format_version": FORMAT_VERSION + 1}) + "\n").encode()),
    }[kind])
    return path


MESSAGES = {
    "missing": "does not exist",
    "truncated": "is truncated (the gzip stream ends early)",
    "foreign_gzip": f"is not a {FORMAT} file (foreign gzip content)",
    "not_gzip": "is not gzip data",
    "newer_format": f"format version {FORMAT_VERSION + 1}",
}


@pytest.fixture
def untouched(tmp_path: Path) -> Callable[[], None]:
    """A results dir holding a record; the returned check says it is exactly as it was."""
    results = tmp_path / "results"
    results.mkdir()
    keep = results / "banking77_dspy_mipro_20260101_000000.json"
    keep.write_text('{"kept": true}\n', encoding="utf-8")

    def check() -> None:
        assert [p.name for p in results.iterdir()] == [keep.name]  # no journal, no record
        assert keep.read_text(encoding="utf-8") == '{"kept": true}\n'

    return check


def one_error_line(prog: str, err: str) -> str:
    """The error line (the Synth CLI may say which backend it uses first: not an error)."""
    lines = [line for line in err.strip().splitlines() if line.startswith(prog)]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("kind", sorted(MESSAGES))
@pytest.mark.parametrize("prog", sorted(CLIS))
def test_a_bad_recording_is_one_line_and_exit_2(prog: str, kind: str, tmp_path: Path,
                                                untouched: Callable[[], None],
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = recording_of_kind(tmp_path, kind)
    before = bad.read_bytes() if bad.exists() else None
    code, err = call_main(CLIS[prog], ["--replay", str(bad), "--results-dir",
                                       str(tmp_path / "results")], capsys)
    assert code == 2, err
    line = one_error_line(prog, err)
    assert "--replay: " in line and str(bad) in line and MESSAGES[kind] in line, line
    untouched()
    assert (bad.read_bytes() if bad.exists() else None) == before


@pytest.mark.parametrize(("argv", "message"), [
    (["--replay", "{rec}", "--resume"], "--replay answers from a recording only; it cannot "
                                        "be combined with --resume"),
    (["--resume", "--results-dir", "{file}/results"], "{file} is not a directory"),
    (["--record", "{file}/run.recording.gz"], "--record {file}/run.recording.gz: {file} is "
                                              "not a directory"),
    (["--record", "{tmp}/no/such/run.recording.gz"], "folder {tmp}/no/such does not exist"),
    (["--record", "{tmp}"], "is a directory; name a file"),
])
@pytest.mark.parametrize("prog", sorted(CLIS))
def test_impossible_continuity_is_one_line_and_exit_2(
        prog: str, argv: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before the run: found out at its end, each would lose a paid run's records
    or its recording. (Run as root here, so "not writable" is a path under a regular file.)"""
    monkeypatch.chdir(tmp_path)
    regular = tmp_path / "notes.txt"
    regular.write_text("a regular file\n", encoding="utf-8")
    recording = tmp_path / "ok.recording.gz"
    shutil.copyfile(recording_of_kind(tmp_path, "truncated"), recording)  # never read
    fill = {"{rec}": str(recording), "{file}": str(regular), "{tmp}": str(tmp_path)}

    def filled(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    args = [filled(a) for a in argv]
    if "--results-dir" not in args:
        args += ["--results-dir", str(tmp_path / "results")]
    code, err = call_main(CLIS[prog], args, capsys)
    assert code == 2, err
    assert filled(message) in one_error_line(prog, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.txt", "ok.recording.gz", "truncated.recording.gz"])  # nothing created
    assert regular.read_text(encoding="utf-8") == "a regular file\n"


def test_pytest_refuses_a_bad_recording_in_one_line(tmp_path: Path,
                                                   tiny_data_dir: Path) -> None:
    bad = recording_of_kind(tmp_path, "truncated")
    run = run_benchmarks(tmp_path, tiny_data_dir, "--mipro-replay", str(bad))
    assert run.returncode == 4, run.explain()  # pytest's own usage-error exit code
    assert run.stdout.strip() == ""
    assert run.stderr.strip() == (f"ERROR: --mipro-replay: recording {bad} is truncated (the "
                                  "gzip stream ends early); save it again"), run.stderr
    assert not run.results_dir.exists()
    both = run_benchmarks(tmp_path, tiny_data_dir, "--mipro-replay", str(bad),
                          "--mipro-resume", name="both")
    assert both.returncode == 4
    assert both.stderr.strip() == ("ERROR: --mipro-replay answers from a recording only; it "
                                   "cannot be combined with --mipro-resume"), both.stderr


# --- an incompatible record on --resume: rerun, and say why --------------------------------

DSPY = [sys.executable, str(REPO / "run_dspy_mipro_banking77.py"), "--trials", "2",
        "--train-size", "20", "--val-size", "10"]
LABEL = "resume: dspy_miprov2 instruction_only seed 1"


def dspy_cli(results: Path, data_dir: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run([*DSPY, "--results-dir", str(results), *args], cwd=REPO,
                          env=clean_env(data_dir), capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def records_in(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in results.glob("banking77_*.json")
            if not p.name.endswith(".program.json")}


@pytest.mark.integration
def test_resume_reruns_a_case_whose_record_is_for_another_panel_or_suite_version(
        tmp_path: Path, real_data_dir: Path) -> None:
    results = tmp_path / "results"
    code, out = dspy_cli(results, real_data_dir, "--test-size", "40")
    assert code == 0, out
    (first,) = records_in(results)
    first_bytes = records_in(results)[first]

    # Another panel (a different test split): not reused, rerun, the reason printed.
    code, out = dspy_cli(results, real_data_dir, "--test-size", "30", "--resume")
    assert code == 0, out
    assert f"{LABEL}: {first} is for another panel; the case is rerun" in out, out
    after = records_in(results)
    assert len(after) == 2 and after[first] == first_bytes  # rerun beside it, not over it
    (second,) = set(after) - {first}
    assert len(json.loads(after[second])["results"]["per_item"]) == 30

    # A record of another suite version (doctored, its key hash made consistent): rerun.
    record = json.loads(after[second])
    record["details"]["case_key"]["suite_version"] = "0.0.0-doctored"
    record["details"]["case_key_hash"] = key_hash(record["details"]["case_key"])
    doctored = json.dumps(record).encode()
    (results / second).write_bytes(doctored)
    code, out = dspy_cli(results, real_data_dir, "--test-size", "30", "--resume")
    assert code == 0, out
    assert f"{LABEL}: {second} is for another suite version; the case is rerun" in out, out
    final = records_in(results)
    assert len(final) == 3  # a new record; neither earlier one overwritten
    assert final[first] == first_bytes and final[second] == doctored
