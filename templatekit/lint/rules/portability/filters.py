"""TK218-TK224: filters, tests and globals some engine lacks or implements differently, printed
comparisons, and dict keys, multiple assignment and iterable tests that engines treat apart."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator

from jinja2 import nodes

from ...model import Diagnostic, Edit, Fix, Severity
from ...registry import register
from ...target import LintTarget, Token
from ._shared import (
    _AstPortabilityRule, _FactWalker, _FactWalkingRule, _TokenRule, _and_chain, _arguments, _at, _closing,
    _engines_text, _implies, _is, _key, _parse_expression, _through_logic,
)
from .values import _NONE_INPUTS
from .schema import _MAPPING_FAILING_FILTERS, _PROPERTIES, _SCHEMA, _schema_flow


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
class FilterUnsupported(_FactWalkingRule):
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
class IterableTestOnMapping(_FactWalkingRule):
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
        super().__init__(options)
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


def _tests_mapping(test: nodes.Expr, positive: bool, key: str) -> bool | None:
    """True if ``test`` (holding when ``positive``) says ``key is mapping``, False if it says it
    is not, None if it says neither."""
    if isinstance(test, nodes.Not):
        return _tests_mapping(test.node, not positive, key)
    if isinstance(test, nodes.Test) and test.name == "mapping" and _key(test.node) == key:
        return positive
    return None
