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
    from .suppressions import apply_suppressions

    rules = list(rules)
    found: list[Diagnostic] = []
    for rule in rules:
        if rule.needs_tree and target.tree is None:
            continue
        try:
            found.extend(rule.check(target))
        except RecursionError:
            found.append(_not_checked(rule))
    found = apply_suppressions(target, found, {rule.code for rule in rules})
    return sorted(found, key=lambda d: (d.line, d.column, d.code))


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
