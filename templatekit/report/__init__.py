"""Lint output formats. Each formatter turns file reports into a string; cli.py prints it."""

from __future__ import annotations

FORMATS = ("text", "json", "sarif", "github")


def format_reports(reports: list, output_format: str, **options) -> str:
    """Render ``reports`` (``lint.runner.FileReport``) in one of ``FORMATS``."""
    if output_format == "json":
        from .json_report import format_json

        return format_json(reports)
    if output_format == "sarif":
        from .sarif import format_sarif

        return format_sarif(reports)
    if output_format == "github":
        from .github import format_github

        return format_github(reports)
    from .text import format_text

    return format_text(reports, **options)
