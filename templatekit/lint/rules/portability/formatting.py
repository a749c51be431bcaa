"""TK207-TK209: tojson keyword arguments, string formatting and dict.get defaults."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from jinja2 import nodes

from ...model import Diagnostic, Edit, Fix
from ...registry import register
from ...target import LintTarget, Token
from ...walk import find_all
from ._shared import (
    _FactWalkingRule, _TokenRule, _arguments, _at, _chain_start, _closing, _engines_text, _is, _method_calls,
    _postfix_follows, _target_names,
)


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
class StringFormatting(_FactWalkingRule):
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
