"""What lint produces: diagnostics, and the fixes some of them carry."""

from __future__ import annotations

import dataclasses
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "error")


def severity_rank(severity: str) -> int:
    """0 info, 1 warning, 2 error (for ``--fail-on`` comparisons)."""
    return SEVERITIES.index(severity)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``template text[start:end]`` (character offsets) with ``replacement``."""

    start: int
    end: int
    replacement: str


@dataclasses.dataclass(frozen=True)
class Fix:
    """A set of non-overlapping edits that removes one finding.

    ``safe`` fixes keep the rendered output of every built-in fixture byte-identical (a test
    proves it for every rule that offers one); unsafe fixes change behaviour in ways a user should
    review (and run only with ``--unsafe-fixes``).
    """

    description: str
    edits: tuple[Edit, ...]
    safe: bool = True


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """One finding, located in the template text (1-based line and column).

    The runner fills in the rest: ``location`` is where the finding is in the file the user
    edits (``t.jinja:3:5`` or ``tokenizer_config.json[tool_use]:3:5``), ``path`` the file,
    ``template_name`` the named template for embedded ones, ``excerpt`` the template line.
    """

    code: str
    name: str
    severity: Severity
    message: str
    line: int
    column: int = 1
    end_line: int | None = None
    end_column: int | None = None
    fix: Fix | None = None
    engines: tuple[str, ...] = ()
    location: str = ""
    path: str = ""
    template_name: str = ""
    excerpt: str = ""  # the template line the finding is on
    file_line: int = 0  # where the finding is in the file itself (for embedded templates: where
    file_column: int = 0  # the template's JSON string starts); 0 when unknown

    def sort_key(self) -> tuple:
        return (self.path, self.template_name, self.line, self.column, self.code)
