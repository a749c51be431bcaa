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


# The longest finding message, file error or note any format prints. Messages quote what a
# template controls (values it raised with, names it read); SARIF viewers and GitHub annotations
# have size limits, and a CI log of one megabyte-long line helps no one. Render failures are cut
# shorter where they are described (``RenderFailure.describe``); this is the backstop for the rest.
MESSAGE_LIMIT = 2000


def clip_message(text: str | None) -> str | None:
    """``text`` cut to ``MESSAGE_LIMIT`` characters (its middle left out, with how much)."""
    from ..errors import clip_middle

    return clip_middle(text, MESSAGE_LIMIT) if text else text


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
