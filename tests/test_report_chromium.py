"""The HTML report as a browser renders it: headless Chromium, offline, fresh profile.

Chromium's own background connections (updates, sync, safe browsing) are
switched off by flags; the report loads nothing from the network anyway.

Without Chromium the browser tests skip on a developer's machine, but fail under
CI=true: CI installs Chromium, and a failed install must not turn into a quiet skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mipro_bench.compare import build_comparison
from mipro_bench.report import write_reports
from tests.factories import record

pytestmark = pytest.mark.chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--hide-scrollbars",
]
OPTIMIZED_BLUE = (0x2F, 0x6F, 0xB0)  # the optimized-accuracy bars in charts.accuracy_chart
BANNER_YELLOW = (0xFF, 0xF3, 0xCD)  # the SIMULATED LM banner's background


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    return env.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_chromium(found: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The browser's path; a skip without it, or a failure under CI=true."""
    if found is None:
        missing = "chromium is not installed (Debian: apt-get install -y chromium)"
        if in_ci(env):
            pytest.fail(f"{missing}; CI=true needs the browser test to run, not to skip")
        pytest.skip(missing)
    return found


def test_missing_chromium_skips_locally_and_fails_in_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_chromium(None, env={})
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the browser test"):
        require_chromium(None, env={"CI": "true"})
    assert require_chromium("/usr/bin/chromium", env={"CI": "true"}) == "/usr/bin/chromium"


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = require_chromium(CHROMIUM)
    return subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recs = []
    for seed in (0, 1):
        recs.append(record(optimizer="dspy_miprov2", seed=seed, baseline="1" * 10 + "0" * 30,
                           optimized="1" * 34 + "0" * 6,
                           trajectory=[(4, 0.4), (12, 0.6), (30, 0.85 + seed / 100)]))
        recs.append(record(optimizer="synth_mipro", seed=seed, baseline="1" * 10 + "0" * 30,
                           optimized="1" * 22 + "0" * 18, trajectory=[(10, 0.5), (40, 0.7)]))
    comparison = build_comparison(recs, n_resamples=500)
    out = tmp_path_factory.mktemp("results")
    return write_reports(comparison, out, "20260101_000000")["html"]


def test_chromium_renders_the_tables_and_charts(report: Path, tmp_path: Path) -> None:
    done = _chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert 'id="results-table"' in dom and 'id="pairs-table"' in dom
    assert "dspy_miprov2 better" in dom
    assert dom.count("<svg") == 3
    for chart in ("chart-accuracy", "chart-trajectory", "chart-intents"):
        assert f'id="{chart}"' in dom
    assert "SIMULATED LM" in dom


def test_chromium_screenshot_shows_the_charts_and_banner(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    done = _chromium(tmp_path / "profile", "--window-size=1280,2400",
                     f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    colors = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colors > 200, f"the page rendered only {colors} colors"

    def count(rgb: tuple[int, int, int]) -> int:
        return int(np.all(np.abs(pixels.astype(int) - rgb) <= 3, axis=-1).sum())

    # Painted SVG bars and the banner, not just markup in the DOM.
    assert count(OPTIMIZED_BLUE) > 2000
    assert count(BANNER_YELLOW) > 5000
