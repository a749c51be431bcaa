"""Inline suppression comments, and the rules that keep them honest.

    {# templatekit: disable=TK201 #}             alone on a line: off until a matching enable
    {{ x.strip() }}{# templatekit: disable=TK201 #}   after code: off for that line only
    {# templatekit: disable-next-line=TK201,TK3 #}   the next line only
    {# templatekit: enable=TK201 #}              ends a disable range
    {# templatekit: disable-file=TK2 #}          the whole template
    {# templatekit: disable #}                   no list: every rule

Selectors are codes, code prefixes or rule names. A suppression that silences nothing is itself
reported (TK090), and so is one that cannot be understood (TK091).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from .model import Diagnostic
from .registry import Rule, find_rule, is_known_selector, matches, register
from .target import LintTarget

_DIRECTIVE = re.compile(r"^\s*templatekit\s*:\s*(?P<body>.*?)\s*$", re.DOTALL)
_KINDS = ("disable", "disable-next-line", "disable-line", "enable", "disable-file")


@dataclasses.dataclass
class Suppression:
    kind: str
    selectors: tuple[str, ...]  # empty: every rule
    line: int
    column: int
    first_line: int
    last_line: int
    used: bool = False

    def covers(self, diagnostic: Diagnostic) -> bool:
        if not self.first_line <= diagnostic.line <= self.last_line:
            return False
        if not self.selectors:
            return True
        rule = find_rule(diagnostic.code)
        return rule is not None and any(matches(rule, selector) for selector in self.selectors)


@dataclasses.dataclass
class Problem:
    line: int
    column: int
    message: str


def parse_suppressions(target: LintTarget) -> tuple[list[Suppression], list[Problem]]:
    """The suppressions in ``target``'s comments, and the comments that could not be understood."""
    suppressions: list[Suppression] = []
    problems: list[Problem] = []
    open_ranges: list[Suppression] = []
    last_line = len(target.lines)
    tokens = target.tokens
    for index, token in enumerate(tokens):
        if token.type != "comment":
            continue
        match = _DIRECTIVE.match(token.value)
        if not match:
            continue
        if match.group("body").split(None, 1)[:1] == ["capabilities"]:
            continue  # a capability declaration (templatekit.capabilities), not a suppression
        opening = tokens[index - 1] if index > 0 else token
        closing = tokens[index + 1] if index + 1 < len(tokens) else token
        line, column = target.position(opening.offset)
        kind, _, listed = match.group("body").partition("=")
        kind = kind.strip()
        selectors = tuple(part.strip() for part in listed.split(",") if part.strip())
        if kind not in _KINDS:
            problems.append(Problem(line, column, f"unknown suppression '{kind}' (use one of: {', '.join(_KINDS)})"))
            continue
        unknown = [selector for selector in selectors if not is_known_selector(selector)]
        if unknown:
            problems.append(Problem(line, column, f"suppression names unknown rule(s): {', '.join(unknown)}"))
            continue
        if kind == "enable":
            closed = [s for s in open_ranges if not selectors or set(s.selectors) & set(selectors) or not s.selectors]
            if not closed:
                problems.append(Problem(line, column, "enable without a matching disable"))
            for suppression in closed:
                suppression.last_line = line
                open_ranges.remove(suppression)
            continue
        alone = _alone_on_line(target, opening.offset, closing.offset + len(closing.value.rstrip("\n")))
        if kind == "disable-file":
            first, last = 1, last_line
        elif kind == "disable-next-line":
            first = last = line + 1
        elif kind == "disable-line" or not alone:
            first = last = line
        else:
            first, last = line, last_line
        suppression = Suppression(kind, selectors, line, column, first, last)
        suppressions.append(suppression)
        if kind == "disable" and alone:
            open_ranges.append(suppression)
    return suppressions, problems


def _alone_on_line(target: LintTarget, start: int, end: int) -> bool:
    """Whether only whitespace shares the line(s) with the comment spanning ``start:end``."""
    line_start = target.text.rfind("\n", 0, start) + 1
    line_end = target.text.find("\n", end)
    line_end = len(target.text) if line_end < 0 else line_end
    return not target.text[line_start:start].strip() and not target.text[end:line_end].strip()


def apply_suppressions(
    target: LintTarget, diagnostics: Iterable[Diagnostic], selected_codes: set[str]
) -> list[Diagnostic]:
    """Drop suppressed diagnostics; add TK090/TK091 findings when those rules are selected."""
    suppressions, problems = parse_suppressions(target)
    diagnostics = list(diagnostics)
    if InvalidSuppression.code in selected_codes:
        diagnostics += [InvalidSuppression().diagnostic(p.line, p.column, p.message) for p in problems]
    kept = []
    for diagnostic in diagnostics:
        covering = [s for s in suppressions if s.covers(diagnostic)]
        for suppression in covering:
            suppression.used = True
        if not covering:
            kept.append(diagnostic)
    if UnusedSuppression.code in selected_codes:
        for suppression in suppressions:
            if not suppression.used:
                what = ", ".join(suppression.selectors) or "all rules"
                kept.append(UnusedSuppression().diagnostic(
                    suppression.line, suppression.column, f"suppression of {what} silences nothing here; remove it"))
    return kept


@register
class UnusedSuppression(Rule):
    """A suppression comment that silences no finding.

    Why: a stale `disable` hides the next real problem on that line and tells readers a rule
    fires where it no longer does; like ruff's RUF100, remove suppressions once they are unused.

    Bad:
        {# templatekit: disable-next-line #}
        {{ message['content'] }}

    Good:
        {{ message['content'] }}
    """

    code, name, severity = "TK090", "unused-suppression", "warning"
    needs_tree = False
    # Found by apply_suppressions from the other rules' results, not by check().


@register
class InvalidSuppression(Rule):
    """A suppression comment that cannot be understood.

    Why: a misspelled directive or rule code silences nothing, so the finding it was meant to
    silence keeps firing, or worse, the author believes a rule is off when it is not.

    Bad:
        {# templatekit: disabel=TK090 #}

    Good:
        {# templatekit: disable=TK090 #}
    """

    code, name, severity = "TK091", "invalid-suppression", "error"
    needs_tree = False

