"""LM backends are plugins: a toy backend registered from a throwaway dist-info (as a third
party's package would register it) is an `--lm` choice, runs a small comparison, and the
records name it; the built-ins come from the same entry points; unknown names are one
line; and the core never imports the offline doubles."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from mipro_bench.lm import backends
from mipro_bench.lm.backends import ENTRY_POINT_GROUP, UnknownLMBackend, resolve_lm_settings
from tests.plugin_support import REPO, clean_env

TINY = Path(__file__).parent / "data" / "tiny_banking77"
PACKAGE = REPO / "mipro_bench"


def register_toy(tmp: Path) -> Path:
    """A site directory holding only a dist-info that registers tests.toy_lm_backend."""
    site = tmp / "site"
    dist = site / "toy_lm_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-lm-backend\n"
                                   "Version: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ntoy = tests.toy_lm_backend:TOY\n", encoding="utf-8")
    return site


@pytest.fixture
def toy_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(register_toy(tmp_path)))
    backends._load.cache_clear()
    yield tmp_path
    backends._load.cache_clear()


def test_the_built_ins_are_entry_points_of_one_group() -> None:
    points = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"sim", "respx", "openai", "api-base", "local"} <= set(points)
    assert points["sim"].startswith("mipro_bench.offline.")
    assert points["respx"].startswith("mipro_bench.offline.")
    for name in points:
        assert backends.get_backend(name).name == name


def test_an_unknown_backend_is_one_line_naming_the_registered_ones() -> None:
    with pytest.raises(UnknownLMBackend) as caught:
        resolve_lm_settings(lm="gpt", env={})
    message = str(caught.value)
    assert "\n" not in message and "'gpt'" in message
    assert "api-base, local, openai, respx, sim" in message


def test_an_unknown_backend_on_the_command_line_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "run_comparison.py"), "--lm", "gpt",
                           "--results-dir", str(tmp_path)], cwd=REPO, env=clean_env(TINY),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "invalid choice: 'gpt'" in done.stderr
    assert "'sim'" in done.stderr and "'api-base'" in done.stderr


def test_a_registered_toy_backend_resolves_by_name(toy_registered: Path) -> None:
    assert "toy" in backends.names()
    settings, line = resolve_lm_settings(lm="toy", env={})
    assert (settings.backend, settings.plugin, settings.simulated) == ("toy", "toy", True)
    assert line.startswith("LM: toy backend")


def test_a_small_comparison_runs_on_a_toy_backend(tmp_path: Path) -> None:
    site = register_toy(tmp_path)
    log = tmp_path / "toy-calls.jsonl"
    results = tmp_path / "results"
    env = clean_env(TINY)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["TOY_LM_LOG"] = str(log)
    cmd = [sys.executable, str(REPO / "run_comparison.py"), "--dspy-only", "--lm", "toy",
           "--train-size", "8", "--val-size", "4", "--test-size", "6", "--trials", "2",
           "--modes", "instruction_only", "--floors", "off", "--results-dir", str(results)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "LM: toy backend (always card_arrival)" in output
    found = sorted(results.glob("comparison_*.json"))
    assert found, output[-4000:]
    records = json.loads(found[-1].read_text(encoding="utf-8"))["records"]
    assert records
    calls_seen = len(log.read_text(encoding="utf-8").splitlines())
    counted = 0
    for record in records:
        assert record["lm"]["backend"] == "toy"
        assert record["lm"]["simulated"] is True
        assert record["status"] == "succeeded", record.get("error")
        for phase in record["usage"].values():
            counted += phase["calls"]
        results = record["results"]
        scored = [results, *results.get("by_executor", {}).values()]
        items = [i for r in scored for i in r["per_item"] + r["baseline_per_item"]]
        assert items
        assert {i["predicted"] for i in items} == {"card_arrival"}
    # Every call the records count went through the toy (shared work may be counted once).
    assert 0 < counted <= calls_seen


# --- the core never imports the offline doubles --------------------------------------------


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports included)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-node.level])
                base = f"{package}.{base}" if base else package
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def test_no_core_module_imports_the_offline_package() -> None:
    core = [p for p in [*PACKAGE.rglob("*.py"), *(REPO / "task_app").rglob("*.py")]
            if "offline" not in p.relative_to(REPO).parts]
    assert len(core) > 50
    hits = [f"{p.relative_to(REPO)}:{line}: {name}" for p in core
            for line, name in _imports(p)
            if name == "mipro_bench.offline" or name.startswith("mipro_bench.offline.")]
    assert not hits, "the core imports the offline package:\n" + "\n".join(hits)
