"""TK229: operators @huggingface/jinja defines only between numbers (a string or list repeated with
``*``), and the index comparison TK203's raw-content search reads."""

from __future__ import annotations

from collections.abc import Iterable

from jinja2 import nodes

from ...model import Diagnostic
from ...registry import register
from ...target import LintTarget
from ...walk import find_all
from ._shared import _AstPortabilityRule, _key


# ---------------------------------------------------------------------------------------------
# TK229: operators


# Filters and methods whose result is a string.
_TEXT_FILTERS = frozenset({"string", "trim", "join", "upper", "lower", "replace", "tojson", "indent", "title",
                           "capitalize", "center", "format", "striptags", "safe", "e", "escape"})
_TEXT_METHODS = frozenset({"strip", "lstrip", "rstrip", "upper", "lower", "replace", "title", "capitalize", "join",
                           "format"})


@register
class SequenceRepetition(_AstPortabilityRule):
    """A string or list is repeated with ``*`` (``'=' * 40``, ``'  ' * depth``).

    Why: Jinja2 follows Python, where ``'ab' * 3`` is ``'ababab'``; @huggingface/jinja defines
    ``*`` only between numbers and stops with "Unknown operator "*" between StringValue and
    IntegerValue" (the same for a list). The template fails to render there whenever the branch
    runs. A loop repeats text in every engine. Code transformers never runs is not reported: a
    macro nothing calls, and what follows a statement that always raises in transformers
    (``raise_exception(...)``, or a method of ``dict`` other than ``fromkeys``, the only one
    transformers' ``dict`` has).

    Bad:
        {{ '<image>' * image_count }}

    Good:
        {% for _ in range(image_count) %}<image>{% endfor %}
    """

    code = "TK229"
    name = "sequence-repetition"
    engines = ("hf-jinja",)
    severity = "warning"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if target.tree is None or not find_all(target, target.tree, nodes.Mul):
            return []  # most templates multiply nothing: skip the whole-tree analyses below
        self.text_names = _text_names(target.tree)
        self.live = _live_macros(target.tree)
        unreached = _after_certain_raise(target.tree)
        self.unreached = {id(found) for statement in unreached
                          for found in (statement, *statement.find_all(nodes.Mul))}
        return super().check(target)

    def visit_Macro(self, node: nodes.Macro) -> None:
        if node.name in self.live:  # a macro nothing renders cannot fail
            self.generic_visit(node)

    def visit_Mul(self, node: nodes.Mul) -> None:
        for operand in (node.left, node.right):
            if id(node) in self.unreached:
                break
            if _sequence_valued(operand, self.text_names):
                self.flag(node, "`*` repeats a string or list in transformers; hf-jinja has `*` only for numbers "
                                "(render error \"Unknown operator\"); repeat with `{% for _ in range(n) %}`",
                          self.engines, needle="*")
                break
        self.generic_visit(node)


def _sequence_valued(node: nodes.Node, text_names: set[str]) -> bool:
    """Whether ``node`` is a string or a list wherever it is evaluated."""
    if isinstance(node, nodes.Const):
        return isinstance(node.value, str)
    if isinstance(node, (nodes.List, nodes.Tuple, nodes.Concat)):
        return True
    if isinstance(node, nodes.Name):
        return node.name in text_names
    if isinstance(node, nodes.Filter):
        return node.name in _TEXT_FILTERS
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        return node.node.attr in _TEXT_METHODS
    if isinstance(node, nodes.Add):
        return _sequence_valued(node.left, text_names) or _sequence_valued(node.right, text_names)
    if isinstance(node, nodes.CondExpr):
        return _sequence_valued(node.expr1, text_names) and (
            node.expr2 is None or _sequence_valued(node.expr2, text_names))
    return False


def _text_names(tree: nodes.Template) -> set[str]:
    """Names every ``{% set %}`` of the template gives a string or a list (block sets included)."""
    values: dict[str, list[bool]] = {}
    for assign in tree.find_all((nodes.Assign, nodes.AssignBlock)):
        if isinstance(assign.target, nodes.Name):
            textual = isinstance(assign, nodes.AssignBlock) or _sequence_valued(assign.node, set())
            values.setdefault(assign.target.name, []).append(textual)
    return {name for name, kinds in values.items() if all(kinds)}


# The only attribute of the `dict` global transformers provides (``TemplateDict``) besides calling it.
_TEMPLATE_DICT_METHODS = frozenset({"fromkeys"})


def _after_certain_raise(tree: nodes.Template) -> list[nodes.Node]:
    """Statements transformers never runs: those after one that raises whenever it runs, in the
    same block (the rest of an ``if`` body, of a loop body, of a macro)."""
    rebound = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    rebound |= {macro.name for macro in tree.find_all(nodes.Macro)}
    unreached: list[nodes.Node] = []
    pending: list[nodes.Node] = [tree]
    while pending:  # iterative: hostile templates nest deeper than the recursion limit
        node = pending.pop()
        for _name, value in node.iter_fields():
            if isinstance(value, nodes.Node):
                pending.append(value)
                continue
            if not isinstance(value, list):
                continue
            raised = False
            for item in value:
                if not isinstance(item, nodes.Node):
                    continue
                if raised:
                    unreached.append(item)
                    continue
                pending.append(item)
                raised = _raises_whenever_run(item, rebound)
    return unreached


def _raises_whenever_run(statement: nodes.Node, rebound: set[str]) -> bool:
    """Whether a statement (or one of the expressions of a list evaluated in order, such as
    ``{{ a }}{{ b }}``'s) raises in transformers every time it runs."""
    if isinstance(statement, nodes.Output):
        expressions = [node for node in statement.nodes if not isinstance(node, nodes.TemplateData)]
    elif isinstance(statement, (nodes.Assign, nodes.ExprStmt)):
        expressions = [statement.node]
    elif isinstance(statement, nodes.Expr):
        expressions = [statement]
    else:
        return False
    pending = list(expressions)
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.Call):
            callee = node.node
            if isinstance(callee, nodes.Name) and callee.name == "raise_exception" \
                    and "raise_exception" not in rebound:
                return True
            if isinstance(callee, nodes.Getattr) and isinstance(callee.node, nodes.Name) \
                    and callee.node.name == "dict" and "dict" not in rebound \
                    and callee.attr not in _TEMPLATE_DICT_METHODS:
                return True
        if isinstance(node, nodes.CondExpr):
            pending.append(node.test)  # only one branch runs
        elif isinstance(node, (nodes.And, nodes.Or)):
            pending.append(node.left)  # the right side may be skipped
        else:
            pending.extend(node.iter_child_nodes())
    return False


def _live_macros(tree: nodes.Template) -> set[str]:
    """Names of the macros the template can run: called outside every macro, or by a live one."""
    calls: dict[str | None, set[str]] = {}  # caller macro (None: the template body) -> called names

    def collect(node: nodes.Node, owner: str | None) -> None:
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.Macro):
                collect(child, child.name)
                continue
            if isinstance(child, nodes.Call) and isinstance(child.node, nodes.Name):
                calls.setdefault(owner, set()).add(child.node.name)
            collect(child, owner)

    try:
        collect(tree, None)
    except RecursionError:  # too deep to follow: treat every macro as live
        return {macro.name for macro in tree.find_all(nodes.Macro)}
    live: set[str] = set()
    pending = list(calls.get(None, ()))
    while pending:
        name = pending.pop()
        if name not in live:
            live.add(name)
            pending.extend(calls.get(name, ()))
    return live


_NEGATED = {"gt": "lteq", "gteq": "lt", "lt": "gteq", "lteq": "gt", "eq": "ne", "ne": "eq"}
_MIRRORED = {"gt": "lt", "gteq": "lteq", "lt": "gt", "lteq": "gteq", "eq": "eq", "ne": "ne"}


def _before_index(compare: nodes.Compare, holds: bool) -> bool:
    """Whether ``compare`` (true when ``holds``) keeps the turns up to a computed index
    (``loop.index0 < ns.last_query_index``, the else of ``loop.index0 > ...``): the history of
    any ordinary conversation, not a narrow set of turns. TK203's raw-content search asks it."""
    if len(compare.ops) != 1 or compare.ops[0].op not in _NEGATED:
        return False
    op = compare.ops[0].op if holds else _NEGATED[compare.ops[0].op]
    if _key(compare.ops[0].expr) in ("loop.index", "loop.index0"):
        op = _MIRRORED[op]
    elif _key(compare.expr) not in ("loop.index", "loop.index0"):
        return False
    return op in ("lt", "lteq", "ne")
