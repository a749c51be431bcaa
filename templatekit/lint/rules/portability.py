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

import dataclasses
import re
import weakref
from collections.abc import Iterable, Iterator

import jinja2
from jinja2 import nodes
from jinja2.visitor import NodeVisitor

from ...environment import environment
from ..model import Diagnostic, Edit, Fix, Severity
from ..registry import AstRule, Rule, register
from ..target import LintTarget, Token

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

_CODE_CACHE: "weakref.WeakKeyDictionary[LintTarget, list[Token]]" = weakref.WeakKeyDictionary()


def _code(target: LintTarget) -> list[Token]:
    """The target's tokens without layout (whitespace, text, comments), computed once per target."""
    code = _CODE_CACHE.get(target)
    if code is None:
        code = [token for token in target.tokens if token.type not in _LAYOUT_TYPES]
        _CODE_CACHE[target] = code
    return code


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
            if any(_key(found.node) == key and found.name in _TYPE_TESTS for found in tests):
                return True
        return False


_TYPE_TESTS = frozenset({"string", "mapping", "sequence", "iterable"})


def _implies(test: nodes.Expr, positive: bool, key: str, fact: str) -> bool:
    if isinstance(test, nodes.Not):
        return _implies(test.node, not positive, key, fact)
    if isinstance(test, nodes.And) and positive:
        return _implies(test.left, True, key, fact) or _implies(test.right, True, key, fact)
    if isinstance(test, nodes.Or) and not positive:
        return _implies(test.left, False, key, fact) or _implies(test.right, False, key, fact)
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


def _literal(raw: str) -> str:
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
    not reported here; TK202 reports the ones that do not.)

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
        for dot, open_, close, method in _method_calls(tokens):
            if method not in _FILTER_EQUIVALENTS:
                continue
            arguments = _arguments(tokens, open_, close)
            if (method == "join") != (len(arguments) == 1):
                continue  # .join takes one argument, the others none; anything else is not the builtin
            filter_name, missing = _FILTER_EQUIVALENTS[method]
            engines = ("minijinja", *missing)
            fix = self._fix(target, tokens, dot, open_, close, method, arguments)
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
    Strip whitespace with the bare method or filter, or slice off a known prefix.

    Bad:
        {{ message.content.lstrip('\\n') }}

    Good:
        {{ message.content|trim }}
    """

    code = "TK203"
    name = "strip-characters-argument"
    engines = ("hf-jinja", "minja")

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for dot, open_, close, method in _method_calls(tokens):
            arguments = _arguments(tokens, open_, close)
            if method in ("strip", "lstrip", "rstrip") and len(arguments) == 1:
                argument = tokens[arguments[0][0]]
                # Stripping only whitespace characters ('\n') differs just when other whitespace
                # sits at the edge; stripping anything else ('</answer>') differs whenever it is there.
                only_whitespace = (
                    arguments[0][1] - arguments[0][0] == 1
                    and argument.type == "string"
                    and _literal(argument.value).isspace()
                )
                yield self.at(
                    tokens[dot],
                    f"hf-jinja ignores the characters passed to `.{method}()` and strips all whitespace instead",
                    ("hf-jinja",),
                    severity="info" if only_whitespace else "warning",
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
    the model cannot be served by them at all. Keep the tag in a separate training template, or
    accept that those runtimes need a copy without it.

    Bad:
        {% generation %}{{ message.content }}{% endgeneration %}

    Good:
        {{ message.content }}
    """

    code = "TK205"
    name = "generation-tag"
    engines = ("minijinja", "minijinja-js")
    severity = "warning"

    def scan(self, target: LintTarget, tokens: list[Token]) -> Iterator[Diagnostic]:
        for index, token in enumerate(tokens):
            if token.type == "block_begin" and _is(_at(tokens, index + 1), "generation"):
                yield self.at(
                    token,
                    "`{% generation %}` is a syntax error in minijinja and minijinja-js (unknown statement)",
                    self.engines,
                )


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


@register
class StringFormatting(_AstPortabilityRule):
    """A string is formatted with ``.format()``, ``%`` or ``|format``.

    Why: Python's string formatting is not part of Jinja's common subset. ``'%s' % x`` is a
    render error in every other engine ("unknown operator"), ``.format()`` is missing in
    @huggingface/jinja, minijinja-js and minja, and so is the ``|format`` filter. Concatenate
    with ``~`` instead.

    Bad:
        {{ 'Tool: {}'.format(tool.name) }}

    Good:
        {{ 'Tool: ' ~ tool.name }}
    """

    code = "TK208"
    name = "string-formatting"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

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
    engines agree on (up to whitespace).

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

    def _is_object(self, node: nodes.Node) -> str | None:
        key = _key(node)
        if key is None:
            return None
        last = key.rsplit(".", 1)[-1]
        is_object = key in _OBJECT_NAMES or key in self.object_loops or ("." in key and last in _OBJECT_FIELDS)
        return key if is_object and not self.type_tested(key) else None

    def visit_Call(self, node: nodes.Call) -> None:
        # An error message is no prompt: how raise_exception's text spells a dict does not matter.
        if isinstance(node.node, nodes.Name) and node.node.name == "raise_exception":
            return
        self.generic_visit(node)

    def visit_For(self, node: nodes.For) -> None:
        self.visit(node.iter)
        iterable = node.iter
        # `tools|selectattr(...)|list` still yields the tools themselves.
        while isinstance(iterable, nodes.Filter) and iterable.name in _ORDER_FILTERS:
            iterable = iterable.node
        names = []
        key = _key(iterable)
        if key is not None and (key in _OBJECT_NAMES or key.rsplit(".", 1)[-1] in ("tools", "tool_calls", "documents")):
            # `for tool in tools`: each item is a dict; tuple targets (`for k, v in ...`) are not.
            names = [node.target.name] if isinstance(node.target, nodes.Name) else []
        saved = self.object_loops
        self.object_loops = saved + names
        try:
            for child in node.body:
                self.visit(child)
        finally:
            self.object_loops = saved
        for child in node.else_:
            self.visit(child)
        if node.test is not None:
            self.visit(node.test)

    def _flag_objects(self, children: list, describe) -> None:
        """Flag each child that is a list/dict turned into text (message from ``describe(key)``)."""
        for child in children:
            key = self._is_object(child)
            if key is not None:
                self.flag(child, describe(key), self.engines, needle=key.rsplit(".", 1)[-1])
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
    ``reasoning_content`` from one turn into the next this way). To carry state across
    iterations use ``namespace()``; to keep it per iteration, set it unconditionally first.

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
            for read in _reads_before_set(node.body, assigned, set()):
                if read.name in reported:
                    continue
                reported.add(read.name)
                line = read.lineno
                column = _load_column(self.target, line, read.name) or self.target.column_of(line, read.name)
                self.found.append(
                    self.diagnostic(
                        line,
                        column,
                        f"`{read.name}` is set inside this loop but read here before it is set in every iteration: "
                        f"transformers starts each iteration without it, hf-jinja, minijinja-js and minja keep the "
                        f"previous iteration's value; use namespace()",
                    )
                )
        self.generic_visit(node)


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
class FilterUnsupported(_AstPortabilityRule):
    """A filter is used that some engine lacks or implements differently.

    Why: each engine ships its own subset of Jinja's filters. minja has no ``title``,
    ``capitalize``, ``first``, ``replace``, ``reverse``, ``sort`` or ``min``/``max``/``sum``;
    @huggingface/jinja has no ``min``, ``max``, ``sum``, ``select``, ``reject``, ``round`` or
    ``map`` without ``attribute=``, and its ``title``/``capitalize`` do not lower-case the rest
    of the word. A missing filter is a render error there.

    Bad:
        {{ message.role|capitalize }}

    Good:
        {% if message.role == 'user' %}User{% else %}Assistant{% endif %}
    """

    code = "TK218"
    name = "filter-unsupported"
    engines = ("minijinja", "minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def visit_Filter(self, node: nodes.Filter) -> None:
        gaps = dict(_FILTER_GAPS.get(node.name, {}))
        if node.name == "map" and not any(keyword.key == "attribute" for keyword in node.kwargs):
            gaps["hf-jinja"] = "supports only map(attribute=...)"
        if node.name == "dictsort" and (node.args or node.kwargs):
            gaps["minja"] = "takes no arguments"
        if gaps:
            missing = [engine for engine, what in gaps.items() if what == "missing"]
            parts = [f"missing in {_engines_text(missing)}"] if missing else []
            parts += [f"{engine} {what}" for engine, what in gaps.items() if what != "missing"]
            severity: Severity = "warning" if missing else "info"
            self.flag(node, f"`|{node.name}`: " + "; ".join(parts), gaps, needle=node.name, severity=severity)
        self.generic_visit(node)


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
