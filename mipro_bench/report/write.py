"""Writing the three report files of one run, each atomically.

A reader (CI's artifact upload, `--mipro-compare latest`, a person reloading
the HTML) must never see a half-written file: each is written to a temp file
beside it and renamed into place.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from mipro_bench.compare import Comparison
from mipro_bench.report.html import render_html
from mipro_bench.report.markdown import render_markdown
from mipro_bench.results import write_json_atomic

REPORT_MODE = 0o644
_STAMP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ReportError(ValueError):
    """Reports that cannot be written as asked (the message says why)."""


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, REPORT_MODE)  # mkstemp makes 0600; a report is for others to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_reports(comparison: Comparison, results_dir: Path | str, stamp: str
                  ) -> dict[str, Path]:
    """comparison_<stamp>.json, comparison_<stamp>.md and report_<stamp>.html.

    Returns {"json": ..., "markdown": ..., "html": ...}. A file of the same stamp is
    replaced (the stamp names the run).
    """
    if not isinstance(stamp, str) or not _STAMP.match(stamp):
        raise ReportError(
            f"report stamp {stamp!r} is not usable in a file name "
            "(letters, digits, '_', '-', '.'; e.g. 20260101_120000)"
        )
    directory = Path(results_dir)
    if directory.exists() and not directory.is_dir():
        raise ReportError(f"{directory}: exists and is not a directory")
    # Render everything first: a rendering error must not leave a partial set of files.
    markdown = render_markdown(comparison)
    html = render_html(comparison)
    payload = comparison.to_dict()
    return {
        "json": write_json_atomic(directory / f"comparison_{stamp}.json", payload),
        "markdown": write_text_atomic(directory / f"comparison_{stamp}.md", markdown),
        "html": write_text_atomic(directory / f"report_{stamp}.html", html),
    }
