"""GitHub Actions workflow commands: each finding becomes an annotation on the pull request."""

from __future__ import annotations

from . import clip_message

_LEVELS = {"error": "error", "warning": "warning", "info": "notice"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(reports: list) -> str:
    lines = []
    for report in reports:
        if report.error:
            lines.append(f"::error file={_escape_property(report.path)},title=templatekit::{_escape_data(clip_message(report.error))}")
        for d in report.diagnostics:
            where = f" (template {d.template_name}, line {d.line})" if d.template_name else ""
            properties = (
                f"file={_escape_property(d.path)},line={d.file_line or d.line},col={d.file_column or d.column},"
                f"title={_escape_property(f'{d.code} {d.name}')}"
            )
            lines.append(f"::{_LEVELS[d.severity]} {properties}::{_escape_data(clip_message(d.message) + where)}")
    return "\n".join(lines)
