"""TK225-TK228: tojson escaping, message fields that may be absent, string content looped over as
parts, raw blocks; and the message-field walkers they share with TK203's raw-content search."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator

from jinja2 import nodes

from ...model import Diagnostic, Severity
from ...registry import register
from ...target import LintTarget, Token
from ...walk import find_all
from ._shared import (
    _AstPortabilityRule, _FactWalkingRule, _TokenRule, _and_chain, _at, _code, _expand, _fact_key, _finding,
    _get_field, _is, _key, _target_names, _through_logic,
)
from .operators import _before_index


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


class _MessageFieldWalker(_FactWalkingRule):
    """Tracks which names hold a message (``for m in messages``, ``messages[0]``) and which are
    copies of a message field (``{% set content = m.content %}``, a macro parameter called with
    ``m.content``), so rules can tell a message field from any other attribute access.

    Macro bodies are walked after the rest of the template, once every call to them is known.
    """

    def __init__(self, options=None) -> None:
        super().__init__(options)
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
