"""Helpers and base classes the TK2xx portability rules share: token-stream navigation, findings that
name their engines, variable-path keys, the fact walker that tracks which conditions hold, and
the token and AST rule bases."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.visitor import NodeVisitor

from ....environment import environment
from ...model import Diagnostic, Fix, Severity
from ...registry import AstRule, Rule
from ...target import LintTarget, Token


# ---------------------------------------------------------------------------------------------
# shared helpers

# Token types that carry no expression meaning; everything else is code.
_LAYOUT_TYPES = frozenset(
    {
        "whitespace",
        "data",
        "comment_begin",
        "comment",
        "comment_end",
        "linecomment_begin",
        "linecomment",
        "linecomment_end",
        "raw_begin",
        "raw_end",
    }
)
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {value: key for key, value in _OPENERS.items()}
# Names that are Jinja syntax, never a callable or a receiver.
_KEYWORDS = frozenset(
    "and or not in is if elif else endif for endfor recursive set endset macro endmacro call "
    "endcall filter endfilter with endwith without block endblock import include from as "
    "extends generation endgeneration break continue true false none True False None".split()
)

def _code(target: LintTarget) -> list[Token]:
    """The target's tokens without layout (whitespace, text, comments), computed once per target."""
    return target.shared("portability:code-tokens",
                         lambda target: [token for token in target.tokens if token.type not in _LAYOUT_TYPES])


def _is(token: Token | None, *values: str) -> bool:
    return token is not None and token.type in ("operator", "name") and token.value in values


def _at(tokens: list[Token], index: int) -> Token | None:
    return tokens[index] if 0 <= index < len(tokens) else None


def _closing(tokens: list[Token], index: int) -> int | None:
    """Index of the bracket closing the one opened at ``index`` (None if the tag ends first)."""
    depth = 0
    for position in range(index, len(tokens)):
        token = tokens[position]
        if token.type in ("variable_end", "block_end"):
            return None
        if token.type == "operator" and token.value in _OPENERS:
            depth += 1
        elif token.type == "operator" and token.value in _CLOSERS:
            depth -= 1
            if depth == 0:
                return position
    return None


def _opening(tokens: list[Token], index: int) -> int | None:
    """Index of the bracket opening the one closed at ``index``."""
    depth = 0
    for position in range(index, -1, -1):
        token = tokens[position]
        if token.type in ("variable_begin", "block_begin"):
            return None
        if token.type == "operator" and token.value in _CLOSERS:
            depth += 1
        elif token.type == "operator" and token.value in _OPENERS:
            depth -= 1
            if depth == 0:
                return position
    return None


def _arguments(tokens: list[Token], open_index: int, close_index: int) -> list[tuple[int, int]]:
    """Top-level comma-separated parts between two brackets, as [start, end) token ranges."""
    parts: list[tuple[int, int]] = []
    start = open_index + 1
    position = start
    while position < close_index:
        token = tokens[position]
        if token.type == "operator" and token.value in _OPENERS:
            position = _closing(tokens, position) or close_index
        elif _is(token, ","):
            parts.append((start, position))
            start = position + 1
        position += 1
    if start < close_index:
        parts.append((start, close_index))
    return parts


def _chain_start(tokens: list[Token], last: int) -> int | None:
    """First token of the postfix chain (``a.b[0].c(x)``, ``'x'``, ``(a ~ b)``) ending at ``last``.

    None when the operand is not a plain chain, so callers never rewrite around something they
    cannot delimit exactly.
    """
    position = last
    while position >= 0:
        token = tokens[position]
        if _is(token, ")", "]"):
            opened = _opening(tokens, position)
            if opened is None:
                return None
            before = _at(tokens, opened - 1)
            # f(x), a.b(x), a[0]: the bracket continues the chain to its left.
            if before is not None and (
                (before.type == "name" and before.value not in _KEYWORDS) or _is(before, ")", "]")
            ):
                position = opened - 1
                continue
            return opened
        if token.type in ("name", "string", "integer", "float"):
            if token.type == "name" and token.value in _KEYWORDS and token.value not in ("true", "false", "none"):
                return None
            if _is(_at(tokens, position - 1), ".") and token.type in ("name", "integer"):
                position -= 2
                continue
            return position
        return None
    return None


def _postfix_follows(tokens: list[Token], index: int) -> bool:
    """Whether ``.x``, ``[i]`` or ``(...)`` follows the token at ``index`` (a filter can't take one)."""
    return _is(_at(tokens, index + 1), ".", "[", "(")


def _unary_sign_before(tokens: list[Token], index: int) -> bool:
    """Whether a unary ``-``/``+`` (not a binary one) stands right before ``tokens[index]``."""
    sign = _at(tokens, index - 1)
    if not _is(sign, "-", "+"):
        return False
    before = _at(tokens, index - 2)
    if before is None or before.type in ("variable_begin", "block_begin"):
        return True
    if before.type == "operator":
        return before.value not in (")", "]", "}")
    return before.type == "name" and before.value in _KEYWORDS and before.value not in ("true", "false", "none")


def _engines_text(engines: Iterable[str]) -> str:
    names = list(engines)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _finding(
    rule: Rule,
    line: int,
    column: int,
    message: str,
    engines: Iterable[str],
    *,
    fix: Fix | None = None,
    severity: Severity | None = None,
) -> Diagnostic:
    """A diagnostic naming only the engines this occurrence breaks in (a subset of the rule's)."""
    found = rule.diagnostic(line, column, message, fix=fix)
    order = [engine for engine in rule.engines if engine in set(engines)]
    return dataclasses.replace(found, engines=tuple(order), severity=severity or found.severity)


def _key(node: nodes.Node) -> str | None:
    """A comparable spelling of a variable path: ``m.content`` and ``m['content']`` are one key."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _key(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _key(node.node)
        if base is None:
            return None
        value = node.arg.value
        return f"{base}.{value}" if isinstance(value, str) else f"{base}[{value!r}]"
    return None


def _get_field(node: nodes.Node) -> str | None:
    """``owner.f`` for ``owner.get('f')`` or ``owner.get('f', none)``: a read that gives None for a
    missing key, so a condition on it is a condition on the field (None otherwise)."""
    if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "get"
            and node.args and len(node.args) <= 2 and not node.kwargs and isinstance(node.args[0], nodes.Const)
            and isinstance(node.args[0].value, str)):
        return None
    if len(node.args) == 2 and not (isinstance(node.args[1], nodes.Const) and node.args[1].value is None):
        return None
    owner = _key(node.node.node)
    return None if owner is None else f"{owner}.{node.args[0].value}"


def _fact_key(node: nodes.Node) -> str | None:
    """``_key``, with ``m.get('f')`` read as ``m.f`` (conditions only: the values differ when absent)."""
    return _key(node) or _get_field(node)


class _FactWalker(NodeVisitor):
    """Walks an AST remembering which conditions hold where it is (``if`` branches, ``x if c else
    y``, the right side of ``and``/``or``), so rules can tell a guarded use from a bare one."""

    def __init__(self) -> None:
        self.facts: list[tuple[nodes.Expr, bool]] = []

    def _under(self, facts: list[tuple[nodes.Expr, bool]], node_or_nodes) -> None:
        saved = self.facts
        self.facts = saved + facts
        try:
            for item in node_or_nodes if isinstance(node_or_nodes, list) else [node_or_nodes]:
                self.visit(item)
        finally:
            self.facts = saved

    def visit_If(self, node: nodes.If) -> None:
        self.visit(node.test)
        self._under([(node.test, True)], node.body)
        previous = [(node.test, False)]
        for branch in node.elif_:
            self._under(previous, branch.test)
            self._under(previous + [(branch.test, True)], branch.body)
            previous = previous + [(branch.test, False)]
        self._under(previous, node.else_)

    def visit_CondExpr(self, node: nodes.CondExpr) -> None:
        self.visit(node.test)
        self._under([(node.test, True)], node.expr1)
        if node.expr2 is not None:
            self._under([(node.test, False)], node.expr2)

    def visit_And(self, node: nodes.And) -> None:
        self.visit(node.left)
        self._under([(node.left, True)], node.right)

    def visit_Or(self, node: nodes.Or) -> None:
        self.visit(node.left)
        self._under([(node.left, False)], node.right)

    def known(self, key: str, fact: str) -> bool:
        """Whether the current conditions prove ``fact`` ("string" or "not-none") about ``key``."""
        return any(_implies(test, positive, key, fact) for test, positive in self.facts)

    def type_tested(self, key: str) -> bool:
        """Whether an enclosing condition tests ``key``'s type at all (``is string``, ``is mapping``,
        ...): the author already dispatches on the type there, so a branch may well hold a string."""
        for test, _positive in self.facts:
            tests = [test] if isinstance(test, nodes.Test) else list(test.find_all(nodes.Test))
            if any(_fact_key(found.node) == key and found.name in _TYPE_TESTS for found in tests):
                return True
        return False


_TYPE_TESTS = frozenset({"string", "mapping", "sequence", "iterable"})


def _expand(facts: list[tuple[nodes.Expr, bool]]) -> Iterator[tuple[nodes.Expr, bool]]:
    """The facts split into the simplest ones they imply (``not``, true ``and``, false ``or``)."""
    for test, positive in facts:
        if isinstance(test, nodes.Not):
            yield from _expand([(test.node, not positive)])
        elif isinstance(test, nodes.And) and positive or isinstance(test, nodes.Or) and not positive:
            yield from _expand([(test.left, positive), (test.right, positive)])
        else:
            yield test, positive


def _through_logic(atom: Callable[..., bool]) -> Callable[..., bool]:
    """``atom(test, positive, ...)`` decides what one simple condition proves; the decorated
    function decides it for any condition, through the simplest facts it implies (``_expand``):
    ``not`` flips a fact, a holding ``and`` or a failing ``or`` proves what either side proves."""
    @functools.wraps(atom)
    def proves(test: nodes.Expr, positive: bool, *args: Any) -> bool:
        return any(atom(simple, holds, *args) for simple, holds in _expand([(test, positive)]))

    return proves


@_through_logic
def _implies(test: nodes.Expr, positive: bool, key: str, fact: str) -> bool:
    if isinstance(test, nodes.Test) and _key(test.node) == key:
        if fact == "string":
            return positive and test.name == "string"
        if positive:
            return test.name in ("string", "mapping", "sequence", "number", "integer", "boolean")
        return test.name == "none"
    if fact == "not-none" and positive and _key(test) == key:
        return True  # truthy, so not none
    if fact == "not-none" and isinstance(test, nodes.Compare) and _key(test.expr) == key and len(test.ops) == 1:
        operand = test.ops[0]
        is_none = isinstance(operand.expr, nodes.Const) and operand.expr.value is None
        return is_none and ((operand.op == "ne") == positive)
    return False


def _string_value(raw: str) -> str:
    """The value of a string token (quotes and escapes resolved as Jinja's lexer does)."""
    expression = _parse_expression(raw)
    return expression.value if isinstance(expression, nodes.Const) and isinstance(expression.value, str) else ""


def _parse_expression(source: str) -> nodes.Expr | None:
    """Parse the inside of one ``{{ ... }}`` on its own (None if it is not a lone expression)."""
    try:
        tree = environment().parse("{{ " + source + " }}")
    except jinja2.TemplateSyntaxError:
        return None
    if len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output) and len(tree.body[0].nodes) == 1:
        return tree.body[0].nodes[0]
    return None


class _TokenRule(Rule):
    """A rule that reads the token stream (so it can compute exact columns and fix offsets)."""

    needs_tree = False

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        return list(self.scan(target, _code(target)))

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        raise NotImplementedError  # pragma: no cover - every subclass defines it

    def at(self, token: Token, message: str, engines: Iterable[str], **kwargs) -> Diagnostic:
        return _finding(self, token.line, token.column, message, engines, **kwargs)


class _AstPortabilityRule(AstRule):
    """An AST rule whose findings name the engines each occurrence breaks in.

    Nodes have a line but no column, so ``flag`` finds the needle among the line's code tokens
    (``tools`` the variable, not the ``<tools>`` text before it; ``%`` the operator, not ``{%``),
    taking the n-th match for the n-th finding with that needle on the line.
    """

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        self._seen: dict[tuple[int, str], int] = {}
        return super().check(target)

    def flag(
        self, node: nodes.Node, message: str, engines: Iterable[str], *, needle: str | None = None, **kwargs
    ) -> None:
        line, column = self.target.node_position(node, needle)
        if needle is not None:
            column = self._token_column(line, needle) or column
        self.found.append(_finding(self, line, column, message, engines, **kwargs))

    def _token_column(self, line: int, needle: str) -> int | None:
        matches = [token.column for token in _code(self.target) if token.line == line and token.value == needle]
        if not matches:
            return None
        index = self._seen.get((line, needle), 0)
        self._seen[(line, needle)] = index + 1
        return matches[min(index, len(matches) - 1)]


class _FactWalkingRule(_FactWalker, _AstPortabilityRule):
    """A portability rule walking the AST with ``_FactWalker``'s conditions at hand."""

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)


def _method_calls(tokens: list[Token]) -> Iterator[tuple[int, int, int, str]]:
    """Every ``.name(...)`` in the stream: (dot index, open paren index, close paren index, name).

    A dotted filter or test name (``x|a.b(1)``) is not a method call and is skipped.
    """
    for index, token in enumerate(tokens):
        if not (_is(token, ".") and _at(tokens, index + 1) is not None and tokens[index + 1].type == "name"):
            continue
        if not _is(_at(tokens, index + 2), "("):
            continue
        walk = index - 1
        while walk >= 1 and tokens[walk].type == "name" and _is(tokens[walk - 1], "."):
            walk -= 2
        if _is(_at(tokens, walk - 1), "|", "is"):
            continue
        close = _closing(tokens, index + 2)
        if close is not None:
            yield index, index + 2, close, tokens[index + 1].value


def _for_iterable_start(tokens: list[Token], start: int, close: int) -> bool:
    """Whether tokens[start:close+1] is exactly the iterable of a ``{% for ... in X %}``."""
    begin = start - 1
    if not _is(_at(tokens, begin), "in"):
        return False
    follower = _at(tokens, close + 1)
    if not (follower is not None and (follower.type == "block_end" or _is(follower, "if", "recursive"))):
        return False
    position = begin
    while position >= 0 and tokens[position].type != "block_begin":
        position -= 1
    return position >= 0 and _is(_at(tokens, position + 1), "for")


def _target_names(target: nodes.Node) -> set[str]:
    """Names bound by an assignment or loop target (``x``, ``a, b``); ``find_all`` skips the node
    itself, so a bare name needs its own case."""
    if isinstance(target, nodes.Name):
        return {target.name}
    if isinstance(target, nodes.NSRef):
        return set()  # `ns.x` changes a namespace, which every engine shares across iterations
    return {name.name for name in target.find_all(nodes.Name)}


def _and_chain(node: nodes.Expr) -> list[nodes.Expr]:
    if isinstance(node, nodes.And):
        return _and_chain(node.left) + _and_chain(node.right)
    return [node]
