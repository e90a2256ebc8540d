"""The installed package never claims an import name a PyPI distribution already uses."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_no_top_level_fixtures_package_is_built() -> None:
    """`fixtures` is a PyPI distribution (testing-cabal's): the plugin's fixtures live in
    mipro_bench.fixtures, and the repository's fixtures/ folder is not a package."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.startswith("fixtures") for pattern in include), include
    assert not (REPO / "fixtures" / "__init__.py").exists()
    assert importlib.util.find_spec("mipro_bench.fixtures.lm") is not None


def test_the_plugin_brings_its_fixtures_without_a_conftest(tmp_path: Path) -> None:
    """A project with no conftest gets the plugin's session fixtures (what `pip install
    mipro-bench` users get)."""
    (tmp_path / "test_uses_fixtures.py").write_text(
        "def test_it(bench_options, lm_settings):\n"
        "    assert bench_options.train_size == 100\n"
        "    assert lm_settings.simulated\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
