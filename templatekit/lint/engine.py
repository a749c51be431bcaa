"""Run rules over a lint target."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

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


# A static rule's analysis takes milliseconds on a real template (under 0.1 s on the largest of
# the 786 corpus templates), but a template built to make an analysis quadratic (thousands of
# elif branches, each under the conditions of all before it) could hold lint for minutes. Each
# static rule gets RULE_SECONDS per template, and one that runs out says it did not check.
# There is no budget for all rules together: padding that spends it on the first rules would
# switch off the last ones, the security rules among them. A security rule that runs out is an
# error, since what it could not inspect may be an attack. Behavioural rules are bounded by their
# renders' budgets.
RULE_SECONDS = 2.0
SECURITY_PREFIX = "TK9"


def _check(target: LintTarget, rules: list[Rule]) -> tuple[list[Diagnostic], set[str]]:
    """The rules' diagnostics, and the codes of the rules that looked at the whole template."""
    found: list[Diagnostic] = []
    checked: set[str] = set()
    for rule in rules:
        if rule.needs_tree and target.tree is None:
            continue
        timed = not getattr(rule, "behavioural", False)
        try:
            with _deadline(RULE_SECONDS if timed else None):
                found.extend(rule.check(target))
        except RecursionError:
            found.append(_not_checked(rule))
            target.discard_shared()  # it may have stopped halfway through a shared analysis
            continue
        except _RuleOutOfTime:
            found.append(_out_of_time(rule))
            target.discard_shared()
            continue
        checked.add(rule.code)
    return found, checked


class _RuleOutOfTime(BaseException):
    """Raised into a static rule whose time is up. Not an ``Exception``: a rule's own ``except
    Exception`` must not swallow it."""


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Interrupt the body with ``_RuleOutOfTime`` after ``seconds`` (a timer signal; where there
    is none, off the main thread or on Windows, the body runs unbounded)."""
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise _RuleOutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _out_of_time(rule: Rule) -> Diagnostic:
    message = (f"not checked: this rule's analysis of the template ran out of its time budget ({RULE_SECONDS:g} s): "
               f"a template this large or this branched is beyond it")
    if rule.code.startswith(SECURITY_PREFIX):
        return dataclasses.replace(rule.diagnostic(1, 1, message + "; what a security check cannot inspect is "
                                                   "treated as unsafe"), severity="error", fix=None)
    return dataclasses.replace(rule.diagnostic(1, 1, message), severity="info", fix=None)


def _not_checked(rule: Rule) -> Diagnostic:
    """What a rule reports when the tree is deeper than its analysis can recurse.

    Jinja's parser reads ``a and b and c ...`` or ``x|f|f|f ...`` in a loop but builds a tree as
    deep as the chain is long, so a flat source of a few thousand operands passes parsing and
    overflows any recursive walk (Jinja's own compiler included: transformers cannot render it).
    The rule could not look; saying so keeps the rest of the report, where a crash would lose it.
    """
    return dataclasses.replace(
        rule.diagnostic(1, 1, "not checked: the template nests expressions (a chain of `and`, `or`, `+`, "
                              "filters or attributes), or sets variables from one another, deeper than "
                              "this rule's analysis can follow"),
        severity="info", fix=None,
    )
