"""Inline suppression comments, and the rules that keep them honest.

    {# templatekit: disable=TK201 #}             alone on a line: off until a matching enable
    {{ x.strip() }}{# templatekit: disable=TK201 #}   after code: off for that line only
    {# templatekit: disable-next-line=TK201,TK3 #}   the next line only
    {# templatekit: enable=TK201 #}              ends a disable range
    {# templatekit: disable-file=TK2 #}          the whole template
    {# templatekit: disable #}                   no list: every rule

Selectors are codes, code prefixes or rule names. A suppression that silences nothing is itself
reported (TK090), and so is one that cannot be understood (TK091: an unknown directive or rule,
an enable without a disable). A suppression with no list is valid: it silences every rule.

Whether a suppression silences anything is a fact about the template, not about which rules a
run selects: when TK090 runs, the rules a suppression names that were not selected run too (their
findings only mark suppressions used), and a suppression naming a rule that could not look at the
template here (a rendering rule under ``static-only``, a rule that reads the syntax tree of a
template that does not parse) is not judged at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ..capabilities import KEYWORD, near_declaration_keyword
from .model import Diagnostic
from .registry import Rule, all_rules, find_rule, is_known_selector, matches, register
from .target import LintTarget

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

    def names(self, rule: type[Rule]) -> bool:
        """Whether this suppression applies to ``rule`` (a suppression naming no rule names them all)."""
        return not self.selectors or any(matches(rule, selector) for selector in self.selectors)

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
    for body, opening, closing in target.directive_comments():
        if body.split(None, 1)[:1] == [KEYWORD] or near_declaration_keyword(body):
            continue  # a capability declaration, or one gone wrong: TK092's (templatekit.capabilities)
        line, column = target.position(opening.offset)
        kind, equals, listed = body.partition("=")
        kind = kind.strip()
        selectors = tuple(part.strip() for part in listed.split(",") if part.strip())
        if kind not in _KINDS:
            problems.append(Problem(line, column, f"unknown suppression '{kind}' (use one of: {', '.join(_KINDS)})"))
            continue
        if equals and not selectors:
            # Only the bare directive means every rule; an empty list is a list left unfinished.
            problems.append(Problem(line, column, f"suppression '{kind}=' lists no rule (without '=' it means "
                                                  "every rule)"))
            continue
        unknown = [selector for selector in selectors if not is_known_selector(selector)]
        if unknown:
            problems.append(Problem(line, column, f"suppression names unknown rule(s): {', '.join(unknown)}"))
            continue
        if kind == "enable":
            closed = [s for s in open_ranges if not selectors or not s.selectors or _overlap(s.selectors, selectors)]
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


def _overlap(disabled: tuple[str, ...], enabled: tuple[str, ...]) -> bool:
    """Whether an enable names any rule a disable named, however each names it (``TK2`` and
    ``TK201``, a code and a rule name)."""
    return any(matches(rule, a) and matches(rule, b) for rule in all_rules() for a in disabled for b in enabled)


def _alone_on_line(target: LintTarget, start: int, end: int) -> bool:
    """Whether only whitespace shares the line(s) with the comment spanning ``start:end``."""
    line_start = target.text.rfind("\n", 0, start) + 1
    line_end = target.text.find("\n", end)
    line_end = len(target.text) if line_end < 0 else line_end
    return not target.text[line_start:start].strip() and not target.text[end:line_end].strip()


def apply_suppressions(
    target: LintTarget,
    diagnostics: Iterable[Diagnostic],
    selected_codes: set[str],
    *,
    parsed: tuple[list[Suppression], list[Problem]] | None = None,
    hidden: Iterable[Diagnostic] = (),
    checked: set[str] | None = None,
) -> list[Diagnostic]:
    """Drop suppressed diagnostics; add TK090/TK091 findings when those rules are selected.

    ``hidden`` are findings of rules that ran only so TK090 can tell whether a suppression is used:
    they mark suppressions used and are never reported. ``checked`` holds the codes of every rule
    that looked at the template (selected or hidden; None: the selected ones); a suppression naming
    a rule outside it is not reported as unused, since nothing says what that rule would find.
    """
    suppressions, problems = parsed if parsed is not None else parse_suppressions(target)
    diagnostics = list(diagnostics)
    invalid = [InvalidSuppression().diagnostic(p.line, p.column, p.message) for p in problems]
    if InvalidSuppression.code in selected_codes:
        diagnostics += invalid
    else:
        hidden = [*hidden, *invalid]
    kept = []
    for diagnostic in diagnostics:
        covering = [s for s in suppressions if s.covers(diagnostic)]
        for suppression in covering:
            suppression.used = True
        if not covering:
            kept.append(diagnostic)
    for diagnostic in hidden:
        for suppression in suppressions:
            if suppression.covers(diagnostic):
                suppression.used = True
    if UnusedSuppression.code in selected_codes:
        looked = (set(selected_codes) if checked is None else set(checked)) | _ALWAYS_CHECKED
        for suppression in suppressions:
            if suppression.used or not all(rule.code in looked for rule in all_rules() if suppression.names(rule)):
                continue
            what = ", ".join(suppression.selectors) or "all rules"
            kept.append(UnusedSuppression().diagnostic(
                suppression.line, suppression.column, f"suppression of {what} silences nothing here; remove it"))
    return kept


def rules_to_judge(target: LintTarget, suppressions: list[Suppression], selected_codes: set[str]) -> list[Rule]:
    """The rules TK090 runs besides the selected ones: every rule a suppression names that can
    look at ``target`` here (with the configured options)."""
    config = target.config
    judging = []
    for rule in all_rules():
        if rule.code in selected_codes or rule.code in _ALWAYS_CHECKED:
            continue
        if config is not None and config.static_only and getattr(rule, "behavioural", False):
            continue  # static-only promises no rendering
        if not any(suppression.names(rule) for suppression in suppressions):
            continue
        judging.append(rule(config.options_for(rule) if config is not None else None))
    return judging


@register
class UnusedSuppression(Rule):
    """A suppression comment that silences no finding.

    Why: a stale `disable` hides the next real problem on that line and tells readers a rule
    fires where it no longer does; like ruff's RUF100, remove suppressions once they are unused.
    Every rule a suppression names is checked, whichever rules the run selects, so
    ``--select TK090`` reports exactly the suppressions a full run does; one naming a rendering
    rule is not judged under ``static-only``, which renders nothing.

    Bad:
        {# templatekit: disable-next-line=TK201 #}
        {% for m in messages %}{{ m.content|trim }}{% endfor %}

    Good:
        {# templatekit: disable-next-line=TK201 #}
        {% for m in messages %}{{ m.content.strip() }}{% endfor %}
    """

    code, name, severity = "TK090", "unused-suppression", "warning"
    needs_tree = False
    # It runs the rules a suppression names, the special-token ones too: the runner reads the
    # model's tokenizer for it (except under static-only, where those rules never run).
    judges_other_rules = True
    # Found by apply_suppressions from the other rules' results, not by check().


@register
class InvalidSuppression(Rule):
    """A suppression comment that cannot be understood.

    Why: a misspelled directive or rule code silences nothing, so the finding it was meant to
    silence keeps firing, or worse, the author believes a rule is off when it is not. Reported:
    an unknown directive, a rule code or name that no rule has, an ``=`` followed by no rule
    (``disable=``), an ``enable`` naming no rule an open ``disable`` names (``enable=TK2``
    closes ``disable=TK201``). A directive with no ``=`` and no list is valid and silences every
    rule.

    Bad:
        {# templatekit: disabel=TK090 #}

    Good:
        {# templatekit: disable=TK090 #}
    """

    code, name, severity = "TK091", "invalid-suppression", "error"
    needs_tree = False


# Found by apply_suppressions itself, from the comments and the other rules' results.
_ALWAYS_CHECKED = frozenset({UnusedSuppression.code, InvalidSuppression.code})
