"""Apply the fixes diagnostics carry to template text."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .model import Diagnostic, Edit


def apply_fixes(text: str, diagnostics: Iterable[Diagnostic], *, unsafe: bool = False) -> tuple[str, int]:
    """Apply every allowed fix whose edits do not overlap an earlier one; returns (text, count).

    Fixes that collide are left for the next pass (``fix_until_stable`` re-lints and repeats).
    """
    chosen: list[Edit] = []
    applied = 0
    for diagnostic in sorted(diagnostics, key=lambda d: (d.line, d.column, d.code)):
        fix = diagnostic.fix
        if fix is None or (not fix.safe and not unsafe):
            continue
        if any(_overlaps(edit, taken) for edit in fix.edits for taken in chosen):
            continue
        chosen.extend(fix.edits)
        applied += 1
    for edit in sorted(chosen, key=lambda e: (e.start, e.end), reverse=True):
        text = text[: edit.start] + edit.replacement + text[edit.end :]
    return text, applied


def _overlaps(first: Edit, second: Edit) -> bool:
    if first.start == first.end == second.start == second.end:
        return True  # two insertions at one point: order would be ambiguous
    return first.start < second.end and second.start < first.end


def fix_until_stable(
    text: str, lint: Callable[[str], list[Diagnostic]], *, unsafe: bool = False, max_passes: int = 10
) -> tuple[str, int]:
    """Lint, fix, and repeat until nothing more applies; returns (text, fixes applied)."""
    total = 0
    for _ in range(max_passes):
        text, applied = apply_fixes(text, lint(text), unsafe=unsafe)
        total += applied
        if not applied:
            break
    return text, total
