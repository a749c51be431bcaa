"""Human output: one finding per block, with the source line and a caret, like ruff."""

from __future__ import annotations

from collections import Counter

from ..errors import one_line
from . import clip_message

_COLORS = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "info": "\x1b[1;36m"}
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
# C0 controls and DEL shown as their Unicode control pictures (U+2400...), one column each, so a
# caret under an excerpt still points at the right character.
_CONTROL_PICTURES = {code: 0x2400 + code for code in range(0x20)} | {0x7F: 0x2421}

# A source line longer than this is shown as a window around the finding: a one-line template of
# a megabyte would otherwise be printed whole once per finding.
SNIPPET_LIMIT = 160
_BEFORE = 80  # characters kept before the finding's column
_AFTER = 80  # characters kept from the finding's column on (the caret included)
_CUT = "…"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{_RESET}" if color else text


def _visible_line(text: str) -> str:
    """A template line safe to print: its control characters (an ESC that would repaint the
    terminal, a carriage return that would hide the start of the line) as visible pictures."""
    return one_line(text.translate(_CONTROL_PICTURES))


def _shown(char: str) -> str:
    """How one source character is printed in a snippet (what ``_visible_line`` makes of it)."""
    return " " if char == "\t" else _visible_line(char)


def snippet(line: str, column: int, width: int = 1) -> tuple[str, int, int]:
    """The part of ``line`` to print for a finding at 1-based ``column`` spanning ``width``
    characters: ``(text, caret offset, caret width)``, both counted in printed characters.

    A long line is cut to a window around the column with ``…`` on each cut side, and every
    character is printed visibly (a bidi control as ``⟨U+202E⟩``); the offsets follow what is
    printed, so the caret stays under the character the finding is about.
    """
    at = max(column - 1, 0)
    start, end, marker = 0, len(line), ""
    if len(line) > SNIPPET_LIMIT:
        start = max(0, min(at, len(line)) - _BEFORE)
        end = min(len(line), at + _AFTER)
        marker = _CUT if start else ""
    before = marker + "".join(_shown(char) for char in line[start:at])
    marked = "".join(_shown(char) for char in line[at:min(at + max(width, 1), end)])
    after = "".join(_shown(char) for char in line[min(at + max(width, 1), end):end])
    text = before + marked + after + (_CUT if end < len(line) else "")
    # A span that runs past the end of the line keeps its full caret when nothing is cut there.
    overhang = max(0, at + width - max(len(line), at)) if end == len(line) else 0
    return text, len(before), max(len(marked) + overhang, 1)


def format_diagnostic(diagnostic, *, color: bool = False, excerpt: bool = True) -> str:
    head = (
        f"{_paint(one_line(diagnostic.location), _BOLD, color)}: "
        f"{_paint(diagnostic.code, _COLORS[diagnostic.severity], color)} "
        f"[{diagnostic.severity}] {diagnostic.name}: {one_line(clip_message(diagnostic.message))}"
    )
    lines = [head]
    if excerpt and diagnostic.excerpt:
        number = str(diagnostic.line)
        gutter = " " * len(number)
        width = 1
        if diagnostic.end_line == diagnostic.line and diagnostic.end_column and diagnostic.end_column > diagnostic.column:
            width = diagnostic.end_column - diagnostic.column
        source, offset, shown_width = snippet(diagnostic.excerpt, diagnostic.column, width)
        lines.append(_paint(f"{gutter} |", _DIM, color))
        lines.append(_paint(f"{number} | ", _DIM, color) + source)
        caret = " " * offset + "^" * shown_width
        lines.append(_paint(f"{gutter} | ", _DIM, color) + _paint(caret, _COLORS[diagnostic.severity], color))
    if diagnostic.fix is not None:
        safety = "safe" if diagnostic.fix.safe else "unsafe, needs --unsafe-fixes"
        lines.append(f"  = fix ({safety}): {one_line(clip_message(diagnostic.fix.description))}")
    return "\n".join(lines)


def format_text(reports: list, *, color: bool = False, statistics: bool = False, quiet: bool = False,
                show_fixes: bool = True) -> str:
    blocks: list[str] = []
    diagnostics = [d for report in reports for d in report.diagnostics]
    for report in reports:
        if report.error:
            blocks.append(f"error: {one_line(clip_message(report.error))}")
        if report.diff:
            blocks.append("\n".join(_visible_line(line) for line in report.diff.rstrip("\n").split("\n")))
        if not quiet:
            blocks += [f"{one_line(report.path)}: note: {one_line(clip_message(note))}" for note in report.notes]
        blocks += [format_diagnostic(d, color=color, excerpt=not quiet) for d in report.diagnostics]
    if statistics:
        blocks.append(format_statistics(diagnostics))
    if not quiet:
        blocks.append(summary_line(reports))
    return "\n\n".join(block for block in blocks if block)


def format_statistics(diagnostics: list) -> str:
    """One row per rule: how many findings, and how many of them a fix removes. A rule whose
    fix applies to some findings only (TK404 fixes some shapes, not others) stays one row."""
    counts = Counter((d.code, d.name) for d in diagnostics)
    fixable = Counter((d.code, d.name) for d in diagnostics if d.fix is not None)
    rows = []
    for (code, name), count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        fixes = fixable[(code, name)]
        mark = "" if not fixes else "  [fixable]" if fixes == count else f"  [{fixes} fixable]"
        rows.append(f"{count:6d}  {code}  {name}{mark}")
    return "\n".join(rows) if rows else "no findings"


def summary_line(reports: list) -> str:
    diagnostics = [d for report in reports for d in report.diagnostics]
    by_severity = Counter(d.severity for d in diagnostics)
    files = len(reports)
    templates = sum(report.templates for report in reports)
    fixed = sum(report.fixed for report in reports)
    errors = sum(1 for report in reports if report.error)
    if not diagnostics and not errors:
        text = f"All clean: {templates} template(s) in {files} source(s)"
    elif not diagnostics:
        text = f"No findings in {templates} template(s) of {files} source(s)"
    else:
        parts = [f"{by_severity[level]} {level}{'s' if by_severity[level] != 1 else ''}"
                 for level in ("error", "warning", "info") if by_severity[level]]
        safe = sum(1 for d in diagnostics if d.fix is not None and d.fix.safe)
        unsafe = sum(1 for d in diagnostics if d.fix is not None and not d.fix.safe)
        text = f"Found {len(diagnostics)} finding(s) ({', '.join(parts)}) in {templates} template(s)"
        if safe:
            text += f"; {safe} fixable with --fix"
        if unsafe:
            text += f"; {unsafe} fixable with --unsafe-fixes"
    # --diff shows the fixes without writing them: saying "applied" there would be false.
    shown = sum(report.fixed for report in reports if report.diff)
    if fixed - shown:
        text += f"; applied {fixed - shown} fix(es)"
    if shown:
        text += f"; {shown} fix(es) shown in the diff above, not applied"
    if errors:
        text += f"; {errors} source(s) could not be read"
    return text + "."
