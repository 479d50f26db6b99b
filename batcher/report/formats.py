"""A report in the format asked for: the one place that picks a renderer."""

from __future__ import annotations

from batcher.errors import UsageError
from batcher.output import to_json
from batcher.report.build import FORMATS, Report
from batcher.report.html import render_html
from batcher.report.render import render_csv, render_md, render_table, report_dict


def render_report(report: Report, fmt: str = "table", *, wide: bool = False) -> str:
    """`report` as text in `fmt`: table (`wide`: every column, not just the 100 columns'
    worth), json, csv, md or html. Raises UsageError otherwise."""
    if fmt == "table":
        return render_table(report, wide=wide)
    if fmt == "json":
        return to_json(report_dict(report)) + "\n"
    if fmt == "csv":
        return render_csv(report)
    if fmt == "md":
        return render_md(report)
    if fmt == "html":
        return render_html(report)
    raise UsageError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
