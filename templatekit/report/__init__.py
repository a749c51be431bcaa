"""Lint output formats. Each formatter turns file reports into a string; cli.py prints it."""

from __future__ import annotations

import json
import re
from typing import Any

FORMATS = ("text", "json", "sarif", "github")

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON with non-ASCII text kept readable.

    A lone surrogate (a template can print one; a JSON source can hold ``"\\ud800"``) cannot be
    written as UTF-8: it is escaped as ``\\udXXX``, which JSON readers decode back to the same
    string, so the output is valid UTF-8 and valid JSON. Surrogates occur only inside strings.
    """
    text = json.dumps(payload, ensure_ascii=False, indent=2)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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
