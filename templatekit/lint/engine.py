"""Run rules over a lint target."""

from __future__ import annotations

from collections.abc import Iterable

from .model import Diagnostic
from .registry import Rule
from .target import LintTarget


def run_rules(target: LintTarget, rules: Iterable[Rule]) -> list[Diagnostic]:
    """Every diagnostic the rules find in ``target`` that no suppression comment silences
    (plus unused/invalid suppressions when TK090/TK091 are among ``rules``), in position order."""
    from .suppressions import apply_suppressions

    rules = list(rules)
    found: list[Diagnostic] = []
    for rule in rules:
        if rule.needs_tree and target.tree is None:
            continue
        found.extend(rule.check(target))
    found = apply_suppressions(target, found, {rule.code for rule in rules})
    return sorted(found, key=lambda d: (d.line, d.column, d.code))
