"""TK2xx portability: constructs transformers renders that other Jinja engines reject or render
differently.

A chat template written for transformers also runs in minijinja (TGI, mistral.rs, minijinja-py),
minijinja-js, @huggingface/jinja (transformers.js, the Hub) and minja (llama.cpp). Every engine
claim in this module was measured by rendering the construct in @huggingface/jinja 0.5.11,
minijinja-py 3.1 and minijinja-js 2.11 (the last two with pycompat on), or read in minja's
source (``include/minja/minja.hpp``); ``shared/research/engines.md`` has the corpus-wide numbers.
A construct that every one of these engines handles is not reported, even where the Python
spelling looks foreign (``True``/``None`` literals parse everywhere).

Most rules work on the token stream, because Jinja nodes carry a line but no column and a fix
must know exact offsets; the rest walk the AST and locate themselves with a needle on the line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.visitor import NodeVisitor

from ...environment import environment
from ..model import Diagnostic, Edit, Fix, Severity
from ..registry import AstRule, Rule, register
from ..target import LintTarget, Token
from ..walk import find_all

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


# ---------------------------------------------------------------------------------------------
# TK201-TK203: Python methods


# method -> (filter spelling, engines besides pycompat-less minijinja that lack the method)
_FILTER_EQUIVALENTS = {
    "strip": ("trim", ()),
    "lower": ("lower", ()),
    "upper": ("upper", ()),
    "items": ("items", ()),
    "keys": ("", ()),
    "join": ("join", ("hf-jinja", "minja")),
}


@register
class PythonMethodCall(_TokenRule):
    """A Python method is called where a Jinja filter does the same in every engine.

    Why: method calls on values are Python semantics. minijinja runs ``.strip()``, ``.items()``
    and friends only through its pycompat layer, which the Rust crate leaves off unless the host
    enables it, and ``str.join`` does not exist in @huggingface/jinja or minja at all. The
    filters ``|trim``, ``|lower``, ``|upper``, ``|items`` and ``|join`` exist in every engine and
    give transformers the same output. (Other methods with no filter spelling, such as
    ``.split()`` or ``.startswith()``, work in every engine's Python-compatibility layer and are
    not reported here; TK202 reports the ones that do not.) ``.items()`` on a parameter's JSON
    Schema is a warning for @huggingface/jinja too: it looks a key up before a method, and an
    array parameter's schema has an ``items`` key, so ``schema.items()`` calls that item schema
    and the render fails (``schema|items`` works).

    Bad:
        {{ message.content.strip() }}{{ ', '.join(names) }}

    Good:
        {{ message.content|trim }}{{ names|join(', ') }}

    Fix: (unsafe) rewrites ``x.strip()``, ``x.lower()``, ``x.upper()`` and ``sep.join(items)`` as
    filters, and ``for k, v in d.items()`` / ``for k in d.keys()`` as ``d|items`` / ``d``. The text
    is identical wherever the original rendered; where the method raised (``.strip()`` on a list
    of content parts, on an undefined field) the filter renders instead.
    """

    code = "TK201"
    name = "python-method-call"
    engines = ("minijinja", "hf-jinja", "minja")

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        schema_items = self._schema_items_lines(target)
        for dot, open_, close, method in _method_calls(tokens):
            if method not in _FILTER_EQUIVALENTS:
                continue
            arguments = _arguments(tokens, open_, close)
            if (method == "join") != (len(arguments) == 1):
                continue  # .join takes one argument, the others none; anything else is not the builtin
            filter_name, missing = _FILTER_EQUIVALENTS[method]
            engines = ("minijinja", *missing)
            fix = self._fix(target, tokens, dot, open_, close, method, arguments)
            spot = (tokens[dot].line, tokens[dot - 1].value)
            if method == "items" and schema_items.get(spot, 0) > 0:
                schema_items[spot] -= 1
                yield self.at(tokens[dot], (
                    "`.items()` on a property schema: hf-jinja reads a key before a method, so on an array "
                    "parameter's schema (which has an `items` key) it calls the item schema and fails; iterate "
                    "over `schema|items` (which minijinja also runs without pycompat)"), ("hf-jinja",), fix=fix,
                    severity="warning")
                continue
            if method == "join":
                message = (
                    "`.join()` is a Python string method that hf-jinja and minja do not have (minijinja "
                    "needs pycompat); use `items|join(separator)`"
                )
            elif method in ("items", "keys"):
                spelling = "d|items" if method == "items" else "the mapping itself"
                message = (
                    f"`.{method}()` is a Python dict method that minijinja runs only in pycompat mode (off by "
                    f"default in the Rust crate); iterate over {spelling}"
                )
            else:
                message = (
                    f"`.{method}()` is a Python string method that minijinja runs only in pycompat mode (off by "
                    f"default in the Rust crate); use the `|{filter_name}` filter, which every engine has"
                )
            severity: Severity = "warning" if missing else "info"
            yield self.at(tokens[dot], message, engines, fix=fix, severity=severity)

    @staticmethod
    def _schema_items_lines(target: LintTarget) -> dict[tuple[int, str], int]:
        """(line of the dot, last token before it) -> how many ``.items()`` calls on a property
        schema are spelled there."""
        spots: dict[tuple[int, str], int] = {}
        if target.tree is not None:
            for call in _schema_flow(target).schema_items_calls:
                receiver = call.node.node
                last = receiver.name if isinstance(receiver, nodes.Name) else receiver.attr \
                    if isinstance(receiver, nodes.Getattr) else "]" if isinstance(receiver, nodes.Getitem) else ")"
                spot = (call.node.lineno, last)
                spots[spot] = spots.get(spot, 0) + 1
        return spots

    def _fix(self, target, tokens, dot, open_, close, method, arguments) -> Fix | None:
        start = _chain_start(tokens, dot - 1)
        if start is None:
            return None
        receiver = target.text[tokens[start].offset : tokens[dot - 1].end]
        if method in ("items", "keys"):
            # Only as a loop's iterable is the filter (a generator) interchangeable with the view.
            if not _for_iterable_start(tokens, start, close):
                return None
            replacement = receiver + "|items" if method == "items" else receiver
        elif method == "join":
            first, last = arguments[0][0], arguments[0][1] - 1
            items = target.text[tokens[first].offset : tokens[last].end]
            if _chain_start(tokens, last) != first:
                items = f"({items})"
            replacement = f"{items}|join({receiver})"
        else:
            replacement = f"{receiver}|{_FILTER_EQUIVALENTS[method][0]}"
        if _postfix_follows(tokens, close):
            replacement = f"({replacement})"
        if _unary_sign_before(tokens, start):
            return None  # `-x|f` applies the sign first: the filter would move outside it
        # Unsafe: where the method raises (`.strip()` on a list or an undefined field) the filter
        # renders something instead, so a crash the template had becomes a silent change.
        return Fix(
            f"use the |{_FILTER_EQUIVALENTS[method][0] or 'mapping'} form",
            (Edit(tokens[start].offset, tokens[close].end, replacement),),
            safe=False,
        )


# method -> {engine: what happens}; measured (see the module docstring). Methods that mutate
# (append, update, pop, ...) are absent: transformers' immutable sandbox rejects them itself.
_METHOD_GAPS: dict[str, dict[str, str]] = {
    "find": {"hf-jinja": "missing", "minja": "missing"},
    "rfind": {"hf-jinja": "missing", "minja": "missing"},
    "count": {"hf-jinja": "missing", "minja": "missing"},
    "splitlines": {"hf-jinja": "missing", "minja": "missing"},
    "copy": {"hf-jinja": "missing", "minijinja-js": "missing", "minja": "missing"},
    "values": {"minja": "missing"},
    "title": {"hf-jinja": "upper-cases word starts but leaves the other letters as they are"},
    "capitalize": {
        "hf-jinja": "upper-cases the first letter but does not lower-case the rest",
        "minja": "upper-cases the first letter but does not lower-case the rest",
    },
}
for _name in ("isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric"):
    _METHOD_GAPS[_name] = {"hf-jinja": "missing", "minja": "missing"}
for _name in (
    "index",
    "rindex",
    "rsplit",
    "swapcase",
    "center",
    "ljust",
    "rjust",
    "zfill",
    "encode",
    "partition",
    "rpartition",
    "casefold",
    "removeprefix",
    "removesuffix",
    "expandtabs",
):
    _METHOD_GAPS[_name] = {engine: "missing" for engine in ("minijinja", "minijinja-js", "hf-jinja", "minja")}


@register
class PythonMethodUnsupported(_TokenRule):
    """A Python method is called that some engine lacks or implements differently.

    Why: engines emulate only part of Python's str/dict/list API. ``.rsplit()``, ``.index()``,
    ``.zfill()`` and similar exist in no engine but transformers; ``.find()``, ``.count()``,
    ``.splitlines()`` and the ``.is...()`` checks are missing in @huggingface/jinja and minja;
    ``.values()`` is missing in minja; ``.split()`` with no separator or with a maximum, and
    ``.startswith()``/``.endswith()`` with a tuple, fail in minja; ``.title()`` and
    ``.capitalize()`` silently give different text in @huggingface/jinja (and minja's
    ``.capitalize()``). A missing method is a render error there: the prompt cannot be built.

    Bad:
        {{ message.content.rsplit('</think>', 1)[-1] }}

    Good:
        {{ message.content.split('</think>')[-1] }}
    """

    code = "TK202"
    name = "python-method-unsupported"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for dot, open_, close, method in _method_calls(tokens):
            arguments = _arguments(tokens, open_, close)
            gaps = dict(_METHOD_GAPS.get(method, {}))
            if method == "split" and len(arguments) != 1:
                gaps["minja"] = "takes exactly one separator"
            if method in ("startswith", "endswith") and arguments and _is(tokens[arguments[0][0]], "(", "["):
                gaps["minja"] = "accepts only a single string, not a tuple"
            if not gaps:
                continue
            missing = [engine for engine, what in gaps.items() if what == "missing"]
            different = {engine: what for engine, what in gaps.items() if what != "missing"}
            parts = []
            if missing:
                parts.append(f"{_engines_text(missing)} {'has' if len(missing) == 1 else 'have'} no `.{method}()`")
            for engine, what in different.items():
                parts.append(f"{engine} {what}")
            message = f"`.{method}()`: " + "; ".join(parts)
            # A case difference only shows on text with capitals inside words; role names have none.
            severity: Severity = "warning" if missing else "info"
            yield self.at(tokens[dot], message, gaps, severity=severity)


@register
class StripCharactersArgument(_TokenRule):
    """Characters are passed to ``.strip()``/``.lstrip()``/``.rstrip()`` or ``|trim``.

    Why: @huggingface/jinja ignores the argument of the strip methods and removes all whitespace
    instead, so ``content.lstrip('\\n')`` also eats leading spaces and tabs there (a silent
    difference); ``|trim('x')`` with characters is a render error in @huggingface/jinja and minja.
    Stripping whitespace characters is a warning where the value may be message content as
    written (the field, a copy, what the template's own macro makes of it, or ``.split(sep)[-1]``
    of it where ``sep`` may be absent), which
    any reply starting with a space or an indented list shows; elsewhere (text after a
    ``</think>`` the template tested for, turns after a computed index) it is info. Strip
    whitespace with the bare method or filter, or slice off a known prefix.

    Bad:
        {{ message.content.lstrip('\\n') }}

    Good:
        {{ message.content|trim }}
    """

    code = "TK203"
    name = "strip-characters-argument"
    engines = ("hf-jinja", "minja")

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        raw = _RawContentStrips(self.options).strips(target) if target.tree is not None else set()
        for dot, open_, close, method in _method_calls(tokens):
            arguments = _arguments(tokens, open_, close)
            if method in ("strip", "lstrip", "rstrip") and len(arguments) == 1:
                argument = tokens[arguments[0][0]]
                # Stripping only whitespace characters ('\n') differs just when other whitespace
                # sits at the edge; stripping anything else ('</answer>') differs whenever it is there.
                only_whitespace = (
                    arguments[0][1] - arguments[0][0] == 1
                    and argument.type == "string"
                    and _string_value(argument.value).isspace()
                )
                message = f"hf-jinja ignores the characters passed to `.{method}()` and strips all whitespace instead"
                leading = method != "rstrip" and (tokens[dot].line, method) in raw
                if only_whitespace and leading:
                    message += (": message content as written (a reply starting with a space, an indented list "
                                "or code) loses its leading spaces there")
                yield self.at(
                    tokens[dot], message, ("hf-jinja",),
                    severity="info" if only_whitespace and not leading else "warning",
                )
        for index, token in enumerate(tokens):
            if _is(token, "|") and _is(_at(tokens, index + 1), "trim") and _is(_at(tokens, index + 2), "("):
                close = _closing(tokens, index + 2)
                if close is not None and _arguments(tokens, index + 2, close):
                    yield self.at(
                        token,
                        "`|trim(...)` with characters is a render error in hf-jinja and minja",
                        ("hf-jinja", "minja"),
                    )


# ---------------------------------------------------------------------------------------------
# TK204-TK206: statements and slices


@register
class StepSliceOrRange(_AstPortabilityRule):
    """A slice has a step (``[::-1]``) or ``range()`` counts down.

    Why: these are recent additions elsewhere. minja could not parse step slices before its
    Qwen3 support (llama.cpp fell back to a generic template), minijinja raised on negative slice
    steps before 2.10 and on negative ``range()`` arguments until mid-2025, @huggingface/jinja
    returned an empty ``range()`` for negative steps until early 2026, and llama.cpp's own engine
    ignored a negative-step slice's start and stop until mid-2026. Deployed runtimes lag; a
    forward loop with ``loop.revindex0`` or a namespace works in all of them.

    Bad:
        {% for message in messages[::-1] %}{{ message.role }}{% endfor %}

    Good:
        {% for message in messages|reverse %}{{ message.role }}{% endfor %}
    """

    code = "TK204"
    name = "step-slice-or-range"
    engines = ("minijinja", "hf-jinja", "minja")
    severity = "info"

    def visit_Slice(self, node: nodes.Slice) -> None:
        if node.step is not None:
            if _negative(node.step):
                engines = ("minijinja", "minja")
                message = (
                    "a negative slice step fails to parse in older minja (llama.cpp) and raises in minijinja "
                    "before 2.10"
                )
                if node.start is not None or node.stop is not None:
                    message += "; llama.cpp's own engine ignored its start/stop until mid-2026"
            else:
                engines = ("minja",)
                message = "a slice with a step fails to parse in older minja (llama.cpp)"
            self.flag(node, message, engines, needle="::" if node.stop is None else ":")
        self.generic_visit(node)

    def visit_Call(self, node: nodes.Call) -> None:
        is_range = isinstance(node.node, nodes.Name) and node.node.name == "range"
        if is_range and len(node.args) == 3 and _negative(node.args[2]):
            self.flag(
                node,
                "`range()` with a negative step: minijinja rejected negative arguments until mid-2025 and hf-jinja "
                "returned an empty range until early 2026",
                ("minijinja", "hf-jinja"),
                needle="range(",
            )
        self.generic_visit(node)


def _negative(node: nodes.Expr) -> bool:
    if isinstance(node, nodes.Neg):
        return True
    return isinstance(node, nodes.Const) and isinstance(node.value, (int, float)) and node.value < 0


@register
class GenerationTag(_TokenRule):
    """A ``{% generation %}`` block marks the assistant's tokens.

    Why: the tag is a transformers extension (it feeds ``return_assistant_tokens_mask``);
    minijinja and minijinja-js reject the whole template with "unknown statement generation", so
    the model cannot be served by them at all. @huggingface/jinja accepts the tag but renders as
    if it were not there, so a whitespace-control ``-`` next to it (``{% generation %}{{- x }}``)
    also strips the whitespace on the tag's other side, which Jinja2 keeps. Keep the tag in a
    separate training template, or accept that those runtimes need a copy without it.

    Bad:
        {% generation %}{{ message.content }}{% endgeneration %}

    Good:
        {{ message.content }}
    """

    code = "TK205"
    name = "generation-tag"
    engines = ("minijinja", "minijinja-js", "hf-jinja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        tags = []  # (index of `{%`, its tag name, index of `%}`)
        for index, token in enumerate(tokens):
            name = _at(tokens, index + 1)
            if token.type == "block_begin" and _is(name, "generation", "endgeneration"):
                close = next((position for position in range(index + 1, len(tokens))
                              if tokens[position].type == "block_end"), None)
                if close is not None:
                    tags.append((index, name.value, close))
        stripping = _tags_stripped_through(target.text, len(tags)) if tags else set()
        for ordinal, (index, name, _close) in enumerate(tags):
            # One syntax-error finding per block (at its opening tag), and each tag with a `-`
            # stripping through it named for hf-jinja.
            engines, parts = [], []
            if name == "generation":
                engines += ["minijinja", "minijinja-js"]
                parts.append("`{% generation %}` is a syntax error in minijinja and minijinja-js (unknown statement)")
            if ordinal in stripping:
                engines.append("hf-jinja")
                parts.append(f"hf-jinja ignores `{{% {name} %}}`, so the `-` beside it also strips the "
                             f"whitespace on its other side")
            if engines:
                yield self.at(tokens[index], "; ".join(parts), engines)


def _tags_stripped_through(text: str, count: int) -> set[int]:
    """Which of the template's ``count`` generation tags (by position) change the text Jinja2
    prints once hf-jinja's preprocessing deletes them: it applies ``lstrip_blocks`` and
    ``trim_blocks`` to the whole template, then removes each tag with the whitespace its own ``-``
    takes, so a ``-`` beside the tag reaches through to whitespace Jinja2 keeps.

    Jinja2's lexer tells whether the text with every tag deleted (lexed as hf-jinja lexes its
    preprocessed text) prints other literal text than the template does in Jinja2, and if so
    which tags matter: those whose keeping changes it."""
    prepared = _HF_TRIM_BLOCKS.sub(r"\1", _HF_LSTRIP_BLOCKS.sub(r"\1", text))
    if len(_HF_GENERATION_TAG.findall(prepared)) != count:
        return set()  # a tag spelled inside a string or comment: positions would not match

    def deleted(kept: int | None) -> str:
        ordinals = iter(range(count))

        def replace(match: re.Match) -> str:
            if next(ordinals) == kept:
                return match.group(0)
            before, strips_before, strips_after, after = match.groups()
            return ("" if strips_before else before) + ("" if strips_after else after)

        return _HF_GENERATION_TAG.sub(replace, prepared)

    try:
        none_kept = _printed_data(deleted(None))
        jinja2_data = "".join(value for _line, kind, value in environment().lex(text) if kind == "data")
        if none_kept == jinja2_data:
            return set()
        alone = {ordinal for ordinal in range(count) if _printed_data(deleted(ordinal)) != none_kept}
        # `{%- generation %} {% endgeneration %}`: only the two together reach through.
        return alone or set(range(count))
    except jinja2.TemplateSyntaxError:
        return set()


# @huggingface/jinja's preprocessing, as its source spells it.
_HF_LSTRIP_BLOCKS = re.compile(r"^[ \t]*(\{[#%-])", re.MULTILINE)
_HF_TRIM_BLOCKS = re.compile(r"([#%-]\})\n")
_HF_GENERATION_TAG = re.compile(r"(\s*)\{%(-?)\s*(?:end)?generation\s*(-?)%\}(\s*)")


def _printed_data(text: str) -> str:
    """Everything a preprocessed template prints literally: only the ``-`` whitespace control is
    left to apply, as in hf-jinja's lexer (``lstrip_blocks``/``trim_blocks`` already done)."""
    lexer = environment().overlay(trim_blocks=False, lstrip_blocks=False)
    return "".join(value for _line, kind, value in lexer.lex(text) if kind == "data")


@register
class LoopControlStatement(_AstPortabilityRule):
    """A loop uses ``{% break %}`` or ``{% continue %}``.

    Why: transformers enables Jinja's loopcontrols extension, but minijinja-js is built without
    it and rejects the template with "unknown statement" (minja lacked ``break`` until 2025 too).
    A ``{% for ... if cond %}`` filter or an ``{% if %}`` around the body does the same in every
    engine.

    Bad:
        {% for m in messages %}{% if m.role == 'tool' %}{% continue %}{% endif %}{{ m.content }}{% endfor %}

    Good:
        {% for m in messages if m.role != 'tool' %}{{ m.content }}{% endfor %}
    """

    code = "TK206"
    name = "loop-control-statement"
    engines = ("minijinja-js",)

    def visit_Break(self, node: nodes.Break) -> None:
        message = "`{% break %}` is a syntax error in minijinja-js (built without loop controls)"
        self.flag(node, message, self.engines, needle="break")

    def visit_Continue(self, node: nodes.Continue) -> None:
        message = "`{% continue %}` is a syntax error in minijinja-js (built without loop controls)"
        self.flag(node, message, self.engines, needle="continue")


# ---------------------------------------------------------------------------------------------
# TK207-TK209: tojson, formatting, dict.get


_TOJSON_KWARGS = {
    "ensure_ascii": ("minijinja", "minijinja-js"),
    "separators": ("minijinja", "minijinja-js", "minja"),
    "sort_keys": ("minijinja", "minijinja-js", "minja"),
}


@register
class TojsonKeywordArguments(_TokenRule):
    """``|tojson`` gets ``ensure_ascii``, ``separators`` or ``sort_keys``.

    Why: transformers' ``tojson`` is ``json.dumps`` with those options, but minijinja's and
    minijinja-js's accept only ``indent`` and raise "unknown keyword argument", and minja's has no
    ``separators``/``sort_keys``. ``ensure_ascii=False`` is transformers' default anyway.

    Bad:
        {{ tool|tojson(ensure_ascii=False) }}

    Good:
        {{ tool|tojson }}

    Fix: drops ``ensure_ascii=False`` (the default, so the output is unchanged).
    """

    code = "TK207"
    name = "tojson-keyword-arguments"
    engines = ("minijinja", "minijinja-js", "minja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            if not (_is(token, "|") and _is(_at(tokens, index + 1), "tojson") and _is(_at(tokens, index + 2), "(")):
                continue
            open_ = index + 2
            close = _closing(tokens, open_)
            if close is None:
                continue
            arguments = _arguments(tokens, open_, close)
            for position, (first, end) in enumerate(arguments):
                name = tokens[first]
                if not (name.type == "name" and name.value in _TOJSON_KWARGS and _is(_at(tokens, first + 1), "=")):
                    continue
                engines = _TOJSON_KWARGS[name.value]
                fix = None
                value = target.text[tokens[first + 2].offset : tokens[end - 1].end] if end - first >= 3 else ""
                if name.value == "ensure_ascii" and value in ("false", "False"):
                    removal = self._removal(tokens, open_, close, arguments, position)
                    fix = Fix("drop ensure_ascii=False (transformers' default)", (removal,))
                yield self.at(
                    name,
                    f"`tojson({name.value}=...)` raises \"unknown keyword argument\" in {_engines_text(engines)}",
                    engines,
                    fix=fix,
                )

    @staticmethod
    def _removal(tokens, open_, close, arguments, position) -> Edit:
        first, end = arguments[position]
        if len(arguments) == 1:
            return Edit(tokens[open_].offset, tokens[close].end, "")  # `|tojson()` -> `|tojson`
        if position + 1 < len(arguments):
            return Edit(tokens[first].offset, tokens[arguments[position + 1][0]].offset, "")
        previous_end = arguments[position - 1][1] - 1
        return Edit(tokens[previous_end].end, tokens[end - 1].end, "")


# What every caller gives a template without naming it: transformers' variables and Jinja's and
# transformers' globals, plus the switches serving stacks pass to reasoning models through
# `chat_template_kwargs` (enable_thinking, thinking, reasoning_effort) and Llama's built-in tools.
_PROVIDED_NAMES = frozenset({
    "messages", "tools", "documents", "add_generation_prompt", "raise_exception", "strftime_now", "range",
    "namespace", "dict", "lipsum", "cycler", "joiner", "loop", "enable_thinking", "thinking", "reasoning_effort",
    "builtin_tools"})


def _names_template_sets(target: LintTarget) -> set[str]:
    """Every name the template sets itself (``set``, loop targets, macros and their arguments)."""
    bound: set[str] = set()
    for found in find_all(target, target.tree, (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro)):
        if isinstance(found, nodes.Macro):
            bound |= {found.name} | {argument.name for argument in found.args}
        else:
            bound |= _target_names(found.target)
    return bound


def _falsy_constants(target: LintTarget) -> set[str]:
    """Names the template sets once, at its top level, to a false constant (``{% set HYTK = '' %}``)
    and never again: a branch needing one of them true is dead code."""
    counts: dict[str, int] = {}
    for found in find_all(target, target.tree, (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro)):
        names = {argument.name for argument in found.args} if isinstance(found, nodes.Macro) \
            else _target_names(found.target)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return {
        statement.target.name for statement in target.tree.body
        if isinstance(statement, nodes.Assign) and isinstance(statement.target, nodes.Name)
        and counts.get(statement.target.name) == 1 and (
            isinstance(statement.node, nodes.Const) and not statement.node.value
            or isinstance(statement.node, (nodes.List, nodes.Dict)) and not statement.node.items)}


def _required_name(test: nodes.Expr, positive: bool, names: set[str], *, defined: bool = True) -> str | None:
    """One of ``names`` that ``test`` holding (``positive``) needs to be true, or (with
    ``defined``) merely defined: ``{% if HYTK %}``, ``custom_tools is defined``. None otherwise."""
    if isinstance(test, nodes.Not):
        return _required_name(test.node, not positive, names, defined=defined)
    if isinstance(test, nodes.And) and positive or isinstance(test, nodes.Or) and not positive:
        return _required_name(test.left, positive, names, defined=defined) or _required_name(
            test.right, positive, names, defined=defined)
    if isinstance(test, nodes.Or) and positive or isinstance(test, nodes.And) and not positive:
        left = _required_name(test.left, positive, names, defined=defined)
        right = _required_name(test.right, positive, names, defined=defined)
        return left if left is not None and right is not None else None
    name = None
    if isinstance(test, nodes.Name) and positive:
        name = test.name
    elif defined and isinstance(test, nodes.Test) and isinstance(test.node, nodes.Name) \
            and (test.name, positive) in (("defined", True), ("undefined", False)):
        name = test.node.name
    elif defined and isinstance(test, nodes.Compare) and positive and isinstance(test.expr, nodes.Name) \
            and len(test.ops) == 1 and test.ops[0].op in ("eq", "gt", "gteq", "lt", "lteq", "in"):
        name = test.expr.name  # an undefined value equals (or exceeds) no constant
    return name if name in names else None


def _caller_variable(test: nodes.Expr, positive: bool, bound: set[str], free: set[str]) -> str | None:
    """A variable that ``test`` holding needs defined when the template never sets it and
    transformers never passes it (``{% if custom_tools %}``): only a caller naming it in
    ``apply_chat_template(..., custom_tools=...)`` gets there. ``free`` are the names it reads."""
    candidates = {name for name in free - bound - _PROVIDED_NAMES if not name.endswith("_token")}
    return _required_name(test, positive, candidates)


@register
class StringFormatting(_FactWalker, _AstPortabilityRule):
    """A string is formatted with ``.format()``, ``%`` or ``|format``.

    Why: Python's string formatting is not part of Jinja's common subset. ``'%s' % x`` is a
    render error in every other engine ("unknown operator"), ``.format()`` is missing in
    @huggingface/jinja, minijinja-js and minja, and so is the ``|format`` filter. Concatenate
    with ``~`` instead. Dead code is not reported (``{% set K = '' %}`` once at the top, then
    ``{% if K %}``), and under a test of a variable the template never sets and transformers
    does not pass (``{% if custom_tools %}``) it is info: only a caller naming it gets there.

    Bad:
        {{ 'Tool: {}'.format(tool.name) }}

    Good:
        {{ 'Tool: ' ~ tool.name }}
    """

    code = "TK208"
    name = "string-formatting"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if target.tree is not None:
            self.bound = _names_template_sets(target)
            self.read = {name.name for name in find_all(target, target.tree, nodes.Name) if name.ctx == "load"}
            self.dead = _falsy_constants(target)
        return super().check(target)

    def flag(self, node: nodes.Node, message: str, engines: Iterable[str], **kwargs) -> None:
        if any(_required_name(test, positive, self.dead, defined=False) for test, positive in self.facts):
            return  # `{% set HYTK = '' %}` ... `{% if HYTK %}`: dead code, no engine runs it
        # Under `{% if custom_tools %}` only a caller passing that variable gets the error: info.
        passed = next((name for test, positive in self.facts
                       if (name := _caller_variable(test, positive, self.bound, self.read)) is not None), None)
        if passed is not None:
            message += f"; reached only when the caller passes `{passed}`, which transformers does not by default"
            kwargs["severity"] = "info"
        super().flag(node, message, engines, **kwargs)

    def visit_Call(self, node: nodes.Call) -> None:
        if isinstance(node.node, nodes.Getattr) and node.node.attr == "format":
            self.flag(
                node,
                "`.format()` does not exist in hf-jinja, minijinja-js or minja; build the string with `~`",
                ("minijinja-js", "hf-jinja", "minja"),
                needle=".format(",
            )
        self.generic_visit(node)

    def visit_Mod(self, node: nodes.Mod) -> None:
        string_left = isinstance(node.left, nodes.Concat) or (
            isinstance(node.left, nodes.Const) and isinstance(node.left.value, str)
        )
        if string_left or isinstance(node.right, (nodes.Tuple, nodes.Dict)):
            self.flag(
                node,
                "`%` string formatting is a render error in minijinja, minijinja-js, hf-jinja and minja",
                self.engines,
                needle="%",
            )
        self.generic_visit(node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        if node.name == "format":
            self.flag(
                node,
                "the `|format` filter does not exist in hf-jinja, minijinja-js or minja",
                ("minijinja-js", "hf-jinja", "minja"),
                needle="format",
            )
        self.generic_visit(node)


# Keys a dict subscript would resolve to a dict method when missing, so `d[k]` is not `d.get(k)`.
_DICT_ATTRIBUTES = frozenset(name for name in dir(dict) if not name.startswith("_"))


@register
class DictGetDefault(_TokenRule):
    """``dict.get`` is called with a default value.

    Why: minijinja-js's Python-compatibility layer implements ``.get(key)`` but not
    ``.get(key, default)``; the two-argument call is a render error ("unknown method") there.
    ``d[key]|default(value)`` means the same in transformers for a missing key and works in
    every engine.

    Bad:
        {{ message.get('reasoning_content', '') }}

    Good:
        {{ message['reasoning_content']|default('') }}

    Fix: (unsafe) rewrites ``d.get(k, v)`` as ``d[k]|default(v)``: identical for dicts, but a
    non-dict receiver, or a key such as ``'items'`` that names a dict method, would behave
    differently.
    """

    code = "TK209"
    name = "dict-get-default"
    engines = ("minijinja-js",)
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for dot, open_, close, method in _method_calls(tokens):
            if method != "get":
                continue
            arguments = _arguments(tokens, open_, close)
            if len(arguments) != 2:
                continue
            yield self.at(
                tokens[dot],
                "`.get(key, default)` is a render error in minijinja-js (only one-argument .get exists); "
                "use `d[key]|default(value)`",
                self.engines,
                fix=self._fix(target, tokens, dot, open_, close, arguments),
            )

    @staticmethod
    def _fix(target, tokens, dot, open_, close, arguments) -> Fix | None:
        (key_first, key_end), (value_first, value_end) = arguments
        key = tokens[key_first]
        if key_end - key_first == 1 and key.type == "string" and key.value[1:-1] in _DICT_ATTRIBUTES:
            return None
        key_text = target.text[key.offset : tokens[key_end - 1].end]
        value_text = target.text[tokens[value_first].offset : tokens[value_end - 1].end]
        edits = [Edit(tokens[dot].offset, tokens[close].end, f"[{key_text}]|default({value_text})")]
        if _postfix_follows(tokens, close):
            start = _chain_start(tokens, dot - 1)
            if start is None:
                return None
            edits = [Edit(tokens[start].offset, tokens[start].offset, "(")] + edits
            edits[-1] = Edit(edits[-1].start, edits[-1].end, edits[-1].replacement + ")")
        return Fix("use d[key]|default(value)", tuple(edits), safe=False)


# ---------------------------------------------------------------------------------------------
# TK210-TK212: values, scoping, tests


# Filters that keep the items of a list (so a loop over `tools|selectattr(...)` yields tools).
_ORDER_FILTERS = frozenset({"selectattr", "rejectattr", "list", "reverse", "sort"})
# Inputs transformers passes as lists or dicts (and the fields inside them that are dicts).
_OBJECT_NAMES = frozenset({"tools", "documents", "tool_calls", "functions"})
_OBJECT_FIELDS = frozenset({"tools", "tool_calls", "arguments", "parameters", "properties", "function", "functions"})


@register
class ObjectPrintedWithoutTojson(_FactWalker, _AstPortabilityRule):
    """A list or dict (tools, tool calls, arguments, documents) is printed without ``|tojson``.

    Why: printing a container renders Python's repr in transformers (``{'a': True, 'b': None}``),
    JSON in @huggingface/jinja and minijinja-js (``{"a": true, "b": null}``, keys sorted in
    minijinja-js), and ``null`` for None in minja; concatenating a dict with ``~`` gives
    ``[object Map]`` in @huggingface/jinja, and ``|string`` of a dict is a render error there.
    The model sees a different prompt in every runtime. ``|tojson`` is the one spelling all
    engines agree on (up to whitespace). The same holds for a tool parameter's schema values
    printed by key (``schema[key]`` over every key prints ``enum`` lists), and for a message's
    ``content`` printed as it is in a template that reads content as a list of parts elsewhere
    (a user, assistant or system turn sent as parts prints the list).

    Bad:
        <tools>{{ tools }}</tools>

    Good:
        <tools>{{ tools|tojson }}</tools>
    """

    code = "TK210"
    name = "object-printed-without-tojson"
    engines = ("minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)
        self.object_loops: list[str] = []
        self.message_loops: list[str] = []

    def _is_object(self, node: nodes.Node) -> str | None:
        key = _key(node)
        if key is not None:
            last = key.rsplit(".", 1)[-1]
            is_object = key in _OBJECT_NAMES or key in self.object_loops or ("." in key and last in _OBJECT_FIELDS)
            if is_object and not self.type_tested(key):
                return key
            if "." in key and last == "content" and self._message_content(key) and self._reads_content_parts() \
                    and not self.type_tested(key) and not self._in_tool_turn():
                return key
        # A conditional's branches have their own conditions: `x if x is string else x|tojson`.
        if not isinstance(node, nodes.CondExpr) and _schema_flow(self.target).kind(node) is not None \
                and not self._type_tested_node(node) and not self._keyword_restricted(node):
            return _spelling(node)
        return None

    def _message_content(self, key: str) -> bool:
        """Whether ``key`` is a chat message's content (not a content part's own ``content``)."""
        owner = key.rsplit(".", 1)[0]
        return owner.split(".")[0].split("[")[0] in ("messages", "loop_messages") or owner in self.message_loops

    def _in_tool_turn(self) -> bool:
        """Whether the conditions put this in a tool-call turn or a turn of a role other than
        user, assistant and system (a tool result, a template's own role): clients send that
        content as a string even where user turns carry parts. A condition that is a variable
        set once is read through its value (``set has_tools = m.role == 'tool'``)."""
        sets = self.__dict__.get("_single_sets")
        if sets is None or sets[0] is not self.target:
            sets = self._single_sets = (self.target, _single_sets(self.target.tree))
        for test, positive in self.facts:
            if not positive:
                continue
            parts = _and_chain(test)
            parts += [part for found in parts if isinstance(found, nodes.Name) and found.name in sets[1]
                      for part in _and_chain(sets[1][found.name])]
            if any(_names_tool_turn(part) for part in parts):
                return True
        return False

    def _flag_subscript(self, node: nodes.Getitem, message: str) -> None:
        """Flag ``name[...]`` at its name token (the name alone may appear earlier on the line)."""
        line, name = node.lineno, node.node.name
        tokens = [token for token in _code(self.target) if token.line == line]
        starts = [first.column for first, second in zip(tokens, tokens[1:])
                  if first.value == name and second.value == "["]
        index = self._seen.get((line, name + "["), 0)
        self._seen[(line, name + "[")] = index + 1
        column = starts[min(index, len(starts) - 1)] if starts else self.target.node_position(node, name)[1]
        self.found.append(_finding(self, line, column, message, self.engines))

    def _reads_content_parts(self) -> bool:
        """Whether the template treats some message content as a list of parts (iterates it, tests
        its type, indexes or filters it): then content may be a list wherever it is printed."""
        cached = self.__dict__.get("_content_parts")
        if cached is None or cached[0] is not self.target:
            cached = self._content_parts = (self.target, _reads_content_parts(self.target.tree))
        return cached[1]

    def _type_tested_node(self, node: nodes.Node) -> bool:
        """``type_tested`` for an expression without a key (``schema[name]``)."""
        spelled = repr(node)
        for test, _positive in self.facts:
            for found in [test] if isinstance(test, nodes.Test) else list(test.find_all(nodes.Test)):
                if found.name in _TYPE_TESTS and repr(found.node) == spelled:
                    return True
        return False

    def _keyword_restricted(self, node: nodes.Node) -> bool:
        """Whether ``schema[name]`` is printed only for named keywords (``if name in [...]``)."""
        if not isinstance(node, nodes.Getitem) or isinstance(node.arg, nodes.Const):
            return False
        return any(positive and _restricted_keys(test, node.arg) for test, positive in self.facts)

    def visit_Call(self, node: nodes.Call) -> None:
        # An error message is no prompt: how raise_exception's text spells a dict does not matter.
        if isinstance(node.node, nodes.Name) and node.node.name == "raise_exception":
            return
        self.generic_visit(node)

    def visit_For(self, node: nodes.For) -> None:
        self.visit(node.iter)
        if node.test is not None:
            # `for k in d if k in [...]`: the body runs only where the filter holds.
            self.facts = self.facts + [(node.test, True)]
            try:
                self._visit_loop(node)
            finally:
                self.facts = self.facts[:-1]
        else:
            self._visit_loop(node)

    def _visit_loop(self, node: nodes.For) -> None:
        iterable = node.iter
        # `tools|selectattr(...)|list` still yields the tools themselves.
        while isinstance(iterable, nodes.Filter) and iterable.name in _ORDER_FILTERS:
            iterable = iterable.node
        names = []
        key = _key(iterable)
        if key is not None and (key in _OBJECT_NAMES or key.rsplit(".", 1)[-1] in ("tools", "tool_calls", "documents")):
            # `for tool in tools`: each item is a dict; tuple targets (`for k, v in ...`) are not.
            names = [node.target.name] if isinstance(node.target, nodes.Name) else []
        # `for message in messages` (or `loop_messages`, `messages[1:]`): items are chat messages.
        source = node.iter
        while isinstance(source, nodes.Filter) and source.node is not None or (
                isinstance(source, nodes.Getitem) and isinstance(source.arg, nodes.Slice)):
            source = source.node
        messages = [node.target.name] if isinstance(node.target, nodes.Name) and isinstance(source, nodes.Name) \
            and "messages" in source.name else []
        saved, saved_messages = self.object_loops, self.message_loops
        self.object_loops = saved + names
        self.message_loops = saved_messages + messages
        try:
            for child in node.body:
                self.visit(child)
        finally:
            self.object_loops, self.message_loops = saved, saved_messages
        for child in node.else_:
            self.visit(child)
        if node.test is not None:
            self.visit(node.test)

    def _flag_objects(self, children: list, describe) -> None:
        """Flag each child that is a list/dict turned into text (message from ``describe(key)``)."""
        for child in children:
            key = self._is_object(child)
            if key is not None:
                if key.rsplit(".", 1)[-1] == "content":
                    message = (f"`{key}` is printed as it is, but the template reads content as a list of parts "
                               f"elsewhere: a turn whose content is a list prints Python repr in transformers and "
                               f"JSON in hf-jinja and minijinja-js; print the parts' text")
                else:
                    message = describe(key)
                if isinstance(child, nodes.Getitem) and isinstance(child.node, nodes.Name):
                    self._flag_subscript(child, message)
                else:
                    self.flag(child, message, self.engines, needle=_needle(child))
            self.visit(child)

    def visit_Output(self, node: nodes.Output) -> None:
        self._flag_objects(node.nodes, lambda key: (
            f"`{{{{ {key} }}}}` prints a list/dict: transformers prints Python repr, hf-jinja and minijinja-js "
            f"print JSON, minja prints None as null; use `|tojson`"))

    def visit_Concat(self, node: nodes.Concat) -> None:
        self._flag_objects(node.nodes, lambda key: (
            f"`~ {key}` concatenates a list/dict: Python repr in transformers, JSON in minijinja-js and "
            f"hf-jinja (`[object Map]` for a dict); use `|tojson`"))

    def visit_Filter(self, node: nodes.Filter) -> None:
        key = self._is_object(node.node) if node.name == "string" and node.node is not None else None
        if key is not None:
            self.flag(
                node,
                f"`{key}|string` gives Python repr in transformers; hf-jinja raises on a dict and prints JSON for a "
                f"list, minijinja-js prints JSON; use `|tojson`",
                ("minijinja-js", "hf-jinja"),
                needle="string",
            )
        self.generic_visit(node)


@register
class LoopSetCarriedOver(AstRule):
    """A variable set inside a loop is read before it is set in the same iteration.

    Why: in Jinja2 every iteration of a ``for`` loop starts from the variables outside the loop:
    a ``{% set %}`` in one iteration is gone in the next. @huggingface/jinja, minijinja-js and
    minja keep the previous iteration's value, so a conditionally set variable (a system message
    remembered, a counter incremented) carries over there and the prompts differ (GLM-5.2 leaked
    ``reasoning_content`` from one turn into the next this way). A read that raises in Jinja2
    when the name is unset (``x.name``, ``x + '...'``) is not reported for a name bound nowhere
    outside the loop: there, the iterations that differ are ones transformers cannot render. It is
    info when an ``if``/``elif`` chain on the message role sets the name for every client role
    the template names (LlamaGuard's user and assistant): only a message of another role keeps
    the previous value. To carry state across iterations use ``namespace()``; to keep it per
    iteration, set it unconditionally first.

    Bad:
        {% for m in messages %}{% if m.role == 'system' %}{% set sys = m.content %}{% endif %}{{ sys }}{% endfor %}

    Good:
        {% set ns = namespace(sys='') %}{% for m in messages %}
        {% if m.role == 'system' %}{% set ns.sys = m.content %}{% endif %}{{ ns.sys }}
        {% endfor %}
    """

    code = "TK211"
    name = "loop-set-carried-over"
    engines = ("minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def visit_For(self, node: nodes.For) -> None:
        assigned = _assigned_names(node.body) - _target_names(node.target)
        if assigned:
            reported: set[str] = set()
            outside = _names_bound_outside(self.target, node)
            for read in _reads_before_set(node.body, assigned, set()):
                if read.name in reported:
                    continue
                if read.name not in outside and id(read) in _failing_when_undefined(node):
                    # Unset, the read raises in transformers (`x.name`, `x + '...'`): the iterations
                    # where engines differ are ones transformers cannot render at all.
                    continue
                reported.add(read.name)
                line = read.lineno
                column = _load_column(self.target, line, read.name) or self.target.column_of(line, read.name)
                finding = self.diagnostic(
                    line,
                    column,
                    f"`{read.name}` is set inside this loop but read here before it is set in every iteration: "
                    f"transformers starts each iteration without it, hf-jinja, minijinja-js and minja keep the "
                    f"previous iteration's value; use namespace()",
                )
                covered = _set_for_every_named_role(self.target, node, read.name)
                if covered:
                    # Unset only for a message of a role the template never names: not its input.
                    finding = dataclasses.replace(finding, severity="info", message=(
                        f"{finding.message}; reached only by a message whose role is none of those the "
                        f"template handles ({', '.join(sorted(covered))})"))
                self.found.append(finding)
        self.generic_visit(node)


def _role_values(test: nodes.Expr) -> set[str] | None:
    """The roles ``m.role == 'user'`` (or ``in [...]``, or an ``or`` of such) holds for; None for
    any other test."""
    if isinstance(test, nodes.Or):
        left, right = _role_values(test.left), _role_values(test.right)
        return left | right if left is not None and right is not None else None
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op in ("eq", "in"):
        key = _key(test.expr)
        if key is not None and (key == "role" or key.endswith(".role")):
            return _constant_strings(test.ops[0].expr)
    return None


def _set_for_every_named_role(target: LintTarget, loop: nodes.For, name: str) -> set[str]:
    """The roles of an ``if``/``elif`` chain on the message role in ``loop`` whose every branch
    sets ``name``, when those are all the client roles the template names anywhere (LlamaGuard's
    ``user`` -> 'User', ``assistant`` -> 'Agent'); empty otherwise."""
    named = set()
    for compare in find_all(target, target.tree, nodes.Compare):
        named |= (_role_values(compare) or set()) & _CLIENT_ROLES
    for statement in loop.body:
        if not isinstance(statement, nodes.If) or statement.else_:
            continue
        branches = [(statement.test, statement.body)] + [(branch.test, branch.body) for branch in statement.elif_]
        roles: set[str] = set()
        for test, body in branches:
            values = _role_values(test)
            if values is None or name not in _assigned_names(body):
                break
            roles |= values
        else:
            if named and named <= roles:
                return roles
    return set()


def _names_bound_outside(target: LintTarget, loop: nodes.For) -> set[str]:
    """Names the template binds anywhere but inside ``loop`` (a value the loop's reads could see
    before its own set: an earlier ``set``, an enclosing loop's variable, a macro argument)."""
    inside = {id(found) for found in find_all(target, loop, nodes.Node)}
    bound: set[str] = set()
    for found in find_all(target, target.tree, (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro)):
        if id(found) in inside:
            continue
        if isinstance(found, nodes.Macro):
            bound |= {argument.name for argument in found.args}
        else:
            bound |= _target_names(found.target)
    return bound


def _failing_when_undefined(loop: nodes.For) -> set[int]:
    """Ids of the names in ``loop`` whose read raises in Jinja2 when the name is undefined: the
    base of an attribute or item access, an arithmetic operand, a called name."""
    found: set[int] = set()
    for node in loop.find_all((nodes.Getattr, nodes.Getitem, nodes.BinExpr, nodes.Call)):
        if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Call)):
            operands = [node.node]
        elif isinstance(node, (nodes.And, nodes.Or)):
            continue  # truth tests take an undefined value
        else:
            operands = [node.left, node.right]
        found |= {id(operand) for operand in operands if isinstance(operand, nodes.Name)}
    return found


def _load_column(target: LintTarget, line: int, name: str) -> int | None:
    """Column of the first use of ``name`` on ``line`` that is not an assignment or loop target."""
    tokens = _code(target)
    for index, token in enumerate(tokens):
        if token.line != line or token.type != "name" or token.value != name:
            continue
        if _is(_at(tokens, index + 1), "=", ",") or _is(_at(tokens, index - 1), "set", "for", ".", ","):
            continue
        return token.column
    return None


def _target_names(target: nodes.Node) -> set[str]:
    """Names bound by an assignment or loop target (``x``, ``a, b``); ``find_all`` skips the node
    itself, so a bare name needs its own case."""
    if isinstance(target, nodes.Name):
        return {target.name}
    if isinstance(target, nodes.NSRef):
        return set()  # `ns.x` changes a namespace, which every engine shares across iterations
    return {name.name for name in target.find_all(nodes.Name)}


def _assigned_names(body: list[nodes.Node]) -> set[str]:
    """Names set by ``{% set %}`` in a loop body at that loop's own scope (not in inner loops,
    macros or call blocks, which scope their own assignments)."""
    found: set[str] = set()
    for statement in body:
        if isinstance(statement, (nodes.Assign, nodes.AssignBlock)):
            found |= _target_names(statement.target)
        elif isinstance(statement, nodes.If):
            found |= _assigned_names(statement.body) | _assigned_names(statement.else_)
            for branch in statement.elif_:
                found |= _assigned_names(branch.body)
        elif isinstance(statement, (nodes.FilterBlock, nodes.Scope, nodes.ScopedEvalContextModifier)):
            found |= _assigned_names(statement.body)
    return found


def _reads_before_set(body: list[nodes.Node], watched: set[str], done: set[str]) -> Iterator[nodes.Name]:
    """Reads of watched names not preceded, on every path through this iteration, by their set.

    ``done`` (updated in place) holds the names certainly set so far in the iteration.
    """
    for statement in body:
        if isinstance(statement, nodes.Assign):
            yield from _expression_reads(statement.node, watched, done)
            done |= _target_names(statement.target) & watched
        elif isinstance(statement, nodes.AssignBlock):
            yield from _reads_before_set(statement.body, watched, set(done))
            done |= _target_names(statement.target) & watched
        elif isinstance(statement, nodes.If):
            yield from _expression_reads(statement.test, watched, done)
            branches = [statement.body] + [branch.body for branch in statement.elif_] + [statement.else_]
            for branch in statement.elif_:
                yield from _expression_reads(branch.test, watched, done)
            outcomes = []
            for branch in branches:
                state = set(done)
                yield from _reads_before_set(branch, watched, state)
                outcomes.append(state)
            done |= set.intersection(*outcomes)
        elif isinstance(statement, nodes.For):
            yield from _expression_reads(statement.iter, watched, done)
            shadowed = _target_names(statement.target)
            inner = watched - shadowed
            yield from _reads_before_set(statement.body, inner, set(done))
            yield from _reads_before_set(statement.else_, inner, set(done))
        elif isinstance(statement, (nodes.Macro, nodes.CallBlock)):
            # A macro body runs with its own scope wherever it is called; skip its locals.
            if isinstance(statement, nodes.CallBlock):
                yield from _expression_reads(statement.call, watched, done)
        elif isinstance(statement, (nodes.FilterBlock, nodes.Scope, nodes.ScopedEvalContextModifier)):
            yield from _reads_before_set(statement.body, watched, done)
        else:
            yield from _expression_reads(statement, watched, done)
            if _raises(statement):
                done |= watched  # the render stops here, so no later read happens on this path


def _raises(statement: nodes.Node) -> bool:
    """Whether a statement is ``{{ raise_exception(...) }}``, which ends the render."""
    return isinstance(statement, nodes.Output) and any(
        isinstance(child, nodes.Call) and isinstance(child.node, nodes.Name) and child.node.name == "raise_exception"
        for child in statement.nodes
    )


def _expression_reads(node: nodes.Node, watched: set[str], done: set[str]) -> Iterator[nodes.Name]:
    names = [node] if isinstance(node, nodes.Name) else node.find_all(nodes.Name)
    for name in names:
        if name.ctx == "load" and name.name in watched and name.name not in done:
            yield name


@register
class IterableTestOnNone(_FactWalker, _AstPortabilityRule):
    """``tools is iterable`` (or ``documents``) is tested while the value may be None.

    Why: minijinja (and minijinja-js) treat ``none`` as iterable, Jinja2 does not, and
    transformers passes ``tools=None`` and ``documents=None`` when the caller has none. A guard
    like ``tools is iterable and tools|length > 0`` is false in transformers but true in
    minijinja, which then fails on ``none|length`` (Qwen3-Coder, Nemotron-3-Nano). Test
    ``tools is not none`` (or just ``tools``) first. Message fields are not reported:
    transformers drops None-valued message keys, and an undefined value is iterable everywhere.

    Bad:
        {% if tools is iterable and tools|length > 0 %}{{ tools|tojson }}{% endif %}

    Good:
        {% if tools is not none and tools is iterable and tools|length > 0 %}{{ tools|tojson }}{% endif %}
    """

    code = "TK212"
    name = "iterable-test-on-none"
    engines = ("minijinja", "minijinja-js")
    severity = "warning"

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)

    def visit_Test(self, node: nodes.Test) -> None:
        key = _key(node.node)
        if node.name == "iterable" and key in _NONE_INPUTS and not self.known(key, "not-none"):
            self.flag(
                node,
                f"`{key} is iterable` is true for none in minijinja and minijinja-js but false in transformers "
                f"(which passes {key}=None when there are none); test `{key} is not none` first",
                self.engines,
                needle="iterable",
            )
        self.generic_visit(node)


# The inputs transformers passes as None rather than leaving undefined.
_NONE_INPUTS = frozenset({"tools", "documents"})


# ---------------------------------------------------------------------------------------------
# TK213-TK217: lexical and syntactic edge cases


_LINE_CONTINUATION = re.compile(r"(?<!\\)(?:\\\\)*\\(\r?\n)")


@register
class BackslashNewlineInString(_TokenRule):
    """A string literal continues onto the next line with a backslash.

    Why: Python reads backslash-newline in a string as "nothing" (a line continuation), so
    transformers renders the two lines joined. minijinja keeps the backslash and the newline,
    minja keeps the newline, and @huggingface/jinja and minijinja-js reject the template ("bad
    string escape"): every other engine renders something else or nothing.

    Bad:
        {{ 'You are a helpful \\
        assistant.' }}

    Good:
        {{ 'You are a helpful assistant.' }}

    Fix: removes the backslash-newline pairs, which is exactly what transformers does with them.
    """

    code = "TK213"
    name = "backslash-newline-in-string"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for token in tokens:
            if token.type != "string":
                continue
            matches = list(_LINE_CONTINUATION.finditer(token.value))
            if not matches:
                continue
            # Each match ends with backslash + newline; remove exactly those characters.
            edits = tuple(
                Edit(token.offset + match.end() - len(match.group(1)) - 1, token.offset + match.end(), "")
                for match in matches
            )
            yield self.at(
                token,
                "backslash-newline inside a string: transformers drops both, minijinja and minja keep the newline, "
                "hf-jinja and minijinja-js reject the template",
                self.engines,
                fix=Fix("join the string's lines", edits),
            )


_HF_STRFTIME = re.compile(r"%[YmdbBHM%]")


@register
class StrftimeNowCall(_AstPortabilityRule):
    """The template calls ``strftime_now()``.

    Why: ``strftime_now`` is a global transformers adds; minijinja and minijinja-js have no such
    function unless the host registers one (otherwise "unknown function"), and
    @huggingface/jinja formats only ``%Y %m %d %b %B %H %M %%`` and prints any other directive
    literally. The date also makes the prompt change every day. Prefer a ``date_string`` variable
    the caller passes, with ``strftime_now`` as the fallback.

    Bad:
        Today is {{ strftime_now('%A, %d %B %Y') }}.

    Good:
        Today is {{ date_string }}.
    """

    code = "TK214"
    name = "strftime-now-call"
    engines = ("minijinja", "minijinja-js", "hf-jinja")
    severity = "info"

    def visit_Call(self, node: nodes.Call) -> None:
        if isinstance(node.node, nodes.Name) and node.node.name == "strftime_now":
            engines = ["minijinja", "minijinja-js"]
            extra = ""
            if node.args and isinstance(node.args[0], nodes.Const) and isinstance(node.args[0].value, str):
                leftover = _HF_STRFTIME.sub("", node.args[0].value)
                if "%" in leftover:
                    engines.append("hf-jinja")
                    extra = "; hf-jinja prints directives other than %Y %m %d %b %B %H %M literally"
            self.flag(
                node,
                "`strftime_now()` is a transformers global: minijinja and minijinja-js fail unless the host defines it"
                + extra,
                engines,
                needle="strftime_now",
            )
        self.generic_visit(node)


@register
class DottedIntegerIndex(_TokenRule):
    """A list item is read with a dotted integer (``x.content.0``).

    Why: Jinja2 treats ``.0`` as ``[0]``, but minijinja-js and minja fail to parse it (GLM-5.1
    and GLM-5.2 templates could not be loaded there). Subscripts work everywhere.

    Bad:
        {{ message.content.0.text }}

    Good:
        {{ message.content[0].text }}

    Fix: rewrites ``.0`` as ``[0]`` (the same node to Jinja2).
    """

    code = "TK215"
    name = "dotted-integer-index"
    engines = ("minijinja-js", "minja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            number = _at(tokens, index + 1)
            if _is(token, ".") and number is not None and number.type == "integer":
                yield self.at(
                    token,
                    f"`.{number.value}` index is a syntax error in minijinja-js and minja; write `[{number.value}]`",
                    self.engines,
                    fix=Fix("use a subscript", (Edit(token.offset, number.end, f"[{number.value}]"),)),
                )


@register
class PostfixOnCallResult(_TokenRule):
    """An attribute, subscript or method is taken directly on a function call's result.

    Why: minja parses ``f(x).y``, ``f(x)[0]`` and ``f(x).endswith(...)`` only when the call is
    in parentheses; otherwise the template fails to load (GLM-4.6, StepFun-3.5-Flash,
    MiroThinker: ``visible_text(m.content).endswith(...)``).

    Bad:
        {% if render_text(message).endswith('.') %}x{% endif %}

    Good:
        {% if (render_text(message)).endswith('.') %}x{% endif %}

    Fix: puts the call in parentheses (the same expression to Jinja2).
    """

    code = "TK216"
    name = "postfix-on-call-result"
    engines = ("minja",)
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            if token.type != "name" or token.value in _KEYWORDS or not _is(_at(tokens, index + 1), "("):
                continue
            if _is(_at(tokens, index - 1), ".", "|", "is", "macro", "call"):
                continue  # a method, filter, test or macro definition, not a bare call
            close = _closing(tokens, index + 1)
            if close is None or not _is(_at(tokens, close + 1), ".", "["):
                continue
            yield self.at(
                token,
                f"`{token.value}(...)` followed by `{tokens[close + 1].value}` is a syntax error in minja; "
                f"wrap the call in parentheses",
                self.engines,
                fix=Fix(
                    "parenthesise the call",
                    (Edit(token.offset, token.offset, "("), Edit(tokens[close].end, tokens[close].end, ")")),
                ),
            )


@register
class TrailingCommaInLiteral(_TokenRule):
    """A list, dict or tuple literal ends with a comma.

    Why: minja's parser expects another element after every comma, so ``[a, b,]``,
    ``{'k': v,}`` and ``(a, b,)`` make the template fail to load (Llama-Guard-3-11B-Vision).

    Bad:
        {% set roles = {'user': 'User', 'assistant': 'Assistant',} %}

    Good:
        {% set roles = {'user': 'User', 'assistant': 'Assistant'} %}

    Fix: removes the comma (except in a one-element tuple, where it makes the tuple).
    """

    code = "TK217"
    name = "trailing-comma-in-literal"
    engines = ("minja",)
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            closer = _at(tokens, index + 1)
            if not (_is(token, ",") and _is(closer, ")", "]", "}")):
                continue
            opened = _opening(tokens, index + 1)
            if opened is None:
                continue
            fix = Fix("remove the trailing comma", (Edit(token.offset, token.end, ""),))
            if closer.value == ")":
                before = _at(tokens, opened - 1)
                called = before is not None and (
                    (before.type == "name" and before.value not in _KEYWORDS) or _is(before, ")", "]")
                )
                if called:
                    continue  # call arguments: minja accepts a trailing comma there
                if len(_arguments(tokens, opened, index + 1)) == 1:
                    fix = None  # `(x,)` is a one-element tuple; without the comma it is just `x`
            kind = {")": "tuple", "]": "list", "}": "dict"}[closer.value]
            message = f"trailing comma in a {kind} literal is a syntax error in minja"
            yield self.at(token, message, self.engines, fix=fix)


# ---------------------------------------------------------------------------------------------
# TK218-TK222: filters, tests, globals and printed values


_ALL = ("minijinja", "minijinja-js", "hf-jinja", "minja")
# filter -> engines that lack it (or differ, where the text says so); measured, minja from source.
_FILTER_GAPS: dict[str, dict[str, str]] = {
    "title": {"hf-jinja": "leaves letters after a word's first as they are", "minja": "missing"},
    "capitalize": {"hf-jinja": "does not lower-case the rest of the string", "minja": "missing"},
    "first": {"minja": "missing"},
    "replace": {"minja": "missing"},
    "reverse": {"minja": "missing"},
    "sort": {"minja": "missing"},
    "float": {"minja": "missing"},
    "abs": {"minja": "missing"},
    "round": {"hf-jinja": "missing", "minja": "missing"},
    "min": {"hf-jinja": "missing", "minja": "missing"},
    "max": {"hf-jinja": "missing", "minja": "missing"},
    "sum": {"hf-jinja": "missing", "minja": "missing"},
    "batch": {"hf-jinja": "missing", "minja": "missing"},
    "slice": {"hf-jinja": "missing", "minja": "missing"},
    "groupby": {"hf-jinja": "missing", "minja": "missing"},
    "attr": {"hf-jinja": "missing", "minja": "missing"},
    "striptags": {"hf-jinja": "missing", "minja": "missing"},
    "pprint": {"hf-jinja": "missing", "minja": "missing"},
    "d": {"hf-jinja": "missing", "minja": "missing"},
    "count": {"hf-jinja": "missing"},
    "escape": {"hf-jinja": "missing"},
    "e": {"hf-jinja": "missing"},
    "select": {"hf-jinja": "missing"},
    "reject": {"hf-jinja": "missing"},
    "urlencode": {"minijinja-js": "missing", "hf-jinja": "missing", "minja": "missing"},
    "forceescape": {engine: "missing" for engine in _ALL},
    "center": {engine: "missing" for engine in _ALL},
    "wordcount": {engine: "missing" for engine in _ALL},
    "wordwrap": {engine: "missing" for engine in _ALL},
    "truncate": {engine: "missing" for engine in _ALL},
    "xmlattr": {engine: "missing" for engine in _ALL},
}
# The tests each engine has: minja's `is` knows only these names, @huggingface/jinja's list is
# fixed, minijinja (both builds) lacks `callable`. Other Jinja2 tests are missing there.
_MINJA_TESTS = frozenset(
    "none boolean integer float number string mapping iterable sequence defined true false".split()
)
_MINJA_TEST_GLOBALS = frozenset({"equalto", "in", "=="})  # what selectattr(..., name) finds in minja
_HF_TESTS = frozenset(
    "boolean callable odd even false true none string number integer iterable mapping sequence lower upper "
    "defined undefined equalto eq".split()
)
_TEST_FILTERS = {"select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}


@register
class FilterUnsupported(_FactWalker, _AstPortabilityRule):
    """A filter is used that some engine lacks or implements differently.

    Why: each engine ships its own subset of Jinja's filters. minja has no ``title``,
    ``capitalize``, ``first``, ``replace``, ``reverse``, ``sort`` or ``min``/``max``/``sum``;
    @huggingface/jinja has no ``min``, ``max``, ``sum``, ``select``, ``reject``, ``round`` or
    ``map`` without ``attribute=``, and its ``title``/``capitalize`` do not lower-case the rest
    of the word. A missing filter is a render error there. @huggingface/jinja also applies list
    filters (``list``, ``first``, ``join``, ``sort`` ...) to lists only, so ``|list`` of a tool's
    ``properties`` mapping is a render error; and its ``first``/``last`` of an empty list give no
    value at all, so ``...|selectattr(...)|first|default(x)`` loses the fallback (or fails)
    where transformers gives ``x``. Jinja2's ``selectattr``, ``rejectattr``, ``select``,
    ``reject`` and ``map`` give an empty sequence for none, @huggingface/jinja raises there; and
    transformers passes ``tools=None`` and ``documents=None`` when the caller has none, so
    ``tools|selectattr(...)`` outside a ``{% if tools %}`` fails every request without tools
    (``|default([])`` keeps a none; ``(tools or [])`` or ``|default([], true)`` replaces it).
    The ``title``/``capitalize`` difference is not reported for strings the template fixes that
    come out the same, and is info for a message role: only a role with an upper-case letter
    after a word's first reaches it, and the roles clients send are lower case.

    Bad:
        {{ message.role|capitalize }}

    Good:
        {% if message.role == 'user' %}User{% else %}Assistant{% endif %}
    """

    code = "TK218"
    name = "filter-unsupported"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        # id of a `|first`/`|last` node -> how its result is used (see _empty_first_breaks)
        self.first_uses: dict[int, str] = {}
        # None-passed inputs the template has replaced by a non-none value for every later read
        self.none_replaced: set[str] = set()
        # None-passed inputs already reported where every render passes: hf-jinja stops there
        # when the input is none, so later reads add no failure
        self.none_reported: set[str] = set()
        self.scopes = 0  # enclosing loops, macros and call blocks (their `set` stays inside)
        self.facts = []
        # name -> every string the template's `set`s give it, once an unconditional one has run
        self.constant_names: dict[str, set[str]] = {}
        return super().check(target)

    def visit_Assign(self, node: nodes.Assign) -> None:
        self.first_uses[id(node.node)] = "set"
        self.generic_visit(node)
        if isinstance(node.target, nodes.Name):
            values = self._constant_values(node.node)
            if values is None:
                self.constant_names.pop(node.target.name, None)
            elif not self.facts and not self.scopes:
                self.constant_names[node.target.name] = values
            elif node.target.name in self.constant_names:
                self.constant_names[node.target.name] |= values
        key = _key(node.target)
        if key not in _NONE_INPUTS or self.scopes:
            return
        if self._may_hold_none(node.node):
            self.none_replaced.discard(key)
        elif all(_taken_when_none(test, positive, key) for test, positive in self.facts):
            self.none_replaced.add(key)

    def visit_For(self, node: nodes.For) -> None:
        self.visit(node.iter)  # evaluated once, before the loop's own scope
        self._inside([node.target, node.test, *node.body, *node.else_])

    def visit_Macro(self, node: nodes.Macro) -> None:
        self._inside([*node.args, *node.defaults, *node.body])

    def visit_CallBlock(self, node: nodes.CallBlock) -> None:
        self.visit(node.call)
        self._inside([*node.args, *node.defaults, *node.body])

    def _inside(self, children: list) -> None:
        self.scopes += 1
        try:
            for child in children:
                if child is not None:
                    self.visit(child)
        finally:
            self.scopes -= 1

    def visit_Getattr(self, node: nodes.Getattr) -> None:
        self.first_uses[id(node.node)] = "member"
        self.generic_visit(node)

    def visit_Getitem(self, node: nodes.Getitem) -> None:
        self.first_uses[id(node.node)] = "member"
        self.generic_visit(node)

    def visit_Or(self, node: nodes.Or) -> None:
        self.first_uses[id(node.left)] = "fallback"
        _FactWalker.visit_Or(self, node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        gaps = dict(_FILTER_GAPS.get(node.name, {}))
        breaking = False  # a gap that is not "missing" but still a render error or lost output
        if node.name == "map" and not any(keyword.key == "attribute" for keyword in node.kwargs):
            gaps["hf-jinja"] = "supports only map(attribute=...)"
        if node.name == "dictsort" and (node.args or node.kwargs):
            gaps["minja"] = "takes no arguments"
        if node.name in ("default", "d") and node.node is not None:
            self.first_uses[id(node.node)] = "fallback"
        quiet_reason = None  # why ordinary input cannot reach hf-jinja's difference, when it cannot
        if node.name in _HF_CASE_FILTERS and node.node is not None:
            values = self._constant_values(node.node)
            if values is not None and all(_same_case_result(node.name, value) for value in values):
                del gaps["hf-jinja"]  # these strings come out the same there
            elif _key(node.node) is not None and _key(node.node).rsplit(".", 1)[-1] == "role":
                quiet_reason = ("reached only by a role with an upper-case letter after a word's first; the "
                                "roles clients send are lower case")
        if node.name in _MAPPING_FAILING_FILTERS and "hf-jinja" not in gaps and node.node is not None \
                and self._mapping(node.node, node.name):
            gaps["hf-jinja"] = ("raises on a mapping (only items, length, dictsort and tojson apply to one there); "
                                "iterate `|items` or the mapping itself")
            breaking = True
        elif node.name in ("first", "last") and "hf-jinja" not in gaps and self._empty_first_breaks(node):
            gaps["hf-jinja"] = ("gives no value at all for an empty list (not undefined): `|default`, `or`, a "
                                "test or printing it fails or loses the fallback there; `{% set %}` the "
                                "result first, or test the list's length")
            breaking = True
        elif node.name in _EMPTY_ON_NONE_FILTERS and "hf-jinja" not in gaps and node.node is not None:
            key = self._none_input(node.node)
            if key is not None:
                gaps["hf-jinja"] = (f"raises on none where Jinja2 gives an empty sequence, and transformers passes "
                                    f"{key}=None to every request without {key}; use `({key} or [])|{node.name}` "
                                    f"or test `{key}` first")
                breaking = True
                if not self.facts and not self.scopes:
                    self.none_reported.add(key)
        quiet = gaps.pop("hf-jinja") if quiet_reason is not None and "hf-jinja" in gaps else None
        if gaps:
            missing = [engine for engine, what in gaps.items() if what == "missing"]
            parts = [f"missing in {_engines_text(missing)}"] if missing else []
            parts += [f"{engine} {what}" for engine, what in gaps.items() if what != "missing"]
            severity: Severity = "warning" if missing or breaking else "info"
            self.flag(node, f"`|{node.name}`: " + "; ".join(parts), gaps, needle=node.name, severity=severity)
        if quiet is not None:
            message = f"`|{node.name}`: hf-jinja {quiet}; {quiet_reason}"
            if gaps:  # the same place as the finding just made (flag would take the next match on the line)
                self.found.append(dataclasses.replace(self.found[-1], message=message, engines=("hf-jinja",),
                                                      severity="info"))
            else:
                self.flag(node, message, ["hf-jinja"], needle=node.name, severity="info")
        self.generic_visit(node)

    def _constant_values(self, node: nodes.Node) -> set[str] | None:
        """Every string ``node`` can be, when the template fixes them (constants, names ``set`` only
        to constants, a choice between such); None when input can reach it."""
        if isinstance(node, nodes.Const):
            return {node.value} if isinstance(node.value, str) else None
        if isinstance(node, nodes.Name):
            values = self.constant_names.get(node.name)
            return set(values) if values is not None else None
        if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
            first, second = self._constant_values(node.expr1), self._constant_values(node.expr2)
            return first | second if first is not None and second is not None else None
        return None

    def _mapping(self, node: nodes.Node, name: str) -> bool:
        """Whether ``node`` holds a mapping in ordinary input (tool schema parts, a dict literal);
        tool-call ``arguments`` (a mapping or a JSON string) count for filters a string fails too."""
        if isinstance(node, nodes.Dict):
            return True
        if _schema_flow(self.target).kind(node) in (_PROPERTIES, _SCHEMA):
            return True
        key = _key(node)
        last = key.rsplit(".", 1)[-1] if key is not None and "." in key else None
        return last in ("properties", "parameters") or (last == "arguments" and name != "join")

    def _empty_first_breaks(self, node: nodes.Filter) -> bool:
        """Whether an empty list reaching this ``|first``/``|last`` is ordinary and its missing
        value is then used: the author gives a fallback (``|default``, ``or``), or the list is a
        selection (``selectattr``, ``reject`` ...) whose result is printed or tested directly.
        Stored with ``set`` first, the name reads as undefined as in Jinja2; an attribute of it
        fails in both engines."""
        use = self.first_uses.get(id(node))
        if use in ("set", "member"):
            return False
        if use == "fallback":
            return True
        source = node.node
        while isinstance(source, nodes.Filter):
            if source.name in ("selectattr", "rejectattr", "select", "reject"):
                return True
            source = source.node
        return False

    def _may_hold_none(self, node: nodes.Node) -> bool:
        """Whether ``node`` is none when the None-passed input it reads is (``|default(x)`` without
        ``true`` keeps a none; ``or`` and ``|default(x, true)`` replace it)."""
        while isinstance(node, nodes.Filter) and node.name in ("default", "d") and not _replaces_none(node):
            node = node.node
        if isinstance(node, nodes.Const):
            return node.value is None
        if isinstance(node, nodes.CondExpr):
            # `tools if tools else []`: a branch holds the input's none only where the test allows it
            return any(self._may_hold_none(branch) and not _proves_not_none(node.test, taken, _key(branch) or "")
                       for branch, taken in ((node.expr1, True), (node.expr2, False)) if branch is not None) \
                or node.expr2 is None
        key = _key(node)
        return key in _NONE_INPUTS and key not in self.none_replaced

    def _none_input(self, node: nodes.Node) -> str | None:
        """The None-passed input (``tools``, ``documents``) that ``node`` may hold as none here."""
        while isinstance(node, nodes.Filter) and node.name in ("default", "d") and not _replaces_none(node):
            node = node.node
        key = _key(node)
        if key not in _NONE_INPUTS or key in self.none_replaced or key in self.none_reported:
            return None
        if any(_proves_not_none(test, positive, key) for test, positive in self.facts):
            return None
        return key


# Filters whose hf-jinja version leaves letters after a word's first as they are.
_HF_CASE_FILTERS = frozenset({"title", "capitalize"})
_HF_WORD_START = re.compile(r"\b\w", re.ASCII)  # JavaScript's \b\w: ASCII word characters only


def _same_case_result(name: str, value: str) -> bool:
    """Whether ``value|title`` (or ``|capitalize``) is the same in Jinja2 and hf-jinja."""
    from jinja2.filters import do_capitalize, do_title

    if name == "title":
        return do_title(value) == _HF_WORD_START.sub(lambda match: match.group().upper(), value)
    return do_capitalize(value) == value[:1].upper() + value[1:]


# Filters Jinja2 applies to none (or undefined) as to an empty sequence; hf-jinja raises on both.
_EMPTY_ON_NONE_FILTERS = frozenset({"selectattr", "rejectattr", "select", "reject", "map"})


def _replaces_none(node: nodes.Filter) -> bool:
    """Whether a ``|default(...)`` also replaces a none (its ``boolean`` flag is a true constant)."""
    flags = node.args[1:2] + [keyword.value for keyword in node.kwargs if keyword.key == "boolean"]
    return any(isinstance(flag, nodes.Const) and flag.value for flag in flags)


@_through_logic
def _proves_not_none(test: nodes.Expr, positive: bool, key: str) -> bool:
    """Whether ``test`` holding (``positive``) or failing proves ``key`` is not none in every
    engine: ``_implies``' "not-none", plus ``is iterable``, false for none in Jinja2 and hf-jinja."""
    if _implies(test, positive, key, "not-none"):
        return True
    return isinstance(test, nodes.Test) and positive and test.name == "iterable" and _key(test.node) == key


def _taken_when_none(test: nodes.Expr, positive: bool, key: str) -> bool:
    """Whether ``test`` comes out ``positive`` whenever ``key`` is none: a branch every none
    input takes (``{% if not tools %}``, ``{% if tools is none %}``), so a ``set`` there replaces it."""
    if isinstance(test, nodes.Not):
        return _taken_when_none(test.node, not positive, key)
    if isinstance(test, (nodes.And, nodes.Or)):
        both = isinstance(test, nodes.And) == positive
        sides = (_taken_when_none(test.left, positive, key), _taken_when_none(test.right, positive, key))
        return all(sides) if both else any(sides)
    if _key(test) == key:
        return not positive  # none is falsy
    if isinstance(test, nodes.Test) and _key(test.node) == key and not test.args:
        if test.name in ("none", "defined"):
            return positive
        if test.name in ("undefined", "iterable", "sequence", "mapping", "string", "number", "true"):
            return not positive
        return False
    if isinstance(test, nodes.Compare) and _key(test.expr) == key and len(test.ops) == 1:
        operand = test.ops[0]
        if isinstance(operand.expr, nodes.Const) and operand.expr.value is None and operand.op in ("eq", "ne"):
            return (operand.op == "eq") == positive
    return False


@register
class TestUnsupported(_AstPortabilityRule):
    """A Jinja test is used that some engine does not have.

    Why: minja's ``is`` knows only none, boolean, integer, float, number, string, mapping,
    iterable, sequence, defined, true and false (so ``is undefined`` fails to render), and its
    ``selectattr`` finds only ``equalto``; @huggingface/jinja cannot parse a test with an
    argument (``is divisibleby(2)``, ``is eq 3``) and lacks ``float``, ``in``, ``sameas`` and
    others; minijinja has no ``callable``. Spell it with the common tests or a comparison.

    Bad:
        {% if tools is undefined %}x{% endif %}

    Good:
        {% if tools is not defined %}x{% endif %}
    """

    code = "TK219"
    name = "test-unsupported"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def visit_Test(self, node: nodes.Test) -> None:
        engines = []
        if node.name not in _MINJA_TESTS:
            engines.append("minja")
        if node.name not in _HF_TESTS or node.args or node.kwargs:
            engines.append("hf-jinja")
        if node.name == "callable":
            engines += ["minijinja", "minijinja-js"]
        if engines:
            detail = " (hf-jinja cannot parse a test with an argument)" if node.args and "hf-jinja" in engines else ""
            where = _engines_text(sorted(engines, key=_ALL.index))
            self.flag(node, f"`is {node.name}` is not available in {where}{detail}", engines, needle=node.name)
        self.generic_visit(node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        position = _TEST_FILTERS.get(node.name)
        if position is not None and len(node.args) > position and isinstance(node.args[position], nodes.Const):
            test = node.args[position].value
            engines = []
            if test not in _MINJA_TEST_GLOBALS:
                engines.append("minja")
            if test not in _HF_TESTS and node.name in ("selectattr", "rejectattr"):
                engines.append("hf-jinja")
            if test == "callable":
                engines += ["minijinja", "minijinja-js"]
            if engines:
                self.flag(
                    node,
                    f"`{node.name}(..., '{test}')`: the `{test}` test is not available there in "
                    f"{_engines_text(sorted(engines, key=_ALL.index))}",
                    engines,
                    needle=str(test),
                )
        self.generic_visit(node)


@register
class DictConstructorCall(_TokenRule):
    """A dict is built with ``dict(...)``.

    Why: ``dict`` is a global transformers provides; @huggingface/jinja and minja have no such
    function, so the call is a render error there. A dict literal means the same everywhere.

    Bad:
        {% set part = dict(type='text', text=message.content) %}

    Good:
        {% set part = {'type': 'text', 'text': message.content} %}

    Fix: rewrites ``dict(k=v, ...)`` (keyword arguments only) as ``{'k': v, ...}``.
    """

    code = "TK220"
    name = "dict-constructor-call"
    engines = ("hf-jinja", "minja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            if not (token.type == "name" and token.value == "dict" and _is(_at(tokens, index + 1), "(")):
                continue
            if _is(_at(tokens, index - 1), ".", "|", "is"):
                continue
            close = _closing(tokens, index + 1)
            if close is None:
                continue
            yield self.at(token, "`dict()` is not a function in hf-jinja or minja; use a `{...}` literal", self.engines,
                          fix=self._fix(target, tokens, index, close))

    @staticmethod
    def _fix(target, tokens, index, close) -> Fix | None:
        pairs = []
        for first, end in _arguments(tokens, index + 1, close):
            name = tokens[first]
            if not (name.type == "name" and _is(_at(tokens, first + 1), "=") and end - first >= 3):
                return None  # positional or ** arguments have no literal spelling
            value = target.text[tokens[first + 2].offset : tokens[end - 1].end]
            pairs.append(f"'{name.value}': {value}")
        return Fix("use a dict literal", (Edit(tokens[index].offset, tokens[close].end, "{" + ", ".join(pairs) + "}"),))


_BOOLEAN_MAKERS = ("==", "!=", "<", ">", "<=", ">=", "is", "not", "in", "true", "false", "True", "False")


def _boolean_valued(node: nodes.Node) -> bool:
    if isinstance(node, (nodes.Compare, nodes.Test, nodes.Not)):
        return True
    if isinstance(node, nodes.Const):
        return isinstance(node.value, bool)
    if isinstance(node, (nodes.And, nodes.Or)):
        return _boolean_valued(node.left) and _boolean_valued(node.right)
    return False


@register
class BooleanPrinted(_TokenRule):
    """A comparison or test result is printed directly.

    Why: transformers prints Python's ``True``/``False``; @huggingface/jinja and minijinja-js
    print ``true``/``false``, so the prompt text differs. Print the words you mean.

    Bad:
        Thinking: {{ enable_thinking is true }}

    Good:
        Thinking: {{ 'True' if enable_thinking is true else 'False' }}

    Fix: rewrites ``{{ cond }}`` as ``{{ 'True' if cond else 'False' }}``, what transformers
    printed.
    """

    code = "TK221"
    name = "boolean-printed"
    engines = ("minijinja-js", "hf-jinja")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            if token.type != "variable_begin":
                continue
            end = index + 1
            while end < len(tokens) and tokens[end].type != "variable_end":
                end += 1
            if end >= len(tokens) or end == index + 1:
                continue
            # Only a comparison, test, negation or boolean literal can make a boolean; skip the
            # (much more common) plain tags without parsing them again.
            if not any(_is(token, *_BOOLEAN_MAKERS) for token in tokens[index + 1 : end]):
                continue
            start, stop = tokens[index + 1].offset, tokens[end - 1].end
            expression = _parse_expression(target.text[start:stop])
            if expression is None or not _boolean_valued(expression):
                continue
            inner = target.text[start:stop]
            yield self.at(
                tokens[index + 1],
                "a boolean is printed: transformers prints True/False, hf-jinja and minijinja-js print true/false",
                self.engines,
                fix=Fix("print the words explicitly", (Edit(start, stop, f"'True' if {inner} else 'False'"),)),
            )


@register
class NonStringDictKey(_AstPortabilityRule):
    """A dict literal has a key that is not a string.

    Why: @huggingface/jinja only has string-keyed objects and rejects ``{1: 'a'}`` ("Object keys
    must be strings"; ByteDance Seed-OSS). Use string keys and look them up with ``|string``.

    Bad:
        {% set budget = {0: 'none', 1024: 'low'} %}

    Good:
        {% set budget = {'0': 'none', '1024': 'low'} %}
    """

    code = "TK222"
    name = "non-string-dict-key"
    engines = ("hf-jinja",)
    severity = "warning"

    def visit_Dict(self, node: nodes.Dict) -> None:
        for pair in node.items:
            if isinstance(pair.key, nodes.Const) and not isinstance(pair.key.value, str):
                self.flag(
                    pair,
                    f"dict key {pair.key.value!r} is not a string: hf-jinja rejects it",
                    self.engines,
                    needle=repr(pair.key.value),
                )
        self.generic_visit(node)


@register
class SetTupleUnpacking(_AstPortabilityRule):
    """One ``{% set %}`` assigns several names at once (``{% set a, b = x, y %}``).

    Why: minijinja-js cannot parse a tuple target in ``set`` ("expected assignment operator"),
    so the whole template fails to load there (ServiceNow Apriel); loops may still unpack
    (``{% for k, v in ... %}``). One ``set`` per name works everywhere.

    Bad:
        {% set tools_text, add_tool_id = '', true %}

    Good:
        {% set tools_text = '' %}{% set add_tool_id = true %}
    """

    code = "TK223"
    name = "set-tuple-unpacking"
    engines = ("minijinja-js",)
    severity = "warning"

    def visit_Assign(self, node: nodes.Assign) -> None:
        if isinstance(node.target, nodes.Tuple):
            message = "`{% set a, b = ... %}` is a syntax error in minijinja-js; use one set per name"
            self.flag(node, message, self.engines, needle="set")
        self.generic_visit(node)


# Fields transformers documents as dicts (a tool call's arguments, a schema's parameters).
_MAPPING_FIELDS = frozenset({"arguments", "parameters", "properties"})


@register
class IterableTestOnMapping(_FactWalker, _AstPortabilityRule):
    """``x is iterable`` is tested on a value that is a dict.

    Why: in Jinja2 a dict is iterable (over its keys); @huggingface/jinja's ``iterable`` test is
    true only for arrays and strings. ``tool_call.arguments is iterable and tool_call.arguments is
    mapping`` is therefore true in transformers and false in @huggingface/jinja, which takes
    another branch and renders a different tool call (typhoon2.1-gemma3). Test ``is mapping``
    alone for dicts.

    Bad:
        {% if tool_call.arguments is iterable and tool_call.arguments is mapping %}x{% endif %}

    Good:
        {% if tool_call.arguments is mapping %}x{% endif %}
    """

    code = "TK224"
    name = "iterable-test-on-mapping"
    engines = ("hf-jinja",)
    severity = "warning"

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)
        self.conjuncts: list[nodes.Expr] = []

    def visit_And(self, node: nodes.And) -> None:
        # Remember the whole `a and b and c` chain: a mapping test may come after the iterable one.
        outer = not self.conjuncts
        if outer:
            self.conjuncts = _and_chain(node)
        try:
            super().visit_And(node)
        finally:
            if outer:
                self.conjuncts = []

    def visit_Test(self, node: nodes.Test) -> None:
        key = _key(node.node)
        if node.name == "iterable" and key is not None and self._may_be_mapping(key):
            self.flag(
                node,
                f"`{key} is iterable` is true for a dict in transformers but false in hf-jinja (only arrays and "
                f"strings); test `is mapping` for dicts",
                self.engines,
                needle="iterable",
            )
        self.generic_visit(node)

    def _may_be_mapping(self, key: str) -> bool:
        tests = [(test, True) for test in self.conjuncts] + list(self.facts)
        if any(_tests_mapping(test, positive, key) is False for test, positive in tests):
            return False  # `... and x is not mapping`: a dict never reaches this test's verdict
        if any(_tests_mapping(test, positive, key) for test, positive in tests):
            return True
        return "." in key and key.rsplit(".", 1)[-1] in _MAPPING_FIELDS


def _and_chain(node: nodes.Expr) -> list[nodes.Expr]:
    if isinstance(node, nodes.And):
        return _and_chain(node.left) + _and_chain(node.right)
    return [node]


def _tests_mapping(test: nodes.Expr, positive: bool, key: str) -> bool | None:
    """True if ``test`` (holding when ``positive``) says ``key is mapping``, False if it says it
    is not, None if it says neither."""
    if isinstance(test, nodes.Not):
        return _tests_mapping(test.node, not positive, key)
    if isinstance(test, nodes.Test) and test.name == "mapping" and _key(test.node) == key:
        return positive
    return None


# ---------------------------------------------------------------------------------------------
# TK225-TK227: tojson escaping and values that are absent or strings


# Filters whose result is a number or a boolean, never text, so its JSON has no character to escape.
_NUMBER_FILTERS = frozenset({"length", "count", "int", "float", "abs", "round", "wordcount", "sum", "min", "max"})
_HTML_SPECIAL = frozenset("<>&'")


def _never_text(node: nodes.Expr) -> bool:
    """Whether ``node`` certainly holds a number, boolean or none (or text without ``<>&'``)."""
    if isinstance(node, nodes.Const):
        return not isinstance(node.value, str) or not (_HTML_SPECIAL & set(node.value))
    if isinstance(node, (nodes.Compare, nodes.Test, nodes.Not)):
        return True
    if isinstance(node, nodes.Filter):
        return node.name in _NUMBER_FILTERS
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "loop":
        return node.attr in ("index", "index0", "revindex", "revindex0", "length", "first", "last", "depth", "depth0")
    if isinstance(node, (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Neg)):
        return all(_never_text(child) for child in node.iter_child_nodes())
    return False


@register
class TojsonHtmlEscaping(_AstPortabilityRule):
    """``|tojson`` prints data that may hold ``<``, ``>``, ``&`` or ``'``.

    Why: transformers' ``tojson`` is ``json.dumps``, which keeps those characters as they are.
    minijinja's ``tojson`` (the one TGI, mistral.rs and minijinja-py use, and minijinja-js's)
    makes its output safe inside HTML by escaping them: ``it's`` becomes ``it\\u0027s`` and
    ``a < b & c`` becomes ``a \\u003c b \\u0026 c``. Tool descriptions, tool-call arguments and
    message text are full of apostrophes, so the model sees differently spelled JSON in those
    servers than it was trained on. No ``tojson`` spelling avoids it; where the value is a plain
    name or a number, print it without ``tojson``, and otherwise know that these runtimes differ.

    Bad:
        {{ tools|tojson }}

    Good:
        "name": "{{ tool.function.name }}", "count": {{ tools|length|tojson }}
    """

    code = "TK225"
    name = "tojson-html-escaping"
    engines = ("minijinja", "minijinja-js")
    severity = "warning"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        self._per_line: dict[int, int] = {}
        return super().check(target)

    def visit_Filter(self, node: nodes.Filter) -> None:
        if node.name == "tojson":
            # Every tojson on the line counts, flagged or not, so the n-th filter gets the n-th column.
            line = node.lineno
            index = self._per_line.get(line, 0)
            self._per_line[line] = index + 1
            if node.node is not None and not _never_text(node.node):
                columns = [token.column for position, token in enumerate(_code(self.target))
                           if token.line == line and token.value == "tojson"
                           and _is(_at(_code(self.target), position - 1), "|")]
                column = columns[min(index, len(columns) - 1)] if columns else self.target.column_of(line, "tojson")
                self.found.append(_finding(
                    self, line, column,
                    "minijinja's `tojson` escapes < > & ' as \\u003c \\u003e \\u0026 \\u0027 (transformers keeps "
                    "them): text with any of them renders differently in minijinja and minijinja-js",
                    self.engines,
                ))
        self.generic_visit(node)


_GUARD_HINT = "test the field first or add `|default(...)`"
# Filters @huggingface/jinja applies to an undefined value without raising.
_UNDEFINED_SAFE_FILTERS = frozenset({"default", "d", "safe", "tojson"})
# Filters that need a list: @huggingface/jinja has none of them for strings.
_LIST_ONLY_FILTERS = frozenset({"selectattr", "rejectattr", "map", "list", "first", "last", "reverse", "sort", "unique"})


@_through_logic
def _proves_defined(test: nodes.Expr, positive: bool, key: str) -> bool:
    """Whether ``test`` holding (``positive``) or failing proves that ``key`` is defined."""
    if isinstance(test, nodes.Test) and _fact_key(test.node) == key:
        if test.name == "undefined":
            return not positive
        if test.name == "none" and _get_field(test.node) is not None:
            # `m.get('f')` is None for a missing key in every engine, so `is not none` proves it is
            # there; `m.f is not none` does not (an undefined value is not none in hf-jinja either).
            return not positive
        # `is defined` and the type tests but `none` hold only for a defined value in hf-jinja
        # (where an undefined value is neither iterable nor a sequence, unlike in Jinja2).
        return positive and test.name in (
            "defined", "string", "mapping", "number", "integer", "float", "boolean", "iterable", "sequence")
    if positive and _fact_key(test) == key:
        return True  # truthy, so defined
    if isinstance(test, nodes.Compare) and _fact_key(test.expr) == key and len(test.ops) == 1:
        operand = test.ops[0]
        if not isinstance(operand.expr, nodes.Const):
            return False
        if operand.expr.value is None:
            # `m.get('f') != none` holding (or `== none` failing) proves the key is there.
            return _get_field(test.expr) is not None and (operand.op == "ne") == positive
        # `key == 'x'`, `key > 0`: only a defined value compares equal to (or above) a constant.
        return positive and operand.op in ("eq", "gt", "gteq", "lt", "lteq")
    return False


@_through_logic
def _has_key(test: nodes.Expr, positive: bool, node: nodes.Node, field: str) -> bool:
    """Whether ``test`` proves the message has ``field``: ``'field' in message`` (or
    ``message.get('field') is not none``) holding."""
    owner = _key(node.node) if isinstance(node, (nodes.Getattr, nodes.Getitem)) else None
    if owner is None:
        return False
    if positive and _get_call(test, owner, field):
        return True  # `message.get('field')` is truthy
    if not isinstance(test, nodes.Compare) or len(test.ops) != 1:
        return False
    operand = test.ops[0]
    if operand.op in ("in", "notin") and isinstance(test.expr, nodes.Const) and test.expr.value == field:
        return _key(operand.expr) == owner and (operand.op == "in") == positive
    return False


def _get_call(node: nodes.Node, owner: str, field: str) -> bool:
    """Whether ``node`` is ``owner.get('field')`` (with or without a default)."""
    return (
        isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "get"
        and _key(node.node.node) == owner and bool(node.args) and isinstance(node.args[0], nodes.Const)
        and node.args[0].value == field
    )


def _names_tool_calls(test: nodes.Expr, owner: str) -> bool:
    """Whether ``test`` says the message has tool calls (``m.tool_calls``, ``'tool_calls' in m``,
    ``m.tool_calls is defined``, ``m.get('tool_calls')``)."""
    key = f"{owner}.tool_calls"
    if _key(test) == key or _get_call(test, owner, "tool_calls"):
        return True
    if isinstance(test, nodes.Test) and _fact_key(test.node) == key and test.name in (
            "defined", "iterable", "sequence"):
        return True
    if isinstance(test, nodes.Not) and isinstance(test.node, nodes.Test) and test.node.name == "none" \
            and _fact_key(test.node.node) == key:
        return True  # `m.tool_calls is not none`: None is dropped, so the calls are there
    if isinstance(test, nodes.Compare) and len(test.ops) == 1:
        operand = test.ops[0]
        if operand.op == "in" and isinstance(test.expr, nodes.Const) and test.expr.value == "tool_calls":
            return _key(operand.expr) == owner
        if _key(test.expr) == key or (isinstance(test.expr, nodes.Filter) and _key(test.expr.node) == key):
            return True  # `m.tool_calls|length > 0`, `m.tool_calls != none`
    return False


def _content_present(facts: list[tuple[nodes.Expr, bool]], owner: str) -> bool:
    """Content is absent only in an assistant turn with tool calls; whether the conditions rule
    that out (the turn has no tool calls, or the branch is the one that handles them)."""
    return any(_no_tool_calls(test, positive, owner) for test, positive in _expand(facts))


def _no_tool_calls(test: nodes.Expr, positive: bool, owner: str) -> bool:
    """Whether ``test`` holding (``positive``) or failing proves the message has no tool calls."""
    if isinstance(test, nodes.Not):
        return _no_tool_calls(test.node, not positive, owner)
    if isinstance(test, nodes.Or) and positive or isinstance(test, nodes.And) and not positive:
        if isinstance(test, nodes.Or):
            # `m.tool_calls is not defined or m.tool_calls is none`: every way it holds says so.
            return _no_tool_calls(test.left, True, owner) and _no_tool_calls(test.right, True, owner)
        # `not (role == 'assistant' and tool_calls)` where the role is known: no tool calls.
        conjuncts = _and_chain(test)
        return any(_names_tool_calls(part, owner) for part in conjuncts) and all(
            _names_tool_calls(part, owner) or _is_assistant_test(part, owner) for part in conjuncts)
    if isinstance(test, nodes.And) and positive or isinstance(test, nodes.Or) and not positive:
        return _no_tool_calls(test.left, positive, owner) or _no_tool_calls(test.right, positive, owner)
    if not positive and _names_tool_calls(test, owner):
        return True
    if positive and isinstance(test, nodes.Test) and test.name in ("none", "undefined") \
            and _fact_key(test.node) == f"{owner}.tool_calls":
        return True  # `m.tool_calls is not none` failed: no tool calls here
    if positive and isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op == "notin" \
            and isinstance(test.expr, nodes.Const) and test.expr.value == "tool_calls":
        return _key(test.ops[0].expr) == owner  # `'tool_calls' not in m`
    return False


def _derived(facts: list[tuple[nodes.Expr, bool]]) -> list[tuple[nodes.Expr, bool]]:
    """The facts an earlier branch's failure adds: in the ``elif`` after ``if role == 'assistant'
    and m.tool_calls is not defined``, with the role still 'assistant', the other conjunct failed,
    so the tool calls are defined."""
    expanded = list(_expand(facts))
    holding = {repr(test) for test, positive in expanded if positive}
    found = []
    for test, positive in expanded:
        if positive or not isinstance(test, nodes.And):
            continue
        conjuncts = _and_chain(test)
        open_ = [part for part in conjuncts if repr(part) not in holding]
        if len(open_) == 1:
            found.append((open_[0], False))
    return found


def _is_assistant_test(test: nodes.Expr, owner: str) -> bool:
    return (
        isinstance(test, nodes.Compare) and _key(test.expr) == f"{owner}.role" and len(test.ops) == 1
        and test.ops[0].op == "eq" and isinstance(test.ops[0].expr, nodes.Const) and test.ops[0].expr.value == "assistant"
    )


@_through_logic
def _other_role(test: nodes.Expr, positive: bool, role_key: str) -> bool:
    """Whether ``test`` proves ``role_key`` is some role other than 'assistant'."""
    if not (isinstance(test, nodes.Compare) and _key(test.expr) == role_key and len(test.ops) == 1):
        return False
    operand = test.ops[0]
    values = _constant_strings(operand.expr)
    if values is None:
        return False
    if operand.op not in ("eq", "in", "ne", "notin"):
        return False
    if (operand.op in ("eq", "in")) == positive:
        return "assistant" not in values  # the role is one of these
    return values == {"assistant"}  # the role is anything but these


# The roles OpenAI-style clients send; a branch for any other role serves the template's own
# protocol (`tool_results`, `tool_response`), whose messages carry whatever fields it defines.
_CLIENT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _custom_role(facts: list[tuple[nodes.Expr, bool]], role_key: str) -> str | None:
    """The role the conditions pin ``role_key`` to when no client sends it (``m.role ==
    'tool_results'``), else None."""
    for test, positive in _expand(facts):
        if not (positive and isinstance(test, nodes.Compare) and _key(test.expr) == role_key and len(test.ops) == 1
                and test.ops[0].op in ("eq", "in")):
            continue
        values = _constant_strings(test.ops[0].expr)
        if values and not values & _CLIENT_ROLES:
            return sorted(values)[0]
    return None


def _role_pinned(facts: list[tuple[nodes.Expr, bool]], role_key: str, role: str) -> bool:
    """Whether the conditions say ``role_key`` is ``role`` (``m.role == 'user'``)."""
    return any(
        positive and isinstance(test, nodes.Compare) and _key(test.expr) == role_key and len(test.ops) == 1
        and test.ops[0].op == "eq" and _constant_strings(test.ops[0].expr) == {role}
        for test, positive in _expand(facts))


def _content_none(facts: list[tuple[nodes.Expr, bool]], owner: str) -> bool:
    """Whether the conditions say the message's content is None (``m.get('content') is none``):
    clients send null content only in an assistant turn that carries tool calls."""
    key = f"{owner}.content"
    for test, positive in _expand(facts):
        if positive and isinstance(test, nodes.Test) and test.name == "none" and _fact_key(test.node) == key:
            return True
        if isinstance(test, nodes.Compare) and len(test.ops) == 1 and _fact_key(test.expr) == key \
                and isinstance(test.ops[0].expr, nodes.Const) and test.ops[0].expr.value is None \
                and (test.ops[0].op == "eq") == positive and test.ops[0].op in ("eq", "ne"):
            return True
    return False


@_through_logic
def _flag_for(test: nodes.Expr, positive: bool, field: str) -> bool:
    """Whether ``test`` holding is a flag named after ``field`` (``is_tool_calls_set``,
    ``ns.has_citations``): the way templates record that they checked a field, often through a
    macro the analysis cannot follow."""
    if not positive:
        return False
    if isinstance(test, nodes.Name):
        name = test.name
    elif isinstance(test, nodes.Getattr) and isinstance(test.node, nodes.Name):
        name = test.attr
    else:
        return False
    words, wanted = name.lower().split("_"), field.lower().split("_")
    return any(words[start:start + len(wanted)] == wanted for start in range(len(words) - len(wanted) + 1))


def _constant_strings(node: nodes.Expr) -> set[str] | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (nodes.List, nodes.Tuple)) and all(
            isinstance(item, nodes.Const) and isinstance(item.value, str) for item in node.items):
        return {item.value for item in node.items}
    return None


@dataclasses.dataclass(frozen=True)
class _Copy:
    """A name holding a message field: ``{% set content = m.content %}``, or a macro parameter a
    call passes the field to. ``facts`` are the conditions where the copy was made, so a use can
    be judged with what was known about the message there (``m.role == 'tool'``)."""

    field: str
    source: nodes.Node  # the field read copied (``m.content``)
    facts: tuple
    via: tuple = ()  # the names it was copied through, whose tests guard it as well


class _MessageFieldWalker(_FactWalker, _AstPortabilityRule):
    """Tracks which names hold a message (``for m in messages``, ``messages[0]``) and which are
    copies of a message field (``{% set content = m.content %}``, a macro parameter called with
    ``m.content``), so rules can tell a message field from any other attribute access.

    Macro bodies are walked after the rest of the template, once every call to them is known.
    """

    def __init__(self, options=None) -> None:
        _AstPortabilityRule.__init__(self, options)
        _FactWalker.__init__(self)
        self.message_names: list[str] = []
        self.aliases: dict[str, list[_Copy]] = {}

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        # Clients send assistant turns with `tool_calls` and null content to a template that reads
        # the calls; one that only offers tools (and prints calls from the content as text) gets
        # such turns only from a client that ignores how the model writes its calls.
        tree = target.tree
        self.renders_tool_calls = tree is not None and any(
            isinstance(found, nodes.Getattr) and found.attr == "tool_calls"
            or isinstance(found, nodes.Const) and found.value == "tool_calls"
            for found in find_all(target, tree, (nodes.Getattr, nodes.Const)))
        self.offers_tools = tree is not None and any(
            name.name == "tools" and name.ctx == "load" for name in find_all(target, tree, nodes.Name))
        self.loop_targets: list[str | None] = []
        self.schema_names: list[str] = []
        self.document_names: list[str] = []
        self.aliases = {}
        self._ordinals: dict[int, list[nodes.Node]] = {}
        self._macros: dict[str, nodes.Macro] = {}
        self._macro_copies: dict[tuple[str, str], list[_Copy]] = {}
        if target.tree is not None:
            self._macros = {macro.name: macro for macro in find_all(target, target.tree, nodes.Macro)}
        return super().check(target)

    def visit_Template(self, node: nodes.Template) -> None:
        self.generic_visit(node)
        # Callers are usually defined after the macros they call: walking the last one first
        # records its calls before the callee's body is judged.
        for macro in reversed(list(self._macros.values())):
            saved = self.facts, self.message_names, self.aliases
            self.facts, self.message_names = [], []
            self.aliases = {}
            for argument in macro.args:
                copies = self._macro_copies.get((macro.name, argument.name))
                if copies:
                    self.aliases[argument.name] = copies
            try:
                for child in macro.body:
                    self.visit(child)
            finally:
                self.facts, self.message_names, self.aliases = saved

    def visit_Macro(self, node: nodes.Macro) -> None:
        for default in node.defaults:
            self.visit(default)  # the body waits for visit_Template

    def visit_Call(self, node: nodes.Call) -> None:
        if isinstance(node.node, nodes.Name) and node.node.name in self._macros:
            parameters = [argument.name for argument in self._macros[node.node.name].args]
            passed = list(zip(parameters, node.args)) + [(keyword.key, keyword.value) for keyword in node.kwargs]
            for parameter, value in passed:
                copies = self._copies_of(value)
                if copies:
                    self._macro_copies.setdefault((node.node.name, parameter), []).extend(copies)
        self.generic_visit(node)

    def ordinal(self, node: nodes.Node, kind: str) -> int:
        """How many loops (``kind`` "for") or ``|kind`` filters come before ``node`` on its line, in
        tree order (source order for loops and for differently named filters; macro bodies are
        walked last, so the order of visits would not do)."""
        if not self._ordinals:
            for found in find_all(self.target, self.target.tree, (nodes.For, nodes.Filter)):
                self._ordinals.setdefault(found.lineno, []).append(found)
        same = [found for found in self._ordinals.get(node.lineno, [])
                if (isinstance(found, nodes.For) if kind == "for" else
                    isinstance(found, nodes.Filter) and found.name == kind)]
        return next((index for index, found in enumerate(same) if found is node), 0)

    def column(self, line: int, kind: str, index: int) -> int:
        """Column of the ``index``-th loop iterable (``kind`` "for") or ``|kind`` filter on ``line``."""
        tokens = _code(self.target)
        columns = []
        for position, token in enumerate(tokens):
            if token.line != line:
                continue
            if kind == "for" and _is(token, "in"):
                start = position
                while start >= 0 and tokens[start].type != "block_begin":
                    start -= 1
                if start >= 0 and _is(_at(tokens, start + 1), "for") and position + 1 < len(tokens):
                    columns.append(tokens[position + 1].column)
            elif kind != "for" and token.value == kind and _is(_at(tokens, position - 1), "|"):
                columns.append(tokens[position - 1].column)
        return columns[min(index, len(columns) - 1)] if columns else 1

    def flag_at(self, node: nodes.Node, kind: str, index: int, message: str, *,
                severity: Severity | None = None) -> None:
        line = node.lineno
        self.found.append(_finding(self, line, self.column(line, kind, index), message, self.engines,
                                   severity=severity))

    def field_of(self, node: nodes.Node) -> tuple[str, str] | None:
        """(key, field) when ``node`` reads a field of a message (or a copy of one)."""
        if isinstance(node, nodes.Name) and node.name in self.aliases:
            return node.name, self.aliases[node.name][0].field
        if isinstance(node, (nodes.Getattr, nodes.Getitem)):
            field = node.attr if isinstance(node, nodes.Getattr) else (
                node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
            if field is None or not self._is_message(node.node):
                return None
            key = _key(node)
            return (key, field) if key is not None else None
        return None

    def _copies_of(self, node: nodes.Node) -> list[_Copy]:
        """What a name bound to ``node`` holds: the field read itself, or what the copy it reads holds."""
        if isinstance(node, nodes.Name):
            return [dataclasses.replace(copy, facts=copy.facts + tuple(self.facts), via=copy.via + (node.name,))
                    for copy in self.aliases.get(node.name, [])]
        if isinstance(node, nodes.CondExpr):
            copies = []
            for facts, branch in (([(node.test, True)], node.expr1), ([(node.test, False)], node.expr2)):
                if branch is not None:
                    saved = self.facts
                    self.facts = saved + facts
                    try:
                        copies += self._copies_of(branch)
                    finally:
                        self.facts = saved
            return copies
        found = self.field_of(node)
        return [_Copy(found[1], node, tuple(self.facts))] if found is not None else []

    @contextlib.contextmanager
    def copy_facts(self, copy: _Copy) -> Iterator[None]:
        """Judge a copy's source under the conditions where it was made as well as those now."""
        saved = self.facts
        self.facts = list(copy.facts) + saved
        try:
            yield
        finally:
            self.facts = saved

    def _is_message(self, node: nodes.Node) -> bool:
        if isinstance(node, nodes.Name):
            return node.name in self.message_names
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, (nodes.Const, nodes.Neg)):
            return _is_messages(node.node)
        return False

    def visit_For(self, node: nodes.For) -> None:
        self.visit(node.iter)
        names = [node.target.name] if isinstance(node.target, nodes.Name) and _is_messages(node.iter) else []
        documents = [node.target.name] if isinstance(node.target, nodes.Name) and _is_documents(node.iter) else []
        saved, saved_documents, saved_schemas = self.message_names, self.document_names, self.schema_names
        self.message_names = saved + names
        self.document_names = [name for name in saved_documents if name not in names] + documents
        self.schema_names = [name for name in saved_schemas if name not in _target_names(node.target)]
        self.schema_names += _schema_value_name(node)
        self.loop_targets.append(node.target.name if isinstance(node.target, nodes.Name) else None)
        try:
            for child in node.body:
                self.visit(child)
        finally:
            self.message_names, self.document_names, self.schema_names = saved, saved_documents, saved_schemas
            self.loop_targets.pop()
        for child in node.else_:
            self.visit(child)
        if node.test is not None:
            self.visit(node.test)

    def visit_If(self, node: nodes.If) -> None:
        # Each branch starts from the copies made before the `if`; after it, a name holds whatever
        # any branch left in it (`{% if c is string %}{% set t = c %}{% else %}{% set t = '' %}`).
        before = dict(self.aliases)
        outcomes = []
        self.visit(node.test)
        branches = [([(node.test, True)], node.body)]
        previous = [(node.test, False)]
        for branch in node.elif_:
            branches.append((previous, branch.test))
            branches.append((previous + [(branch.test, True)], branch.body))
            previous = previous + [(branch.test, False)]
        branches.append((previous, node.else_))
        for facts, body in branches:
            if isinstance(body, list):
                self.aliases = dict(before)
            self._under(facts, body)
            if isinstance(body, list):
                outcomes.append(self.aliases)
        merged: dict[str, list[_Copy]] = {}
        for outcome in outcomes:
            for name, copies in outcome.items():
                merged.setdefault(name, []).extend(copy for copy in copies if copy not in merged.get(name, []))
        self.aliases = merged

    def visit_Assign(self, node: nodes.Assign) -> None:
        self.visit(node.node)
        if isinstance(node.target, nodes.Name):
            copies = self._copies_of(node.node)
            if copies:
                self.aliases[node.target.name] = copies
            else:
                self.aliases.pop(node.target.name, None)


def _is_documents(node: nodes.Node) -> bool:
    """Whether ``node`` is the ``documents`` list (or a slice or filter of it)."""
    while isinstance(node, (nodes.Filter, nodes.Getitem)) and node.node is not None:
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Slice):
            return False
        node = node.node
    return isinstance(node, nodes.Name) and node.name == "documents"


# The fields transformers' documentation gives a document; any other one is the template's wish.
_DOCUMENT_FIELDS = frozenset({"title", "text"})
# The one field every parameter schema of a tool has; `description`, `enum`, `default`, ... are
# optional in JSON Schema, and clients generate parameters without them.
_SCHEMA_FIELDS = frozenset({"type"})


def _schema_value_name(loop: nodes.For) -> list[str]:
    """The name bound to each parameter's schema by ``for name, schema in ....properties|items``
    (or ``.items()``, ``|dictsort``), empty for any other loop."""
    if not (isinstance(loop.target, nodes.Tuple) and len(loop.target.items) == 2
            and all(isinstance(item, nodes.Name) for item in loop.target.items)):
        return []
    mapping = loop.iter
    if isinstance(mapping, nodes.Filter) and mapping.name in ("items", "dictsort"):
        mapping = mapping.node
    elif isinstance(mapping, nodes.Call) and isinstance(mapping.node, nodes.Getattr) and mapping.node.attr == "items" \
            and not mapping.args:
        mapping = mapping.node.node
    else:
        return []
    key = _key(mapping) if mapping is not None else None
    return [loop.target.items[1].name] if key is not None and key.endswith(".properties") else []


def _is_messages(node: nodes.Node) -> bool:
    """Whether ``node`` is the message list (``messages``, ``loop_messages``, a slice or filter of it)."""
    while isinstance(node, (nodes.Filter, nodes.Getitem)) and node.node is not None:
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Slice):
            return False
        node = node.node
    return isinstance(node, nodes.Name) and node.name.endswith("messages")


@register
class AbsentFieldUsed(_MessageFieldWalker):
    """A message field that may be absent is looped over, filtered or joined with ``~`` unguarded.

    Why: transformers drops the keys whose value is None (an assistant tool-call turn's
    ``content: null``) and leaves optional fields (``tool_calls``, ``reasoning_content``, ...)
    undefined, and Jinja2 treats an undefined value as empty: ``for x in m.content`` loops zero
    times, ``m.tool_calls|length`` is 0, ``m.content|trim`` is ''. @huggingface/jinja raises
    instead ("Expected iterable or object type in for loop: got UndefinedValue", "Cannot apply
    filter ... to type: UndefinedValue", "Cannot perform operation ~ on undefined values"), so
    the prompt cannot be built in transformers.js. Copies of a field (``{% set c = m.content %}``,
    a macro argument) are followed and judged with what was known where they were made; a branch
    that needs a field to be none is never reached (transformers drops None-valued keys), and a
    flag named after the field (``is_tool_calls_set``) counts as its test. Content is absent only
    in a tool-call turn: not in the first message, a turn of another role or one without tool
    calls; in a template that offers ``tools`` but never reads ``tool_calls`` (it takes the calls
    as text) only a client sending structured calls anyway gets there, and under a role no client
    sends (``m.role == 'tool_results'``) the template's own protocol fills the fields: both are
    info. The same holds for a document's fields beyond the documented ``title`` and ``text``
    (``doc['doc_id']|string``) and a tool parameter's schema fields beyond ``type``
    (``param.description|trim`` in ``for name, param in ....properties|items``): clients often
    send neither. Test the field first (``{% if m.content %}``, ``m.get('content') is not none``)
    or give it a default.

    Bad:
        {% for m in messages %}{{ m.tool_calls|length }}{% endfor %}

    Good:
        {% for m in messages %}{{ m.tool_calls|default([])|length }}{% endfor %}
    """

    code = "TK226"
    name = "absent-field-used"
    engines = ("hf-jinja",)
    severity = "warning"

    def _optional(self, node: nodes.Node) -> str | None:
        """The key of a field read that may be undefined here, else None; ``reached_only_by`` then
        names the unusual input that alone leaves it undefined (None: ordinary input does)."""
        self.reached_only_by: str | None = None
        found = self.field_of(node)
        if found is None:
            return self._optional_item_field(node)
        return self._may_be_absent(node, *found)

    def _optional_item_field(self, node: nodes.Node) -> str | None:
        """A document field beyond title and text (``doc['doc_id']``) or a tool parameter's schema
        field beyond ``type`` (``schema.description``): retrieval pipelines send documents with
        only the documented fields, and clients generate parameters without descriptions, so it
        is undefined unless tested."""
        if not isinstance(node, (nodes.Getattr, nodes.Getitem)) or not isinstance(node.node, nodes.Name):
            return None
        if node.node.name in self.document_names:
            known = _DOCUMENT_FIELDS
        elif node.node.name in self.schema_names:
            known = _SCHEMA_FIELDS
        else:
            return None
        field = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        key = _key(node)
        if field is None or field in known or key is None:
            return None
        if any(_proves_defined(test, positive, key) or _has_key(test, positive, node, field)
               or _flag_for(test, positive, field) for test, positive in self.facts + _derived(self.facts)):
            return None
        return key

    def _may_be_absent(self, node: nodes.Node, key: str, field: str) -> str | None:
        if field == "role":
            return None
        facts = self.facts + _derived(self.facts)
        if any(_proves_defined(test, positive, key) or _has_key(test, positive, node, field)
               or _flag_for(test, positive, field) for test, positive in facts):
            return None
        if isinstance(node, nodes.Name):
            # A copy: absent only if the field it copies may be, judged where the copy was made.
            unusual = None
            for copy in self.aliases[node.name]:
                with self.copy_facts(copy):
                    guards = self.facts + _derived(self.facts)
                    if any(_proves_defined(test, positive, name) for name in copy.via for test, positive in guards):
                        continue
                    self.reached_only_by = None
                    if self._may_be_absent(copy.source, _key(copy.source), copy.field) is not None:
                        if self.reached_only_by is None:
                            return key
                        unusual = self.reached_only_by
            self.reached_only_by = unusual
            return key if unusual is not None else None
        if self._never_reached():
            return None
        owner = _key(node.node)
        if field == "tool_calls" and owner is not None and _content_none(facts, owner):
            return None  # null content in an assistant turn: the turn carries tool calls
        if field == "content" and not self._content_may_be_absent(node):
            return None
        role = _custom_role(facts, f"{owner}.role") if owner is not None else None
        if role is not None and self.reached_only_by is None:
            self.reached_only_by = (f"a message with the role '{role}', which the template defines itself and "
                                    f"OpenAI-style clients do not send")
        return key

    def _never_reached(self) -> bool:
        """Whether the branch needs a message field to be None: transformers drops None-valued
        keys, and an absent field is not none in hf-jinja either, so no conversation gets here."""
        for test, positive in _expand(self.facts):
            if not positive:
                continue
            if isinstance(test, nodes.Test) and test.name == "none" and isinstance(
                    test.node, (nodes.Getattr, nodes.Getitem)) and self.field_of(test.node) is not None:
                return True
            if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op == "eq" \
                    and isinstance(test.ops[0].expr, nodes.Const) and test.ops[0].expr.value is None \
                    and isinstance(test.expr, (nodes.Getattr, nodes.Getitem)) and self.field_of(test.expr) is not None:
                return True
        return False

    def _content_may_be_absent(self, node: nodes.Node) -> bool:
        """Content is absent only in an assistant's tool-call turn: never in a template that offers
        no tools, in the first message, or where the role is known to be another one; in a
        template that offers tools but never reads ``tool_calls`` only unusual input gets here."""
        if not (self.renders_tool_calls or self.offers_tools):
            return False
        message = node.node
        if isinstance(message, nodes.Getitem) and isinstance(message.arg, nodes.Const) and message.arg.value == 0:
            return False
        owner = _key(message)
        if owner is not None:
            facts = self.facts + _derived(self.facts)
            if _content_present(facts, owner) or self._first_message(facts, owner):
                return False
            if any(_other_role(test, positive, f"{owner}.role") for test, positive in facts):
                return False
        if not self.renders_tool_calls:
            self.reached_only_by = ("an assistant turn with structured tool calls and null content, which this "
                                    "template never reads (it takes the model's calls as text in the content)")
        return True

    def _first_message(self, facts: list[tuple[nodes.Expr, bool]], owner: str) -> bool:
        """Whether the conditions say ``owner`` is the first message of the loop over messages
        (``loop.first``, ``loop.index0 == 0``): never an assistant's tool-call turn."""
        if not self.loop_targets or self.loop_targets[-1] != owner:
            return False  # `loop` here is not the loop over the messages
        for test, positive in _expand(facts):
            if positive and _key(test) == "loop.first":
                return True
            if positive and isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op == "eq" \
                    and isinstance(test.ops[0].expr, nodes.Const) \
                    and (_key(test.expr), test.ops[0].expr.value) in (("loop.index0", 0), ("loop.index", 1)):
                return True
        return False

    def _report(self, message: str) -> tuple[str, Severity | None]:
        """The message and severity of a finding: info when only unusual input reaches it."""
        if self.reached_only_by is None:
            return message, None
        return f"{message}; reached only by {self.reached_only_by}", "info"

    def visit_For(self, node: nodes.For) -> None:
        index = self.ordinal(node, "for")
        key = self._optional(node.iter)
        if key is not None:
            message, severity = self._report(f"`for ... in {key}`: hf-jinja cannot loop over an undefined value "
                                             f"(transformers loops zero times); {_GUARD_HINT}")
            self.flag_at(node, "for", index, message, severity=severity)
        super().visit_For(node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        index = self.ordinal(node, node.name)
        if node.name not in _UNDEFINED_SAFE_FILTERS and node.node is not None:
            key = self._optional(node.node)
            if key is not None:
                message, severity = self._report(f"`{key}|{node.name}` raises in hf-jinja when the field is absent "
                                                 f"(transformers treats it as empty); {_GUARD_HINT}")
                self.flag_at(node, node.name, index, message, severity=severity)
        self.generic_visit(node)

    def visit_Concat(self, node: nodes.Concat) -> None:
        for child in node.nodes:
            key = self._optional(child)
            if key is not None:
                message, severity = self._report(f"`~ {key}` raises in hf-jinja when the field is absent "
                                                 f"(transformers joins an empty string); {_GUARD_HINT}")
                self.flag(child, message, self.engines, needle="~", severity=severity)
        self.generic_visit(node)


@register
class StringContentIterated(_MessageFieldWalker):
    """Message content is looped over (or list-filtered) without testing whether it is a string.

    Why: content is a string in most conversations and a list of parts only in multimodal ones.
    Jinja2 loops over a string's characters (so ``for part in m.content`` silently yields
    nothing useful) and applies ``selectattr``, ``map``, ``list`` or ``first`` to a string;
    @huggingface/jinja raises ("Expected iterable or object type in for loop: got
    StringValue", "Unknown StringValue filter"). Branch on ``m.content is string`` first. It is
    info under a role no client sends (``m.role == 'tool_response'``), and in a template that joins
    ``m.content[0]``'s fields with ``+`` in the user's turn: string content fails in transformers
    there too, so the template takes content parts only.

    Bad:
        {% for m in messages %}{% for part in m.content %}{{ part.text }}{% endfor %}{% endfor %}

    Good:
        {% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}
        {% for part in m.content %}{{ part.text }}{% endfor %}{% endif %}{% endfor %}
    """

    code = "TK227"
    name = "string-content-iterated"
    engines = ("hf-jinja",)
    severity = "warning"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        self.parts_only_at: int | None = None
        found = list(super().check(target))
        if self.parts_only_at is None:
            return found
        # String content already fails in transformers here, so no client of the model sends it.
        note = (f"; reached only by plain-string content, which this template does not take (line "
                f"{self.parts_only_at} joins `content[0]`'s fields with `+`, an error for a string in transformers "
                f"too)")
        return [dataclasses.replace(finding, severity="info", message=finding.message + note) for finding in found]

    def _content(self, node: nodes.Node) -> str | None:
        self.reached_only_by: str | None = None
        found = self.field_of(node)
        if found is None or found[1] != "content":
            return None
        key = found[0]
        if self.type_tested(key):
            return None
        if isinstance(node, nodes.Name):
            for copy in self.aliases[node.name]:
                source_key = _key(copy.source)
                with self.copy_facts(copy):
                    if not self.type_tested(source_key):
                        self._note_custom_role(copy.source)
                        return key
            return None
        self._note_custom_role(node)
        return key

    def _note_custom_role(self, node: nodes.Node) -> None:
        """Under a role no client sends (``m.role == 'tool_response'``) the template defines the
        content itself: a string there is not ordinary input."""
        owner = _key(node.node) if isinstance(node, (nodes.Getattr, nodes.Getitem)) else None
        role = _custom_role(self.facts + _derived(self.facts), f"{owner}.role") if owner is not None else None
        if role is not None:
            self.reached_only_by = (f"a message with the role '{role}', which the template defines itself and "
                                    f"OpenAI-style clients do not send")

    def _flag_content(self, node: nodes.Node, kind: str, index: int, message: str) -> None:
        if self.reached_only_by is None:
            self.flag_at(node, kind, index, message)
        else:
            self.flag_at(node, kind, index, f"{message}; reached only by {self.reached_only_by}", severity="info")

    def visit_For(self, node: nodes.For) -> None:
        index = self.ordinal(node, "for")
        key = self._content(node.iter)
        if key is not None:
            self._flag_content(node, "for", index, f"`for ... in {key}` without an `is string` test: transformers "
                                                   f"loops over a string's characters, hf-jinja raises")
        super().visit_For(node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        index = self.ordinal(node, node.name)
        if node.name in _LIST_ONLY_FILTERS and node.node is not None:
            key = self._content(node.node)
            if key is not None:
                self._flag_content(node, node.name, index, f"`{key}|{node.name}` without an `is string` test: "
                                                           f"hf-jinja has no `{node.name}` filter for strings")
        self.generic_visit(node)

    def visit_Add(self, node: nodes.Add) -> None:
        # `'...' + m.content[0]['text']` for the user's turn: for a string, `content[0]` is its
        # first character, whose missing field makes `+` raise in transformers, so no conversation
        # with string content renders and the template takes content parts only.
        for operand in (node.left, node.right):
            if isinstance(operand, (nodes.Getattr, nodes.Getitem)) and isinstance(operand.node, nodes.Getitem) \
                    and isinstance(operand.node.arg, nodes.Const) and isinstance(operand.node.arg.value, int) \
                    and isinstance(operand.node.node, (nodes.Getattr, nodes.Getitem)):
                found = self.field_of(operand.node.node)
                owner = _key(operand.node.node.node)
                if found is not None and found[1] == "content" and not self.type_tested(found[0]) \
                        and self.parts_only_at is None and owner is not None \
                        and _role_pinned(self.facts + _derived(self.facts), f"{owner}.role", "user"):
                    self.parts_only_at = operand.lineno
        self.generic_visit(node)


@register
class RawBlock(_TokenRule):
    """A ``{% raw %}`` block prints template syntax literally.

    Why: Jinja2 and minijinja print the text between ``{% raw %}`` and ``{% endraw %}`` as it
    is; @huggingface/jinja has no ``raw`` statement and rejects the whole template ("Unknown
    statement type: raw"), so transformers.js cannot build any prompt with it. Print the literal
    braces from a string expression instead (``{{ '{{' }}``, ``{{ '{%' }}``).

    Bad:
        {% raw %}Use {{ name }} in your reply.{% endraw %}

    Good:
        Use {{ '{{' }} name {{ '}}' }} in your reply.
    """

    code = "TK228"
    name = "raw-block"
    engines = ("hf-jinja",)
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        # The lexer folds a raw block into raw_begin/data/raw_end, which _code drops as layout.
        for token in target.tokens:
            if token.type == "raw_begin":
                yield self.at(token, "`{% raw %}` is a syntax error in hf-jinja (unknown statement type); print "
                                     "the literal braces from a string (`{{ '{{' }}`) instead", self.engines)


class _RawContentStrips(_MessageFieldWalker):
    """Finds ``.strip``/``.lstrip`` calls whose receiver may be a message's content as written:
    the field or a copy of it, possibly through ``.split(sep)[0|-1]`` where ``sep`` may be absent
    (then the split leaves the whole text). Calls under a condition on the loop position against a
    computed index (``loop.index0 > ns.last_query_index``: only the turns after the last user
    query) are left out: ordinary conversations do not reach them. Not a rule; TK203 asks it."""

    code = "TK203"
    name = "strip-characters-argument"
    engines = ("hf-jinja",)

    def strips(self, target: LintTarget) -> set[tuple[int, str]]:
        self._strips: set[tuple[int, str]] = set()
        self.check(target)
        return self._strips

    def visit_Call(self, node: nodes.Call) -> None:
        callee = node.node
        if isinstance(callee, nodes.Getattr) and callee.attr in ("strip", "lstrip") and len(node.args) == 1 \
                and self._raw(callee.node) and not self._narrow():
            self._strips.add((node.lineno, callee.attr))
        super().visit_Call(node)

    def _copies_of(self, node: nodes.Node) -> list[_Copy]:
        # `{% set content = text_of(m.content) %}`: a macro of the template's own given the content
        # gives back its text (or the text of its parts), as written.
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name in self._macros:
            for argument in node.args:
                found = self.field_of(argument)
                if found is not None and found[1] == "content":
                    return [_Copy("content", argument, tuple(self.facts))]
        return super()._copies_of(node)

    def _raw(self, node: nodes.Node) -> bool:
        found = self.field_of(node)
        if found is not None:
            return found[1] == "content"
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) \
                and node.node.attr in ("strip", "lstrip", "rstrip") and len(node.args) <= 1:
            return self._raw(node.node.node) if node.args else False
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, (nodes.Const, nodes.Neg)) \
                and isinstance(node.node, nodes.Call) and isinstance(node.node.node, nodes.Getattr) \
                and node.node.node.attr == "split" and len(node.node.args) == 1:
            text, separator = node.node.node.node, node.node.args[0]
            return self._raw(text) and not self._contains(text, separator)
        return False

    def _contains(self, text: nodes.Node, separator: nodes.Node) -> bool:
        """Whether the conditions say ``separator in text`` (so the split cuts at it)."""
        for test, positive in _expand(self.facts):
            if positive and isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op == "in" \
                    and _same_text(test.expr, separator) and repr(test.ops[0].expr) == repr(text):
                return True
        return False

    def _narrow(self) -> bool:
        for test, _positive in self.facts:
            for compare in [test] if isinstance(test, nodes.Compare) else list(test.find_all(nodes.Compare)):
                sides = [compare.expr] + [operand.expr for operand in compare.ops]
                position = any(_key(side) in ("loop.index", "loop.index0") for side in sides)
                computed = any(not isinstance(side, nodes.Const) and _key(side) not in ("loop.index", "loop.index0")
                               for side in sides)
                if position and computed and not (compare is test and _before_index(compare, _positive)):
                    return True
        return False


def _same_text(left: nodes.Node, right: nodes.Node) -> bool:
    """Whether two expressions are the same, reading ``'x'.strip()`` of a constant as its value."""
    def value(node: nodes.Node):
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "strip" \
                and not node.args and isinstance(node.node.node, nodes.Const) and isinstance(node.node.node.value, str):
            return node.node.node.value.strip()
        return node.value if isinstance(node, nodes.Const) else repr(node)
    return value(left) == value(right)


# ---------------------------------------------------------------------------------------------
# JSON Schema parts of tool definitions, followed through the template (TK201, TK210, TK218)

# What an expression may hold: a `properties` mapping (parameter name -> property schema), one
# property schema, or the value of a schema keyword that is a list or a mapping.
_PROPERTIES, _SCHEMA, _KEYWORD_VALUE = "properties", "schema", "keyword-value"
# Schema keywords whose value is a list or a mapping in ordinary tool definitions.
_CONTAINER_KEYWORDS = frozenset({"enum", "required", "items", "properties", "anyOf", "oneOf", "allOf", "examples",
                                 "prefixItems"})
# Attribute names that are dict methods in Jinja2 (the method wins over a key of that name there).
_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})
def _schema_flow(target: LintTarget) -> "_SchemaFlow":
    """The target's ``_SchemaFlow``, computed once per target (several rules ask)."""
    # Every schema part is reached through a literal `properties` key (``_SchemaFlow._member``):
    # a template without the word has none, and most templates are spared the walk.
    return target.shared("portability:schema-flow",
                         lambda target: _SchemaFlow(target.tree if "properties" in target.text else None))


def _items_of(node: nodes.Node) -> nodes.Node | None:
    """``x`` of ``x.items()``, ``x|items`` or ``x|dictsort`` (pairs of a mapping), else None."""
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "items" \
            and not node.args and not node.kwargs:
        return node.node.node
    if isinstance(node, nodes.Filter) and node.name in ("items", "dictsort") and node.node is not None:
        return node.node
    return None


class _SchemaFlow:
    """Which expressions hold parts of a tool's JSON Schema, followed through ``set``, loop
    targets and macro arguments (a recursive schema printer passes property schemas to itself).

    ``kinds`` maps ``id(expression)`` to ``_PROPERTIES``, ``_SCHEMA`` or ``_KEYWORD_VALUE``;
    ``schema_items_calls`` are the ``.items()`` calls made on a property schema. Names are tracked
    by scope (a loop's or macro's body sees its own bindings), conditions are ignored.
    """

    def __init__(self, tree: nodes.Template | None) -> None:
        self.kinds: dict[int, str] = {}
        self.schema_items_calls: list[nodes.Call] = []
        self._macros: dict[str, nodes.Macro] = {}
        self._schema_params: dict[str, set[str]] = {}
        if tree is None:
            return
        self._macros = {macro.name: macro for macro in tree.find_all(nodes.Macro)}
        try:
            # A macro learns that a parameter holds a schema from a call that may come after its
            # body (or inside it): walk again until no parameter is added.
            for _ in range(4):
                before = {name: set(params) for name, params in self._schema_params.items()}
                self.kinds, self.schema_items_calls = {}, []
                scope: dict[str, str] = {}
                for child in tree.body:
                    self._walk(child, scope)
                if before == self._schema_params:
                    break
        except RecursionError:  # a hostile nesting depth: no finding is better than a crash
            self.kinds, self.schema_items_calls = {}, []

    def kind(self, node: nodes.Node) -> str | None:
        return self.kinds.get(id(node))

    def _walk(self, node: nodes.Node, scope: dict[str, str]) -> None:
        if isinstance(node, nodes.For):
            self._walk(node.iter, scope)
            inner = dict(scope)
            for name in _bound_names(node.target):
                inner.pop(name, None)
            mapping = _items_of(node.iter)
            if mapping is not None and isinstance(node.target, nodes.Tuple) and len(node.target.items) == 2 \
                    and isinstance(node.target.items[1], nodes.Name):
                value_kind = {_PROPERTIES: _SCHEMA, _SCHEMA: _KEYWORD_VALUE}.get(self._kind(mapping, scope))
                if value_kind is not None and not _restricted_keys(node.test, node.target.items[0]):
                    inner[node.target.items[1].name] = value_kind
            for child in node.body:
                self._walk(child, inner)
            if node.test is not None:
                self._walk(node.test, inner)
            for child in node.else_:
                self._walk(child, scope)
            return
        if isinstance(node, nodes.Macro):
            inner = {name: kind for name, kind in scope.items() if name not in {arg.name for arg in node.args}}
            for name in self._schema_params.get(node.name, ()):
                inner[name] = _SCHEMA
            for default in node.defaults:
                self._walk(default, scope)
            for child in node.body:
                self._walk(child, inner)
            return
        if isinstance(node, nodes.Assign):
            self._walk(node.node, scope)
            if isinstance(node.target, nodes.Name):
                found = self._kind(node.node, scope)
                if found is None:
                    scope.pop(node.target.name, None)
                else:
                    scope[node.target.name] = found
            return
        if isinstance(node, nodes.AssignBlock) and isinstance(node.target, nodes.Name):
            scope.pop(node.target.name, None)
        if isinstance(node, nodes.Call):
            self._note_macro_call(node, scope)
            callee = node.node
            if isinstance(callee, nodes.Getattr) and callee.attr == "items" and not node.args and not node.kwargs \
                    and self._kind(callee.node, scope) == _SCHEMA:
                self.schema_items_calls.append(node)
        if isinstance(node, nodes.Expr):
            found = self._kind(node, scope)
            if found is not None:
                self.kinds[id(node)] = found
        for child in node.iter_child_nodes():
            self._walk(child, scope)

    def _note_macro_call(self, node: nodes.Call, scope: dict[str, str]) -> None:
        if not (isinstance(node.node, nodes.Name) and node.node.name in self._macros):
            return
        macro = self._macros[node.node.name]
        names = [arg.name for arg in macro.args]
        passed = list(zip(names, node.args)) + [(keyword.key, keyword.value) for keyword in node.kwargs]
        for name, value in passed:
            if name in names and self._kind(value, scope) == _SCHEMA:
                self._schema_params.setdefault(macro.name, set()).add(name)

    def _kind(self, node: nodes.Node, scope: dict[str, str]) -> str | None:
        if isinstance(node, nodes.Name):
            return scope.get(node.name)
        if isinstance(node, nodes.CondExpr):
            return self._kind(node.expr1, scope) or (self._kind(node.expr2, scope) if node.expr2 else None)
        if isinstance(node, nodes.Filter) and node.name in ("default", "d") and node.node is not None:
            return self._kind(node.node, scope)
        if isinstance(node, nodes.Getattr):
            if node.attr in _MAPPING_METHODS:
                return None  # Jinja2 gives the method here, not a key
            return self._member(self._kind(node.node, scope), node.attr)
        if isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Slice):
                return None
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
            return self._member(self._kind(node.node, scope), key)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "get" \
                and node.args and not node.kwargs:
            key = node.args[0].value if isinstance(node.args[0], nodes.Const) else None
            return self._member(self._kind(node.node.node, scope), key)
        return None

    @staticmethod
    def _member(owner: str | None, key) -> str | None:
        """What ``owner[key]`` holds (``key`` None: a key only known at render time)."""
        if key == "properties":
            return _PROPERTIES  # `parameters.properties`, `schema.get('properties', {})`
        if owner == _PROPERTIES:
            return _SCHEMA
        if owner == _SCHEMA:
            if key == "items":
                return _SCHEMA  # an array's item schema
            if key is None or key in _CONTAINER_KEYWORDS:
                return _KEYWORD_VALUE
        return None


def _bound_names(target: nodes.Node) -> list[str]:
    return [name.name for name in target.find_all(nodes.Name)] if not isinstance(target, nodes.Name) else [target.name]


def _restricted_keys(test: nodes.Expr | None, key: nodes.Node) -> bool:
    """Whether ``test`` keeps only some named keys (``if k in [...]``, ``if k == 'x'``): then the
    loop's values are those keywords' values, not whatever the schema holds."""
    if test is None or not isinstance(key, nodes.Name):
        return False
    for compare in [test] if isinstance(test, nodes.Compare) else list(test.find_all(nodes.Compare)):
        if _key(compare.expr) == key.name and len(compare.ops) == 1 and compare.ops[0].op in ("in", "eq"):
            return True
    return False


def _spelling(node: nodes.Node) -> str:
    """How an expression reads in a message (``schema[name]`` for a subscript by a variable)."""
    key = _key(node)
    if key is not None:
        return key
    if isinstance(node, nodes.Getitem):
        return f"{_spelling(node.node)}[{_spelling(node.arg)}]"
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.args:
        return f"{_spelling(node.node.node)}.{node.node.attr}({_spelling(node.args[0])})"
    if isinstance(node, nodes.Const):
        return repr(node.value)
    return "..."


def _needle(node: nodes.Node) -> str | None:
    """A code token of ``node`` to place a finding on (its last name)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem):
        return _needle(node.node)
    if isinstance(node, nodes.Call):
        return _needle(node.node)
    return None


# Filters that read a value as a list of parts; with `for` over it or an index into it, a sign
# that the template expects message content to be a list (a type test alone may be a guard).
_PART_FILTERS = frozenset({"selectattr", "rejectattr", "select", "reject", "map", "first", "last"})


def _reads_content_parts(tree: nodes.Template | None) -> bool:
    if tree is None:
        return False
    for node in tree.find_all((nodes.For, nodes.Filter, nodes.Getitem)):
        subject = node.iter if isinstance(node, nodes.For) else node.node
        key = _fact_key(subject) if subject is not None else None
        if key is None or key.rsplit(".", 1)[-1] != "content":
            continue
        if isinstance(node, nodes.For):
            return True
        if isinstance(node, nodes.Filter) and node.name in _PART_FILTERS:
            return True
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, int):
            return True
    return False


# The roles whose turns clients fill with content parts; a condition on any other role is a
# tool result or a role the template defines for itself.
_PART_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _single_sets(tree: nodes.Template) -> dict[str, nodes.Expr]:
    """Names set exactly once in the template (``{% set x = ... %}``) -> their value."""
    values: dict[str, list[nodes.Expr]] = {}
    for assign in tree.find_all((nodes.Assign, nodes.AssignBlock)):
        if isinstance(assign.target, nodes.Name):
            values.setdefault(assign.target.name, []).append(getattr(assign, "node", None))
    return {name: found[0] for name, found in values.items() if len(found) == 1 and found[0] is not None}


def _role_side(node: nodes.Node) -> bool:
    """Whether ``node`` is a message's role (``m.role``, ``m['role']|lower``, ``m.role.lower()``)."""
    if isinstance(node, nodes.Filter) and node.name in ("lower", "trim") and node.node is not None:
        node = node.node
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr in ("lower", "strip"):
        node = node.node.node
    key = _key(node)
    return key is not None and key.rsplit(".", 1)[-1] == "role"


def _names_tool_turn(test: nodes.Expr) -> bool:
    """Whether ``test`` holding means a turn of a role outside ``_PART_ROLES`` (``m.role ==
    'tool'``, ``m.role in ['tool', 'ipython']``) or a turn with tool calls (``m.tool_calls``, ``m.tool_calls is defined``, ``m.get('tool_calls')``)."""
    if isinstance(test, nodes.Test) and test.name in ("defined", "sequence", "iterable"):
        test = test.node
    key = _fact_key(test)
    if key is not None:
        return key.rsplit(".", 1)[-1] == "tool_calls"
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op in ("eq", "in"):
        sides = [test.expr, test.ops[0].expr]
        if not any(_role_side(side) for side in sides):
            return False
        for side in sides:
            values = [side] if isinstance(side, nodes.Const) else list(side.items) \
                if isinstance(side, (nodes.List, nodes.Tuple)) else []
            roles = [value.value for value in values if isinstance(value, nodes.Const)]
            if roles and all(isinstance(role, str) and role not in _PART_ROLES for role in roles):
                return True
    return False


# Filters that @huggingface/jinja applies to lists (and some to strings) but not to a mapping.
_MAPPING_FAILING_FILTERS = frozenset({"list", "first", "last", "join", "sort", "reverse", "unique", "map",
                                      "selectattr", "rejectattr"})


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
