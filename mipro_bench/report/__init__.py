"""Reports of a comparison: terminal table, Markdown, self-contained HTML, and the files.

Each renderer takes a `compare.Comparison` and returns a string; `write_reports`
puts the JSON, Markdown and HTML of one run into the results directory.
"""

from __future__ import annotations

from mipro_bench.report.html import render_html
from mipro_bench.report.markdown import render_markdown
from mipro_bench.report.table import render_table
from mipro_bench.report.write import ReportError, write_reports

__all__ = ["ReportError", "render_html", "render_markdown", "render_table", "write_reports"]
