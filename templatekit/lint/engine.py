"""Run rules over a lint target."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from .model import Diagnostic
from .registry import Rule
from .target import LintTarget


def run_rules(target: LintTarget, rules: Iterable[Rule]) -> list[Diagnostic]:
    """Every diagnostic the rules find in ``target`` that no suppression comment silences
    (plus unused/invalid suppressions when TK090/TK091 are among ``rules``), in position order."""
    from .suppressions import UnusedSuppression, apply_suppressions, parse_suppressions, rules_to_judge

    rules = list(rules)
    selected = {rule.code for rule in rules}
    found, checked = _check(target, rules)
    parsed = parse_suppressions(target)
    hidden: list[Diagnostic] = []
    if UnusedSuppression.code in selected and parsed[0]:
        # Whether a suppression is used must not depend on --select: run what it names, unreported.
        hidden, also_checked = _check(target, rules_to_judge(target, parsed[0], selected))
        checked |= also_checked
    found = apply_suppressions(target, found, selected, parsed=parsed, hidden=hidden, checked=checked)
    return sorted(found, key=lambda d: (d.line, d.column, d.code))


def _check(target: LintTarget, rules: list[Rule]) -> tuple[list[Diagnostic], set[str]]:
    """The rules' diagnostics, and the codes of the rules that looked at the whole template."""
    found: list[Diagnostic] = []
    checked: set[str] = set()
    for rule in rules:
        if rule.needs_tree and target.tree is None:
            continue
        try:
            found.extend(rule.check(target))
        except RecursionError:
            found.append(_not_checked(rule))
            continue
        checked.add(rule.code)
    return found, checked


def _not_checked(rule: Rule) -> Diagnostic:
    """What a rule reports when the tree is deeper than its analysis can recurse.

    Jinja's parser reads ``a and b and c ...`` or ``x|f|f|f ...`` in a loop but builds a tree as
    deep as the chain is long, so a flat source of a few thousand operands passes parsing and
    overflows any recursive walk (Jinja's own compiler included: transformers cannot render it).
    The rule could not look; saying so keeps the rest of the report, where a crash would lose it.
    """
    return dataclasses.replace(
        rule.diagnostic(1, 1, "not checked: the template nests expressions (a chain of `and`, `or`, `+`, "
                              "filters or attributes) deeper than this rule's analysis, and Jinja's "
                              "compiler, can follow"),
        severity="info", fix=None,
    )
