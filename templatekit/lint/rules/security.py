"""TK9xx: templates that probe the sandbox, hide text from reviewers, or exhaust resources.

A chat template is code from an untrusted model repository. transformers renders it in
``ImmutableSandboxedEnvironment`` and templatekit adds render budgets (``guards.py``), so a hostile
template already fails safely when it is rendered here. These rules find the same attempts
without rendering anything: they say what a construct reaches for and where, so a reviewer can
reject the template before any engine runs it, including engines that are not sandboxed at all
(the CVEs in the research catalogue, class 33, are all of that kind).

Real chat templates never need any of these constructs, so every rule is an error. The rules
were calibrated on 786 templates published on the Hub; the only findings there are templates
that fail in transformers itself (they mutate a list or call an attribute ``dict`` lacks).

Several rules need to know what an expression evaluates to without rendering it (an attribute
name assembled as ``'__cla' ~ 'ss__'``, a loop bound written as ``10 ** 6``). ``_Folder`` computes
that for constant expressions, under a size limit of its own, because folding runs on the same
untrusted input the rules inspect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import string
import unicodedata
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import Any

import markupsafe
from jinja2 import filters as jinja_filters
from jinja2 import nodes

from ...guards import format_widths
from ..config import RuleOptions, WholeNumber
from ..registry import AstRule, Rule, register
from ..target import LintTarget, Token
from ..walk import child_nodes, tree_index

# ---------------------------------------------------------------------------------------------
# vocabulary

# Methods that change a list, dict, set or deque in place. ImmutableSandboxedEnvironment refuses
# every one of them (``jinja2.sandbox._mutable_spec``), whatever object they are called on.
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem", "add",
    "discard", "sort", "reverse", "difference_update", "intersection_update",
    "symmetric_difference_update", "appendleft", "extendleft", "popleft", "rotate",
})

# str.format reads attributes and items of its arguments ('{0.__class__}'); Jinja's sandbox wraps
# it, but it is the classic server-side template injection vector and no chat template needs it.
FORMAT_METHODS = frozenset({"format", "format_map"})

# Free names that only make sense when escaping a sandbox: Python modules and builtins, and the
# globals Flask puts in its templates (SSTI payloads are written for Flask first). None of them
# exists in a chat-template render, so reading one is a probe or a payload copied from elsewhere.
ESCAPE_NAMES = frozenset({
    "os", "sys", "subprocess", "popen", "builtins", "importlib", "globals", "locals", "vars",
    "mro", "subclasses", "eval", "exec", "getattr", "setattr", "delattr",
    "config", "request", "application", "url_for", "get_flashed_messages",
})

# Attribute names that exist only on interpreter internals (frames, code objects, function
# globals) and on the modules escapes reach for. Data never has them, so they are flagged as
# attributes too; broader words (``system``, ``os``) are left to the name rule and TK901, because
# a tool schema may well have a key called ``system``.
ESCAPE_ATTRIBUTES = frozenset({
    "popen", "subprocess", "mro", "subclasses", "builtins", "check_output", "getoutput",
    "import_module", "func_globals", "func_code", "f_globals", "f_locals", "f_builtins", "f_back",
    "f_code", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "tb_frame",
    "tb_next", "co_code", "im_func", "im_self", "im_class",
})

# The template globals that are Python objects with a way back to Python: classes and functions
# whose ``__init__``/``__globals__`` lead to Jinja's module namespace (which imports ``os``), the
# builtin types (``__subclasses__``), and ``self``, whose private attribute holds the render
# context. Their public use is calling them; anything else reaches into the object.
GADGET_GLOBALS = {
    "cycler": "a class whose __init__.__globals__ is a Python module namespace",
    "joiner": "a class whose __init__.__globals__ is a Python module namespace",
    "namespace": "a class whose __init__.__globals__ is a Python module namespace",
    "lipsum": "a Python function whose __globals__ is Jinja's module namespace, os included",
    "range": "the Python builtin type, one step from object.__subclasses__()",
    "dict": "a Python object, one step from object.__subclasses__()",
    "self": "Jinja's TemplateReference, whose private attribute holds the render context",
}

# The one attribute of a gadget global that is part of transformers' API: its restricted ``dict``
# is "callable, plus fromkeys" (transformers/utils/chat_template_utils.py, TemplateDict).
_GADGET_API = {"dict": frozenset({"fromkeys"})}

# Python's name mangling: ``_Namespace__attrs``, ``_TemplateReference__context``.
_MANGLED = re.compile(r"^_[A-Za-z][A-Za-z0-9]*__\w+$")


def _danger(name: str, style: str = "attribute") -> str | None:
    """Why reaching ``name`` is dangerous, or None when it is an ordinary name. Item lookups and
    attribute paths look up data keys first, and a data key may be called ``format``, ``update``
    or ``_id``; for them only dunders, mangled names and interpreter internals count."""
    if style in ("item", "path") and not (name.startswith("__") or _MANGLED.match(name) or name in ESCAPE_ATTRIBUTES):
        return None
    if name.startswith("__"):
        return "a Python dunder attribute"
    if name.startswith("_"):
        return "an underscore-prefixed (private) attribute"
    if name in ESCAPE_ATTRIBUTES:
        return "an interpreter internal that sandbox escapes reach for"
    if name in FORMAT_METHODS:
        return "str.format, which reads attributes of its arguments"
    if name in MUTATING_METHODS:
        return "a mutating method the immutable sandbox refuses"
    return None


# ---------------------------------------------------------------------------------------------
# constant folding


class _Unknown:
    """The value of an expression that cannot be known without rendering the template."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()

# The largest value (characters plus items) the folder builds. Names worth hiding are a few
# dozen characters; the limit only exists so that folding ``'a' * 10 ** 9`` cannot be the thing
# that exhausts the linter.
_FOLD_LIMIT = 4096


def _measure(value: Any, limit: int = _FOLD_LIMIT) -> int:
    """Size of a folded value in characters plus items; counting stops once it passes ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple)):
            total += 1 + len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += 1 + 2 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif type(item) is int:
            total += item.bit_length() // 8 + 1
        else:
            total += 1
    return total


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value is not UNKNOWN


def _text(value: Any) -> str:
    """``str()`` as Jinja's ``~`` and ``|string`` apply it."""
    return value if isinstance(value, str) else str(value)


def _printf(template: str, args: Any) -> Any:
    """``template % args`` (the ``%`` operator and ``|format``), refused when field widths could
    build a large string."""
    if "*" in template or format_widths(template, brace=False) > _FOLD_LIMIT:
        return UNKNOWN
    return template % args


# A replacement field that only names an argument: '{}', '{0}', '{name}'. Fields that read an
# attribute or an item ('{0.__class__}', '{0[x]}') are never folded.
_PLAIN_FIELD = re.compile(r"\d*|[A-Za-z_][A-Za-z0-9_]*")


def _format_fields(template: str) -> list[tuple[str, str]]:
    """(field name, format spec) of every replacement field; ValueError when malformed."""
    parsed = string.Formatter().parse(template)
    return [(field, spec or "") for _text_part, field, spec, _conversion in parsed if field is not None]


def _brace_format(template: str, args: list, kwargs: dict) -> Any:
    """``template.format(*args, **kwargs)`` for plain fields and small widths only."""
    for field, spec in _format_fields(template):
        if not _PLAIN_FIELD.fullmatch(field) or "{" in spec:
            return UNKNOWN
    if format_widths(template, brace=True) > _FOLD_LIMIT:
        return UNKNOWN
    return template.format(*args, **kwargs)


def _range_length(*args: Any) -> int:
    """len(range(*args)) without building it (and without Python's sys.maxsize limit on len)."""
    if not args or len(args) > 3 or any(type(arg) not in (int, bool) for arg in args):
        raise TypeError("range() takes one to three integers")
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1)
    if step == 0:
        raise ValueError("range() step must not be zero")
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def _replaced_size(text: str, old: str, new: str, count: int | None) -> int:
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


# String methods that never grow their receiver much (case mapping at most triples it).
_PLAIN_STR_METHODS = frozenset({
    "lower", "upper", "title", "capitalize", "swapcase", "casefold", "strip", "lstrip", "rstrip",
    "removeprefix", "removesuffix", "split", "rsplit", "splitlines", "partition", "rpartition",
    "startswith", "endswith", "find", "rfind", "index", "rindex", "count", "isalnum", "isalpha",
    "isdigit", "islower", "isupper", "isspace", "istitle",
})


def _call_method(receiver: Any, method: str, args: list, kwargs: dict) -> Any:
    """A method call on a folded constant, for the methods that cannot build a large value."""
    if isinstance(receiver, str):
        if method in _PLAIN_STR_METHODS:
            return getattr(receiver, method)(*args, **kwargs)
        if method == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
            if _replaced_size(receiver, args[0], args[1], args[2] if len(args) > 2 else None) > _FOLD_LIMIT:
                return UNKNOWN
            return receiver.replace(*args)
        if method in ("center", "ljust", "rjust", "zfill") and args and type(args[0]) is int:
            return getattr(receiver, method)(*args) if args[0] <= _FOLD_LIMIT else UNKNOWN
        if method == "join" and len(args) == 1:
            items = [_text(item) for item in args[0]] if isinstance(args[0], (list, tuple, str, dict)) else None
            if items is None or sum(map(len, items)) + len(receiver) * len(items) > _FOLD_LIMIT:
                return UNKNOWN
            return receiver.join(items)
        if method == "format":
            return _brace_format(receiver, args, kwargs)
        return UNKNOWN
    if isinstance(receiver, dict) and method in ("keys", "values", "items", "get") and not kwargs:
        result = getattr(receiver, method)(*args)
        return result if method == "get" else list(result)
    return UNKNOWN


def _fold_join(value: Any, d: str = "", attribute: Any = None) -> Any:
    if attribute is not None or not isinstance(value, (str, list, tuple, dict)):
        return UNKNOWN
    items = [_text(item) for item in value]
    if sum(map(len, items)) + len(_text(d)) * len(items) > _FOLD_LIMIT:
        return UNKNOWN
    return _text(d).join(items)


def _fold_format_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
    if args and kwargs:
        raise TypeError("|format takes positional or keyword arguments, not both")
    return _printf(_text(value), kwargs or args)


def _fold_replace(value: Any, old: Any, new: Any, count: Any = None) -> Any:
    value, old, new = _text(value), _text(old), _text(new)
    if _replaced_size(value, old, new, count) > _FOLD_LIMIT:
        return UNKNOWN
    return value.replace(old, new, -1 if count is None else count)


def _fold_reverse(value: Any) -> Any:
    if isinstance(value, str):
        return value[::-1]
    return list(reversed(value))


def _fold_default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # The value is known, so it is defined: |default only replaces it when boolean=True.
    return default_value if boolean and not value else value


def _fold_tojson(
    value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> Any:
    if indent is not None and not (type(indent) is int and 0 <= indent <= 16):
        return UNKNOWN
    # transformers' tojson is plain json.dumps (environment.tojson); separators arrive as a list.
    separators = tuple(separators) if separators else None
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# Filters folded on constants, by the name templates use. Each takes the filtered value first,
# then the filter's own arguments, like the Jinja filter it mirrors (Jinja's own implementations
# where they need no environment, so case mapping and trimming match exactly).
_FILTER_FOLDS: dict[str, Callable[..., Any]] = {
    "join": _fold_join,
    "format": _fold_format_filter,
    "lower": jinja_filters.do_lower,
    "upper": jinja_filters.do_upper,
    "title": jinja_filters.do_title,
    "capitalize": jinja_filters.do_capitalize,
    "trim": jinja_filters.do_trim,
    "string": _text,
    "safe": _text,
    "e": lambda value: str(markupsafe.escape(value)),
    "escape": lambda value: str(markupsafe.escape(value)),
    "reverse": _fold_reverse,
    "replace": _fold_replace,
    "first": lambda value: list(value)[0],
    "last": lambda value: list(value)[-1],
    "list": list,
    "length": len,
    "count": len,
    "int": jinja_filters.do_int,
    "float": jinja_filters.do_float,
    "default": _fold_default,
    "d": _fold_default,
    "tojson": _fold_tojson,
    "items": lambda value: list(value.items()),
}


def _fold_map(value: Any, *args: Any, **kwargs: Any) -> Any:
    """``|map('lower')``: another folded filter applied to each item (not ``attribute=``)."""
    if kwargs or not args or args[0] not in _FILTER_FOLDS or not isinstance(value, (list, tuple, str)):
        return UNKNOWN
    apply = _FILTER_FOLDS[args[0]]
    results = [apply(item, *args[1:]) for item in value]
    return UNKNOWN if any(result is UNKNOWN for result in results) else results


_FILTER_FOLDS["map"] = _fold_map

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}


class _Folder:
    """Evaluates constant expressions of one template, or says ``UNKNOWN``.

    Names count as constants when every ``{% set %}`` of the name in the template assigns the same
    constant and nothing else binds it (a loop variable, a macro parameter). That ignores where in
    the template a name is read, which is right for this purpose: it answers "could this
    expression be this name", not "what does this line print".
    """

    def __init__(self, facts: "_Facts") -> None:
        self.facts = facts
        self._memo: dict[int, Any] = {}
        self._resolving: set[str] = set()

    def fold(self, node: nodes.Node | None) -> Any:
        if node is None:
            return UNKNOWN
        key = id(node)
        if key in self._memo:
            return self._memo[key]
        handler = getattr(self, "_fold_" + type(node).__name__, None)
        try:
            value = UNKNOWN if handler is None else handler(node)
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError, RecursionError):
            # Python refused the operation on these constants (a bad index, '%d' of a string,
            # division by zero, ``'abc'|items``); so would the render, so the expression has no
            # constant value.
            value = UNKNOWN
        if value is not UNKNOWN and _measure(value) > _FOLD_LIMIT:
            value = UNKNOWN
        self._memo[key] = value
        return value

    def _fold_all(self, expressions: Iterable[nodes.Node]) -> list | None:
        values = [self.fold(expression) for expression in expressions]
        return None if any(value is UNKNOWN for value in values) else values

    # -- leaves and containers ---------------------------------------------------------------
    def _fold_Const(self, node: nodes.Const) -> Any:
        return node.value if isinstance(node.value, (str, int, float, bool, type(None))) else UNKNOWN

    def _fold_List(self, node: nodes.List) -> Any:
        items = self._fold_all(node.items)
        return UNKNOWN if items is None else items

    def _fold_Tuple(self, node: nodes.Tuple) -> Any:
        items = self._fold_all(node.items)
        return UNKNOWN if items is None else tuple(items)

    def _fold_Dict(self, node: nodes.Dict) -> Any:
        result = {}
        for pair in node.items:
            key, value = self.fold(pair.key), self.fold(pair.value)
            if key is UNKNOWN or value is UNKNOWN:
                return UNKNOWN
            result[key] = value
        return result

    def _fold_Name(self, node: nodes.Name) -> Any:
        expressions = self.facts.assigned_values(node.name)
        if node.ctx != "load" or not expressions or node.name in self._resolving:
            return UNKNOWN
        self._resolving.add(node.name)
        try:
            values = self._fold_all(expressions)
        finally:
            self._resolving.discard(node.name)
        if values is None or any(value != values[0] for value in values[1:]):
            return UNKNOWN
        return values[0]

    # -- operators ------------------------------------------------------------------------------
    def _fold_Concat(self, node: nodes.Concat) -> Any:
        parts = self._fold_all(node.nodes)
        return UNKNOWN if parts is None else "".join(_text(part) for part in parts)

    def _operands(self, node: nodes.BinExpr) -> tuple[Any, Any]:
        return self.fold(node.left), self.fold(node.right)

    def _fold_Add(self, node: nodes.Add) -> Any:
        left, right = self._operands(node)
        if _is_number(left) and _is_number(right):
            return left + right
        if type(left) is type(right) and isinstance(left, (str, list, tuple)):
            return left + right if _measure(left) + _measure(right) <= _FOLD_LIMIT else UNKNOWN
        return UNKNOWN

    def _fold_Sub(self, node: nodes.Sub) -> Any:
        left, right = self._operands(node)
        return left - right if _is_number(left) and _is_number(right) else UNKNOWN

    def _fold_Div(self, node: nodes.Div) -> Any:
        left, right = self._operands(node)
        return left / right if _is_number(left) and _is_number(right) else UNKNOWN

    def _fold_FloorDiv(self, node: nodes.FloorDiv) -> Any:
        left, right = self._operands(node)
        return left // right if _is_number(left) and _is_number(right) else UNKNOWN

    def _fold_Mul(self, node: nodes.Mul) -> Any:
        left, right = self._operands(node)
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and type(count) is int:
                if _measure(sequence) * max(count, 0) > _FOLD_LIMIT:
                    return UNKNOWN
                return sequence * count
        if _is_number(left) and _is_number(right):
            if type(left) is int and type(right) is int and left.bit_length() + right.bit_length() > 8 * _FOLD_LIMIT:
                return UNKNOWN
            return left * right
        return UNKNOWN

    def _fold_Mod(self, node: nodes.Mod) -> Any:
        left, right = self._operands(node)
        if isinstance(left, str) and right is not UNKNOWN:
            return _printf(left, right)
        return left % right if _is_number(left) and _is_number(right) else UNKNOWN

    def _fold_Pow(self, node: nodes.Pow) -> Any:
        base, exponent = self._operands(node)
        if not (_is_number(base) and _is_number(exponent)):
            return UNKNOWN
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
            if abs(base).bit_length() * exponent > 8 * _FOLD_LIMIT:
                return UNKNOWN
        result = base**exponent
        return result if isinstance(result, (int, float)) else UNKNOWN

    def _fold_Neg(self, node: nodes.Neg) -> Any:
        value = self.fold(node.node)
        return -value if _is_number(value) else UNKNOWN

    def _fold_Pos(self, node: nodes.Pos) -> Any:
        value = self.fold(node.node)
        return +value if _is_number(value) else UNKNOWN

    def _fold_Not(self, node: nodes.Not) -> Any:
        value = self.fold(node.node)
        return UNKNOWN if value is UNKNOWN else not value

    def _fold_And(self, node: nodes.And) -> Any:
        left = self.fold(node.left)
        return left if left is UNKNOWN or not left else self.fold(node.right)

    def _fold_Or(self, node: nodes.Or) -> Any:
        left = self.fold(node.left)
        return left if left is UNKNOWN or left else self.fold(node.right)

    def _fold_CondExpr(self, node: nodes.CondExpr) -> Any:
        test = self.fold(node.test)
        if test is UNKNOWN:
            return UNKNOWN
        return self.fold(node.expr1) if test else self.fold(node.expr2)

    def _fold_Compare(self, node: nodes.Compare) -> Any:
        value = self.fold(node.expr)
        for operand in node.ops:
            other = self.fold(operand.expr)
            if value is UNKNOWN or other is UNKNOWN or operand.op not in _COMPARISONS:
                return UNKNOWN
            if not _COMPARISONS[operand.op](value, other):
                return False
            value = other
        return True

    # -- lookups, calls and filters -------------------------------------------------------------
    def _fold_Getitem(self, node: nodes.Getitem) -> Any:
        container = self.fold(node.node)
        if container is UNKNOWN:
            return UNKNOWN
        if isinstance(node.arg, nodes.Slice):
            parts = [None if part is None else self.fold(part) for part in (node.arg.start, node.arg.stop, node.arg.step)]
            if any(part is UNKNOWN for part in parts) or not isinstance(container, (str, list, tuple)):
                return UNKNOWN
            return container[slice(*parts)]
        key = self.fold(node.arg)
        if isinstance(container, dict):
            return container[key]
        if isinstance(container, (str, list, tuple)) and isinstance(key, int):
            return container[key]
        return UNKNOWN

    def _fold_Getattr(self, node: nodes.Getattr) -> Any:
        container = self.fold(node.node)
        # Jinja's getattr falls back to the item when the object has no such attribute.
        if isinstance(container, dict) and not hasattr(container, node.attr):
            return container[node.attr]
        return UNKNOWN

    def _arguments(self, node: nodes.Call | nodes.Filter) -> tuple[list, dict] | None:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            return None
        args = self._fold_all(node.args)
        values = self._fold_all(keyword.value for keyword in node.kwargs)
        if args is None or values is None:
            return None
        return args, {keyword.key: value for keyword, value in zip(node.kwargs, values)}

    def _fold_Call(self, node: nodes.Call) -> Any:
        arguments = self._arguments(node)
        if arguments is None:
            return UNKNOWN
        args, kwargs = arguments
        callee = node.node
        if isinstance(callee, nodes.Getattr):
            receiver = self.fold(callee.node)
            return UNKNOWN if receiver is UNKNOWN else _call_method(receiver, callee.attr, args, kwargs)
        if isinstance(callee, nodes.Name) and not self.facts.is_bound(callee.name):
            if callee.name == "dict":
                return dict(*args, **kwargs)
            if callee.name == "range" and not kwargs and _range_length(*args) <= _FOLD_LIMIT:
                return list(range(*args))
        return UNKNOWN

    def _fold_Filter(self, node: nodes.Filter) -> Any:
        fold = _FILTER_FOLDS.get(node.name)
        if fold is None or node.node is None:
            return UNKNOWN
        value = self.fold(node.node)
        arguments = self._arguments(node)
        if value is UNKNOWN or arguments is None:
            return UNKNOWN
        return fold(value, *arguments[0], **arguments[1])

    def _fold_MarkSafe(self, node: nodes.MarkSafe) -> Any:
        return self.fold(node.expr)

    def _fold_MarkSafeIfAutoescape(self, node: nodes.MarkSafeIfAutoescape) -> Any:
        return self.fold(node.expr)

    # -- partial knowledge ----------------------------------------------------------------------
    def prefix(self, node: nodes.Node) -> str:
        """The known beginning of a string expression ('' when nothing is known), so that
        ``'__' ~ name ~ '__'`` is recognisable as a dunder even though ``name`` is data."""
        try:
            return self._prefix(node)
        except RecursionError:
            return ""  # nested deeper than Python recurses: nothing is known about it

    def _prefix(self, node: nodes.Node) -> str:
        value = self.fold(node)
        if isinstance(value, str):
            return value
        if isinstance(node, nodes.Concat):
            known = ""
            for part in node.nodes:
                value = self.fold(part)
                if value is UNKNOWN:
                    return known + self._prefix(part)
                known += _text(value)
            return known
        if isinstance(node, nodes.Add):
            left = self.fold(node.left)
            return left + self._prefix(node.right) if isinstance(left, str) else self._prefix(node.left)
        if isinstance(node, nodes.Filter) and node.node is not None and node.name in ("string", "safe", "lower", "upper"):
            known = self._prefix(node.node)
            return known.lower() if node.name == "lower" else known.upper() if node.name == "upper" else known
        if isinstance(node, nodes.Mod) or (isinstance(node, nodes.Filter) and node.name == "format"):
            template = self.fold(node.left if isinstance(node, nodes.Mod) else node.node)
            if isinstance(template, str):
                return template.split("%", 1)[0]
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "format":
            template = self.fold(node.node.node)
            if isinstance(template, str):
                return template.split("{", 1)[0]
        return ""


# ---------------------------------------------------------------------------------------------
# facts shared by the rules


@dataclasses.dataclass(frozen=True)
class Access:
    """One place where the template reads (or sets) an attribute or item by name.

    ``style`` says how Jinja resolves it: ``attribute`` (``x.name``, ``|attr``: attribute first),
    ``item`` (``x['name']``: item first, so data keys with odd names are legitimate), ``path``
    (``attribute='a.b'`` of map, selectattr, sort ...: item lookups), ``store`` (a namespace
    attribute set). ``name`` is None when the name is computed from data; ``literal`` is True when
    the source spells the name out; ``partial`` when only the name's beginning is known.
    """

    node: nodes.Node
    receiver: nodes.Node | None
    name: str | None
    literal: bool
    style: str
    token: tuple[str, str]
    partial: bool = False


# Filters that take an attribute path (``attribute='a.b'``), and which positional argument it is.
# None: only the ``attribute=`` keyword (their first positional argument means something else).
_PATH_ARGUMENTS: dict[str, int | None] = {
    "selectattr": 0, "rejectattr": 0, "groupby": 0, "sum": 0,
    "map": None, "sort": None, "unique": None, "min": None, "max": None, "join": None,
}


def _decode_string_token(raw: str) -> str | None:
    """The value of a string token, decoded exactly as Jinja's lexer does (None if it fails)."""
    try:
        return raw[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")
    except UnicodeDecodeError:
        return None


class _Facts:
    """What several TK9xx rules need to know about one template, computed once per target."""

    def __init__(self, target: LintTarget) -> None:
        assert target.tree is not None
        self.target = target
        self.tree = target.tree
        self.bound: set[str] = set()
        self._values: dict[str, list[nodes.Node]] = defaultdict(list)
        self._opaque: set[str] = set()
        self.macros: dict[str, list[nodes.Macro]] = defaultdict(list)
        self.parents: dict[int, nodes.Node] = {}
        self._by_type: dict[type, list[nodes.Node]] = defaultdict(list)
        self._order: dict[int, int] = {}
        self._index_tree()
        self.blocks = {block.name for block in self.nodes_of(nodes.Block)}
        self._collect_bindings()
        self.folder = _Folder(self)
        self._sizes: dict[int, int | None] = {}
        self._sizing: set[int] = set()
        self._token_lines = [token.line for token in target.tokens]

    def _index_tree(self) -> None:
        # One walk, in source order, shared by every rule: walking a Jinja tree is the dominant
        # cost of these rules (iter_child_nodes is slow), so no rule walks it again for lookups.
        known = tree_index(self.target).children  # the children every AST rule's walk uses
        pending: list[nodes.Node] = [self.tree]
        while pending:
            node = pending.pop()
            self._order[id(node)] = len(self._order)
            self._by_type[type(node)].append(node)
            children = known.get(id(node))
            if children is None:
                children = tuple(node.iter_child_nodes())
            for child in children:
                self.parents[id(child)] = node
            pending.extend(reversed(children))

    def nodes_of(self, *kinds: type) -> list[Any]:
        """Every node of the given (concrete) node classes, in source order."""
        if len(kinds) == 1:
            return list(self._by_type.get(kinds[0], ()))
        found = [node for kind in kinds for node in self._by_type.get(kind, ())]
        return sorted(found, key=lambda node: self._order[id(node)])

    # -- names ----------------------------------------------------------------------------------
    def _collect_bindings(self) -> None:
        simple: set[int] = set()
        for node in self.nodes_of(nodes.Assign, nodes.With):
            pairs = [(node.target, node.node)] if isinstance(node, nodes.Assign) else list(zip(node.targets, node.values))
            for target, value in pairs:
                for name, expression in _unpack(target, value):
                    simple.add(id(name))
                    self._values[name.name].append(expression)
        for name in self.nodes_of(nodes.Name):
            if name.ctx in ("store", "param"):
                self.bound.add(name.name)
                if id(name) not in simple:
                    self._opaque.add(name.name)
        for macro in self.nodes_of(nodes.Macro):
            self.macros[macro.name].append(macro)
            self.bound.add(macro.name)
            self._opaque.add(macro.name)
        for imported in self.nodes_of(nodes.Import, nodes.FromImport):
            if isinstance(imported, nodes.Import):
                names = [imported.target]
            else:
                names = [item[1] if isinstance(item, tuple) else item for item in imported.names]
            self.bound.update(names)
            self._opaque.update(names)

    def is_bound(self, name: str) -> bool:
        """Whether the template binds ``name`` itself (so it is not the global of that name)."""
        return name in self.bound

    def assigned_values(self, name: str) -> list[nodes.Node] | None:
        """Every expression a plain ``{% set name = ... %}`` assigns, or None when the name is
        also bound some other way (loop variable, parameter, block set) or never assigned."""
        if name in self._opaque:
            return None
        return self._values.get(name) or None

    def fold(self, node: nodes.Node | None) -> Any:
        return self.folder.fold(node)

    # -- attribute and item accesses ------------------------------------------------------------
    @cached_property
    def accesses(self) -> list[Access]:
        """Every attribute or item the template reaches by name, however it is written."""
        found: list[Access] = []
        for node in self.nodes_of(nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.NSRef, nodes.Call):
            found.extend(self._accesses_of(node))
        return found

    def _accesses_of(self, node: nodes.Node) -> Iterator[Access]:
        if isinstance(node, nodes.Getattr):
            yield Access(node, node.node, node.attr, True, "attribute", ("name", node.attr))
        elif isinstance(node, nodes.NSRef):
            yield Access(node, None, node.attr, True, "store", ("name", node.attr))
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Slice):
                return
            if isinstance(node.arg, nodes.Const):
                if isinstance(node.arg.value, str):
                    yield Access(node, node.node, node.arg.value, True, "item", ("string", node.arg.value))
                return
            yield from self._computed(node, node.node, node.arg, "item", ("operator", "["))
        elif isinstance(node, nodes.Call):
            # namespace(_x=1): transformers' namespace refuses underscore names at render time.
            if isinstance(node.node, nodes.Name) and node.node.name == "namespace" and not self.is_bound("namespace"):
                for keyword in node.kwargs:
                    yield Access(node, None, keyword.key, True, "store", ("name", keyword.key))
        elif isinstance(node, nodes.Filter) and node.node is not None:
            yield from self._filter_accesses(node)

    def _filter_accesses(self, node: nodes.Filter) -> Iterator[Access]:
        name_argument: nodes.Node | None = None
        if node.name == "attr":
            name_argument = node.args[0] if node.args else _keyword(node, "name")
        elif node.name == "map" and len(node.args) >= 2 and _is_const(node.args[0], "attr"):
            name_argument = node.args[1]  # |map('attr', name) applies |attr to every item
        if name_argument is not None:
            if isinstance(name_argument, nodes.Const) and isinstance(name_argument.value, str):
                yield Access(node, node.node, name_argument.value, True, "attribute", ("string", name_argument.value))
            elif not isinstance(name_argument, nodes.Const):
                yield from self._computed(node, node.node, name_argument, "attribute", ("name", node.name))
            return
        if node.name not in _PATH_ARGUMENTS:
            return
        position = _PATH_ARGUMENTS[node.name]
        path = node.args[position] if position is not None and len(node.args) > position else _keyword(node, "attribute")
        if path is None:
            return
        literal = isinstance(path, nodes.Const)
        value = self.fold(path)
        if not isinstance(value, str):
            return  # an int index, or a path computed from data (macros pass field names)
        token = ("string", value) if literal else ("name", node.name)
        for part in value.split("."):
            if not part.isdigit():
                yield Access(node, None, part, literal, "path", token)

    def _computed(
        self, node: nodes.Node, receiver: nodes.Node, expression: nodes.Node, style: str, token: tuple[str, str]
    ) -> Iterator[Access]:
        value = self.fold(expression)
        if isinstance(value, str):
            yield Access(node, receiver, value, False, style, token)
        elif value is UNKNOWN:
            known = self.folder.prefix(expression)
            if known.startswith("__"):
                yield Access(node, receiver, known, False, style, token, partial=True)
            else:
                yield Access(node, receiver, None, False, style, token)

    # -- sizes ----------------------------------------------------------------------------------
    def size(self, node: nodes.Node | None) -> int | None:
        """A lower bound on the length (characters or items) of what ``node`` evaluates to, or
        None when nothing is known. Widths count as sizes: ``|center(n)`` is at least n long."""
        if node is None:
            return None
        key = id(node)
        if key in self._sizes:
            return self._sizes[key]
        if key in self._sizing:
            return None
        self._sizing.add(key)
        try:
            result = self._size(node)
        except RecursionError:
            result = None  # nested deeper than Python recurses: nothing is known about it
        finally:
            self._sizing.discard(key)
        self._sizes[key] = result
        return result

    def _size(self, node: nodes.Node) -> int | None:
        value = self.fold(node)
        if isinstance(value, (str, list, tuple, dict)):
            return len(value)
        if value is not UNKNOWN:
            return None
        if isinstance(node, nodes.Name):
            expressions = self.assigned_values(node.name) if node.ctx == "load" else None
            sizes = [self.size(expression) for expression in expressions or ()]
            return min(sizes) if sizes and None not in sizes else None
        if isinstance(node, nodes.Mul):
            return self.repetition(node)[2]
        if isinstance(node, (nodes.Add, nodes.Concat)):
            parts = [node.left, node.right] if isinstance(node, nodes.Add) else node.nodes
            if isinstance(node, nodes.Add) and not any(self.sequence_like(part) for part in parts):
                return None
            sizes = [self.size(part) for part in parts]
            known = [size for size in sizes if size is not None]
            return sum(known) if known else None
        if isinstance(node, nodes.Call):
            return self._call_size(node)
        if isinstance(node, nodes.Filter):
            return self._filter_size(node)
        if isinstance(node, nodes.Mod):
            template = self.fold(node.left)
            if isinstance(template, str):
                return format_widths(template, brace=False) or None
        return None

    def repetition(self, node: nodes.Mul) -> tuple[nodes.Node | None, int | None, int | None]:
        """(repeated operand, count, size) of ``sequence * count``; Nones when it is not one."""
        for sequence, count_node in ((node.left, node.right), (node.right, node.left)):
            count = self.fold(count_node)
            if type(count) is not int:
                continue
            size = self.size(sequence)
            if size is not None:
                return sequence, count, size * max(count, 0)
            if self.sequence_like(sequence):
                return sequence, count, max(count, 0)
        return None, None, None

    def sequence_like(self, node: nodes.Node, depth: int = 0) -> bool:
        """Whether an expression is evidently a string or a list (not a number)."""
        if depth > 8:
            return False
        value = self.fold(node)
        if value is not UNKNOWN:
            return isinstance(value, (str, list, tuple))
        if isinstance(node, (nodes.Concat, nodes.List, nodes.Tuple)):
            return True
        if isinstance(node, nodes.Filter):
            return node.name in _SEQUENCE_FILTERS
        if isinstance(node, nodes.Add):
            return self.sequence_like(node.left, depth + 1) or self.sequence_like(node.right, depth + 1)
        if isinstance(node, nodes.Name) and node.ctx == "load":
            expressions = self.assigned_values(node.name)
            return bool(expressions) and all(self.sequence_like(expression, depth + 1) for expression in expressions)
        return False

    def argument(self, node: nodes.Call | nodes.Filter, position: int, keyword: str, default: Any = UNKNOWN) -> Any:
        """The folded value of a call's argument, given by position or keyword; ``default`` when
        the call leaves it out (``UNKNOWN`` when it is there but not constant)."""
        if len(node.args) > position:
            return self.fold(node.args[position])
        value = _keyword(node, keyword)
        if value is None:
            return UNKNOWN if node.dyn_args is not None or node.dyn_kwargs is not None else default
        return self.fold(value)

    def _call_size(self, node: nodes.Call) -> int | None:
        callee = node.node
        if isinstance(callee, nodes.Name) and not self.is_bound(callee.name):
            if callee.name == "range" and not node.kwargs:
                args = [self.fold(arg) for arg in node.args]
                try:
                    return _range_length(*args)
                except (TypeError, ValueError):
                    return None
            if callee.name == "lipsum":
                count, most = self.argument(node, 0, "n", 5), self.argument(node, 3, "max", 100)
                if type(count) is int and type(most) is int:
                    # Up to ``max`` words per paragraph, about seven characters per word.
                    return max(count, 0) * max(most, 0) * 7
            return None
        if isinstance(callee, nodes.Getattr):
            if callee.attr in ("center", "ljust", "rjust", "zfill"):
                width = self.argument(node, 0, "width")
                return width if type(width) is int else None
            if callee.attr == "format":
                template = self.fold(callee.node)
                widths = format_widths(template, brace=True) if isinstance(template, str) else 0
                return widths + len(template) if widths else None
        return None

    def _filter_size(self, node: nodes.Filter) -> int | None:
        if node.node is None:
            return None
        if node.name in ("list", "reverse", "sort", "string", "safe", "e", "escape", "unique"):
            return self.size(node.node)
        if node.name in ("center", "indent"):
            width = self.argument(node, 0, "width", 80 if node.name == "center" else 4)
            return width if type(width) is int else len(width) if isinstance(width, str) else None
        if node.name in ("batch", "slice"):
            count = self.argument(node, 0, "linecount" if node.name == "batch" else "slices")
            return count if type(count) is int else None
        if node.name == "tojson":
            indent = self.argument(node, 1, "indent", None)
            return indent if type(indent) is int else None
        if node.name == "format":
            template = self.fold(node.node)
            if isinstance(template, str):
                # '%*s' takes its width from the arguments.
                stars = sum(abs(arg) for arg in map(self.fold, node.args) if type(arg) is int) if "*" in template else 0
                return (format_widths(template, brace=False) + stars) or None
        if node.name == "join":
            items, separator = self.size(node.node), self.argument(node, 0, "d", "")
            if items is not None and isinstance(separator, str):
                return max(items - 1, 0) * len(separator)
        return None

    # -- locating tokens ------------------------------------------------------------------------
    # Jinja nodes carry a line but no column. Findings are placed on the token that spells what
    # they are about: the first matching token at or after the node's line that no earlier finding
    # of the rule has claimed, or, for statements, the statement keyword with the same ordinal.

    @cached_property
    def _significant(self) -> list[int]:
        """Indexes of the tokens that are not whitespace or comments."""
        skipped = ("whitespace", "comment_begin", "comment", "comment_end")
        return [index for index, token in enumerate(self.target.tokens) if token.type not in skipped]

    @cached_property
    def _neighbours(self) -> dict[int, tuple[Token | None, Token | None]]:
        """For each significant token index: the significant tokens before and after it."""
        tokens, order = self.target.tokens, self._significant
        return {
            index: (tokens[order[at - 1]] if at else None, tokens[order[at + 1]] if at + 1 < len(order) else None)
            for at, index in enumerate(order)
        }

    def is_call_site(self, index: int) -> bool:
        """Whether the name token at ``index`` is called (``name(``) rather than defined there."""
        before, after = self._neighbours.get(index, (None, None))
        return after is not None and after.value == "(" and not (before is not None and before.value == "macro")

    @cached_property
    def _keywords(self) -> dict[str, list[int]]:
        """Token indexes of statement keywords (the name right after ``{%``), by keyword."""
        found: dict[str, list[int]] = defaultdict(list)
        for index, (before, _after) in self._neighbours.items():
            token = self.target.tokens[index]
            if token.type == "name" and before is not None and before.type == "block_begin":
                found[token.value].append(index)
        return found

    def statement_token(
        self, node: nodes.Node, keyword: str, kinds: tuple[type, ...], *, after: bool = False
    ) -> Token | None:
        """The keyword token of a statement node: the n-th ``keyword`` of the template for the
        n-th node of ``kinds`` in source order (``{% for %}`` opens exactly one For node). With
        ``after``, the token following the keyword instead (an assignment's target)."""
        ordinal = next((at for at, other in enumerate(self.nodes_of(*kinds)) if other is node), None)
        indexes = self._keywords.get(keyword, [])
        if ordinal is None or ordinal >= len(indexes):
            return None
        index = indexes[ordinal]
        if after:
            return self._neighbours[index][1]
        return self.target.tokens[index]

    def locate(
        self, line: int, kind: str, text: str, claimed: set[int], accept: Callable[[int], bool] | None = None
    ) -> Token | None:
        """The first token at or after ``line`` of type ``kind`` that spells ``text`` (a string
        token matches by its decoded value too, so ``'\\x5f_class__'`` is found as ``__class__``)
        and that ``accept`` (given the token's index) allows, preferring one no earlier finding
        has claimed."""
        start = bisect_left(self._token_lines, line)
        fallback = None
        for index in range(start, len(self.target.tokens)):
            token = self.target.tokens[index]
            if token.type != kind or (accept is not None and not accept(index)):
                continue
            if kind == "string":
                matches = text in token.value or _decode_string_token(token.value) == text
            else:
                matches = token.value == text
            if matches:
                if token.offset not in claimed:
                    return token
                fallback = fallback or token
        return fallback


# Filters whose result is always a string or a list.
_SEQUENCE_FILTERS = frozenset({
    "string", "join", "list", "trim", "upper", "lower", "title", "capitalize", "replace", "format",
    "indent", "center", "tojson", "e", "escape", "safe", "reverse", "sort", "unique", "striptags",
    "truncate", "wordwrap", "urlencode",
})


def _is_const(node: nodes.Node, value: Any) -> bool:
    return isinstance(node, nodes.Const) and node.value == value


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


def _attr_filter_literal(access: Access) -> bool:
    """Whether an access is ``|attr('literal name')`` (a method fetched without writing it)."""
    return access.literal and access.style == "attribute" and isinstance(access.node, nodes.Filter)


def _keyword(node: nodes.Call | nodes.Filter, key: str) -> nodes.Node | None:
    for keyword in node.kwargs:
        if keyword.key == key:
            return keyword.value
    return None


def _unpack(target: nodes.Node, value: nodes.Node) -> Iterator[tuple[nodes.Name, nodes.Node]]:
    """(name, expression) pairs of an assignment whose value can be matched to its targets."""
    if isinstance(target, nodes.Name):
        yield target, value
    elif isinstance(target, nodes.Tuple) and isinstance(value, (nodes.Tuple, nodes.List)):
        if len(target.items) != len(value.items):
            return
        for item, item_value in zip(target.items, value.items):
            yield from _unpack(item, item_value)


def facts_for(target: LintTarget) -> _Facts:
    """The shared facts of a target (computed on first use; every TK9xx rule reads the same).

    Kept on the target itself: the facts refer back to the target, so a weak-keyed table would
    keep every target ever linted (its tokens, tree and renders) alive for the whole run.
    """
    return target.shared("security:facts", _Facts)


# ---------------------------------------------------------------------------------------------
# the rules


class _SecurityRule(AstRule):
    """Shared plumbing: the target's facts, and findings placed on the exact token."""

    severity = "error"

    def check(self, target: LintTarget) -> list:
        if target.tree is None:
            return []
        self.facts = facts_for(target)
        self._claimed: set[int] = set()
        self.target = target
        self.found = []
        self.inspect(target.tree)
        return self.found

    def inspect(self, tree: nodes.Template) -> None:
        """Find this rule's problems in ``tree`` (by default: walk it with ``visit_*`` methods)."""
        self.visit(tree)

    def report_token(
        self, node: nodes.Node, message: str, kind: str, text: str, accept: Callable[[int], bool] | None = None
    ) -> None:
        """Report at the token spelling ``text`` for ``node`` (see ``_Facts.locate``)."""
        line = getattr(node, "lineno", 1) or 1
        self.report_at(node, message, self.facts.locate(line, kind, text, self._claimed, accept))

    def report_at(self, node: nodes.Node, message: str, token: Token | None) -> None:
        """Report at ``token``, or at the start of the node's line when it could not be found."""
        if token is None:
            self.report(node, message)
            return
        self._claimed.add(token.offset)
        self.report(node, message, line=token.line, column=token.column)


@register
class UnderscoreAttributeAccess(_SecurityRule):
    """Reaches an underscore or dunder attribute (`__class__`, `__globals__`, `_private`).

    Why: Every Jinja sandbox escape starts by stepping from an ordinary value to a Python
    internal: `''.__class__.__mro__`, `cycler.__init__.__globals__`, `self._TemplateReference__context`.
    Chat templates only read message fields, so a name that starts with an underscore is either a
    probe or a payload. transformers' sandbox refuses the step (it renders as an empty string or
    raises), but engines without a sandbox run it, and the template is unsafe to publish either
    way. Item lookups (`x['__globals__']`) are flagged for dunder names only, since a data key may
    start with a single underscore; namespace attributes may not start with one at all
    (transformers raises SecurityError).

    Bad:
        {{ messages.__class__.__mro__ }}

    Good:
        {{ messages[0]['content'] }}
    """

    code = "TK901"
    name = "underscore-attribute-access"

    def inspect(self, tree: nodes.Template) -> None:
        for access in self.facts.accesses:
            if not access.literal or not access.name or not access.name.startswith("_"):
                continue
            if access.style == "store":
                message = (
                    f"namespace attribute '{access.name}' starts with an underscore: transformers' "
                    "namespace refuses it with a SecurityError, and it is how sandbox internals are named"
                )
            elif access.style == "attribute":
                message = (
                    f"attribute '{access.name}' is {_danger(access.name)}: reaching Python internals is "
                    "the first step of every sandbox escape, and no chat template needs it"
                )
            elif access.name.startswith("__") or _MANGLED.match(access.name):
                kind = "item" if access.style == "item" else "attribute path part"
                message = (
                    f"{kind} '{access.name}' names a Python internal: the sandbox falls back to the "
                    "attribute of that name when no such key exists, which is how escapes are spelled as lookups"
                )
            else:
                continue
            self.report_token(access.node, message, *access.token)


@register
class GadgetGlobalAccess(_SecurityRule):
    """Reaches into a template global that leads back to Python (`cycler`, `lipsum`, `self` ...).

    Why: Jinja's globals `cycler`, `joiner`, `namespace`, `lipsum`, `range`, `dict` and `self` are
    real Python objects; their attributes (`lipsum.__globals__`, `cycler.__init__`,
    `self._TemplateReference__context`) are the published starting points of Jinja SSTI payloads.
    A chat template only ever calls them (`namespace(found=false)`, `range(3)`,
    `dict.fromkeys(...)`, which transformers provides). Reading their attributes, subscripting
    them, or passing them around as values (`{% set f = lipsum %}`, `lipsum|string`) is a probe.

    Bad:
        {{ cycler.__init__.__globals__.os.popen('id').read() }}

    Good:
        {% set ns = namespace(found=false) %}{% set ns.found = true %}
    """

    code = "TK902"
    name = "gadget-global-access"

    def inspect(self, tree: nodes.Template) -> None:
        for node in self.facts.nodes_of(nodes.Name):
            self._check_name(node)

    def _check_name(self, node: nodes.Name) -> None:
        if node.ctx != "load" or node.name not in GADGET_GLOBALS or self.facts.is_bound(node.name):
            return
        parent = self.facts.parents.get(id(node))
        what = GADGET_GLOBALS[node.name]
        if isinstance(parent, nodes.Call) and parent.node is node:
            return  # calling the global is its purpose (namespace(...), range(...), lipsum(...))
        if isinstance(parent, nodes.Test):
            return  # `lipsum is defined` reads nothing from the object
        attribute = _reached_attribute(parent, node)
        if attribute is not None:
            if attribute in _GADGET_API.get(node.name, ()) or (node.name == "self" and attribute in self.facts.blocks):
                return
            reached = f"{node.name}{_describe(parent, attribute)}"
            if node.name == "dict" and not attribute.startswith("_"):
                message = (
                    f"'{reached}' does not exist: transformers' dict offers only dict(...) and dict.fromkeys(...), "
                    f"so this raises at render time; reaching into '{node.name}' ({what}) is otherwise a sandbox-escape step"
                )
            else:
                message = f"'{node.name}' is {what}; reaching into it ('{reached}') is how sandbox-escape payloads begin"
        else:
            message = (
                f"'{node.name}' is {what}; using it as a value instead of calling it "
                "(aliasing, printing, filtering it) is how payloads hide the object they reach into"
            )
        self.report_token(node, message, "name", node.name)


def _reached_attribute(parent: nodes.Node | None, node: nodes.Node) -> str | None:
    """The attribute or item name ``parent`` reads from ``node`` ('?' when computed), or None when
    ``parent`` does not read from it."""
    if isinstance(parent, nodes.Getattr) and parent.node is node:
        return parent.attr
    if isinstance(parent, nodes.Getitem) and parent.node is node:
        return parent.arg.value if isinstance(parent.arg, nodes.Const) and isinstance(parent.arg.value, str) else "?"
    if isinstance(parent, nodes.Filter) and parent.node is node and parent.name == "attr":
        argument = parent.args[0] if parent.args else None
        return argument.value if isinstance(argument, nodes.Const) and isinstance(argument.value, str) else "?"
    return None


def _describe(parent: nodes.Node | None, attribute: str) -> str:
    if isinstance(parent, nodes.Getattr):
        return f".{attribute}"
    if isinstance(parent, nodes.Filter):
        return f"|attr('{attribute}')" if attribute != "?" else "|attr(...)"
    return f"['{attribute}']" if attribute != "?" else "[...]"


# Filters that return a generator: ``|string`` of one prints '<generator object select_or_reject
# at 0x...>', a string whose only use is to pick characters ('_') out of it for building names.
_GENERATOR_FILTERS = frozenset({"select", "reject", "selectattr", "rejectattr", "map", "batch", "slice"})
_STRINGIFYING_FILTERS = frozenset({"string", "pprint", "e", "escape", "safe"})


@register
class ComputedAttributeName(_SecurityRule):
    """Builds an attribute name at render time instead of writing it (`|attr('__cla' ~ 'ss__')`).

    Why: Reviewers and filters look for `__class__`; payloads therefore assemble it:
    `'__cla' ~ 'ss__'`, `['_','_class__']|join`, `'%c%c'|format(95, 95)`, `'__SSALC__'|lower|reverse`,
    `'{}'.format(...)`, names kept in `{% set %}` variables. This rule evaluates such constant
    expressions and reports the ones that produce a private, dunder, interpreter-internal, format
    or mutating name. `|attr()` with a name computed from data is reported too: real templates
    write attribute names literally. Stringifying a generator (`()|select|string`) is reported as
    well, since its text is only useful as a source of characters such as `_` for these names.

    Bad:
        {{ ''|attr('__cla' ~ 'ss__') }}

    Good:
        {{ message|attr('content') }}
    """

    code = "TK903"
    name = "computed-attribute-name"

    def inspect(self, tree: nodes.Template) -> None:
        for access in self.facts.accesses:
            if access.literal:
                continue
            where = {"attribute": "attribute name", "item": "subscript", "path": "attribute path"}.get(access.style, "name")
            if access.name is None:
                if access.style != "attribute":
                    continue  # x[key] with a data-driven key is ordinary data access
                message = (
                    "the attribute name given to |attr is computed at render time; real templates name "
                    "attributes literally, and computing one is how '__class__' is smuggled past review"
                )
            elif access.partial:
                message = f"the {where} is built to start with '{access.name}', which makes it a Python dunder"
            else:
                danger = _danger(access.name, access.style)
                if danger is None:
                    continue
                message = f"the {where} is assembled from constants and evaluates to '{access.name}', {danger}"
            self.report_token(access.node, message, *access.token)
        for node in self.facts.nodes_of(nodes.Filter, nodes.Concat):
            if isinstance(node, nodes.Filter) and node.name in _STRINGIFYING_FILTERS and _is_generator(node.node):
                self.report_token(
                    node,
                    f"|{node.name} of a generator prints '<generator object ...>'; its only use is mining "
                    "characters such as '_' to assemble hidden attribute names",
                    "name",
                    node.name,
                )
            elif isinstance(node, nodes.Concat):
                for part in node.nodes:
                    if _is_generator(part):
                        self.report_token(
                            part,
                            "concatenating a generator with ~ prints '<generator object ...>'; its only use is "
                            "mining characters such as '_' to assemble hidden attribute names",
                            "operator",
                            "~",
                        )


def _is_generator(node: nodes.Node | None) -> bool:
    return isinstance(node, nodes.Filter) and node.name in _GENERATOR_FILTERS


@register
class FormatMethodCall(_SecurityRule):
    """Calls `.format()` with a format string that is not a plain literal, or `.format_map()`.

    Why: `str.format` reads attributes and items of its arguments, so a format string such as
    `'{0.__class__.__init__.__globals__}'` is the oldest server-side template injection there is;
    when the format string comes from data, the data decides what is read. Jinja's sandbox wraps
    `str.format`, but engines without the sandbox do not. A literal with plain fields
    (`'<tool_call{}>'.format(suffix)`, as some real templates do) is harmless and not reported;
    a computed format string, a field that reads an attribute or item, `.format_map()`,
    `|attr('format')` and `['format'](...)` (a string has no such item, so Jinja fetches the
    method) are.

    Bad:
        {{ message.content.format(messages) }}

    Good:
        {{ '<|{}|>'.format(message.role) }}
    """

    code = "TK904"
    name = "format-method-call"

    def inspect(self, tree: nodes.Template) -> None:
        for call in self.facts.nodes_of(nodes.Call):
            callee = call.node
            if isinstance(callee, nodes.Getattr) and callee.attr in FORMAT_METHODS:
                problem = self._problem(callee)
                if problem:
                    self.report_token(callee, problem, "name", callee.attr)
        for access in self.facts.accesses:
            if _attr_filter_literal(access) and access.name in FORMAT_METHODS:
                self.report_token(
                    access.node,
                    f"|attr('{access.name}') fetches str.{access.name} without writing '.{access.name}(', "
                    "which only hides a format-string call",
                    *access.token,
                )
            elif access.style == "item" and not access.partial and self._called(access.node):
                # Jinja falls back to the attribute when a string has no such item, so
                # s['format'](...) is s.format(...); a data key called 'format' is never callable.
                if access.name in FORMAT_METHODS:
                    how = "written" if access.literal else "computed"
                    self.report_token(
                        access.node,
                        f"the subscript ['{access.name}'] ({how} as a key) fetches str.{access.name} from a string "
                        f"and calls it without writing '.{access.name}(', which only hides a format-string call",
                        *access.token,
                    )
                elif access.name is None and isinstance(self.facts.fold(access.receiver), str):
                    # A string's items are characters, never callable: calling s[key] can only
                    # call a method the key names. (A list of macros called by index is real use.)
                    self.report_token(
                        access.node,
                        "calls what a subscript of a string with a key computed at render time fetches: a "
                        "string's characters are not callable, so the key names a method, and 'format' "
                        "fetches str.format, the format-string injection vector",
                        *access.token,
                    )

    def _called(self, node: nodes.Node) -> bool:
        parent = self.facts.parents.get(id(node))
        return isinstance(parent, nodes.Call) and parent.node is node

    def _problem(self, callee: nodes.Getattr) -> str | None:
        if callee.attr == "format_map":
            return (
                ".format_map() formats with attribute and item lookups into a mapping; chat templates have "
                "no use for it and it is a template-injection vector"
            )
        template = self.facts.fold(callee.node)
        if template is UNKNOWN:
            return (
                "the format string of .format() is not a literal: a format string that comes from data can "
                "read attributes of the arguments ('{0.__class__}'), the classic template-injection vector"
            )
        if not isinstance(template, str):
            return None
        try:
            fields = _format_fields(template)
        except ValueError:
            return None  # a malformed format string fails at render time; that is not an injection
        for field, _spec in fields:
            if "." in field or "[" in field:
                return (
                    f"the format string reads an attribute or item of its argument ('{{{field}}}'), which is "
                    "how format-string injection reaches Python internals"
                )
        return None


@register
class MutatingMethodCall(_SecurityRule):
    """Calls a method that changes a list, dict or set in place (`.append()`, `.update()`, `.pop()` ...).

    Why: transformers renders chat templates in `ImmutableSandboxedEnvironment`, which refuses every
    in-place mutation with `SecurityError: access to attribute 'append' of 'list' object is
    unsafe`. A template that mutates therefore fails in transformers whenever that line runs
    (usually only with tools or an unusual first message, so it ships unnoticed), while engines
    without the sandbox accept it; in a template written to probe the sandbox it is a test of
    which kind of engine is running it. Build a new value instead: a namespace attribute and
    concatenation (`{% set ns.ids = ns.ids + [id] %}`), or filters.

    Bad:
        {% set ns = namespace(ids=[]) %}{% set _ = ns.ids.append(1) %}

    Good:
        {% set ns = namespace(ids=[]) %}{% set ns.ids = ns.ids + [1] %}
    """

    code = "TK905"
    name = "mutating-method-call"

    _KINDS = {
        "append": "list", "extend": "list", "insert": "list", "sort": "list", "reverse": "list",
        "update": "dict or set", "setdefault": "dict", "popitem": "dict", "add": "set", "discard": "set",
        "pop": "list or dict", "remove": "list or set", "clear": "list, dict or set",
    }

    def inspect(self, tree: nodes.Template) -> None:
        for call in self.facts.nodes_of(nodes.Call):
            callee = call.node
            if isinstance(callee, nodes.Getattr) and callee.attr in MUTATING_METHODS:
                self.report_token(callee, self._message(callee.attr), "name", callee.attr)
        for access in self.facts.accesses:
            if _attr_filter_literal(access) and access.name in MUTATING_METHODS:
                self.report_token(access.node, self._message(access.name, via_attr=True), *access.token)

    def _message(self, method: str, via_attr: bool = False) -> str:
        kind = self._KINDS.get(method, "container")
        spelled = f"|attr('{method}')" if via_attr else f".{method}()"
        return (
            f"{spelled} changes a {kind} in place; transformers' immutable sandbox refuses it "
            f"(SecurityError: access to attribute '{method}' ... is unsafe), so this fails whenever it runs; "
            "build a new value instead ({% set ns.items = ns.items + [item] %})"
        )


# ---------------------------------------------------------------------------------------------
# TK906 invisible characters

_BIDI_EMBEDDINGS = frozenset("\u202a\u202b\u202d\u202e")  # closed by U+202C
_BIDI_ISOLATES = frozenset("\u2066\u2067\u2068")  # closed by U+2069
_BIDI_CONTROLS = _BIDI_EMBEDDINGS | _BIDI_ISOLATES | frozenset("\u202c\u2069\u200e\u200f\u061c")
# Letters that render as nothing: the Hangul fillers are the usual "invisible identifier" trick.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _invisible_kind(char: str) -> str | None:
    """'bidi', 'tag', 'selector' or 'invisible' for a character a reader cannot see; None otherwise."""
    if char in _BIDI_CONTROLS:
        return "bidi"
    code = ord(char)
    if 0xE0000 <= code <= 0xE007F:
        return "tag"
    if 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:
        return "selector"
    if char in _INVISIBLE_LETTERS or unicodedata.category(char) == "Cf":
        return "invisible"
    return None


def _emoji_like(char: str) -> bool:
    code = ord(char)
    return unicodedata.category(char) in ("So", "Sk") or 0x1F000 <= code <= 0x1FAFF or 0xFE00 <= code <= 0xFE0F


def _script_letter(char: str) -> bool:
    return not char.isascii() and unicodedata.category(char)[0] in "LM"


def _legitimate(text: str, index: int, run: tuple[int, int], *, template_start: bool = True) -> bool:
    """Invisible characters that real text needs: a byte-order mark at the very start of the
    template (``template_start``: ``text`` is the template, not a decoded literal), joiners
    inside emoji sequences and non-Latin words (Persian, Indic scripts), a single variation
    selector after its base character, and the tag characters of a subdivision flag emoji."""
    char = text[index]
    start, end = run
    if char == "\ufeff" and index == 0:
        return template_start
    if char in "\u200c\u200d" and 0 < index < len(text) - 1:
        before, after = text[index - 1], text[index + 1]
        return (_emoji_like(before) and _emoji_like(after)) or (_script_letter(before) and _script_letter(after))
    if 0xFE00 <= ord(char) <= 0xFE0F or 0xE0100 <= ord(char) <= 0xE01EF:
        return end - start == 1 and start > 0
    if 0xE0000 <= ord(char) <= 0xE007F:
        # A flag such as England's is U+1F3F4, lowercase tag letters, then CANCEL TAG (U+E007F).
        body = text[start:end]
        return (
            start > 0 and text[start - 1] == "\U0001f3f4" and body.endswith("\U000e007f")
            and all(0xE0030 <= ord(c) <= 0xE0039 or 0xE0061 <= ord(c) <= 0xE007A for c in body[:-1])
        )
    return False


def _runs(text: str) -> Iterator[tuple[int, int]]:
    """Maximal runs of adjacent invisible characters, as (start, end) offsets."""
    start = end = -1
    for match in _NON_ASCII.finditer(text):
        index = match.start()
        if _invisible_kind(text[index]) is None:
            continue
        if index == end:
            end += 1
            continue
        if start >= 0:
            yield start, end
        start, end = index, index + 1
    if start >= 0:
        yield start, end


def _unbalanced_bidi(comment: str) -> set[int]:
    """Offsets of embedding, override and isolate controls a comment opens but does not close;
    they keep reordering the line after the comment ends (the Trojan Source attack)."""
    embeddings: list[int] = []
    isolates: list[int] = []
    for index, char in enumerate(comment):
        if char in _BIDI_EMBEDDINGS:
            embeddings.append(index)
        elif char == "\u202c" and embeddings:
            embeddings.pop()
        elif char in _BIDI_ISOLATES:
            isolates.append(index)
        elif char == "\u2069" and isolates:
            isolates.pop()
    return set(embeddings) | set(isolates)


def _name_of(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed format character')}"


def _describe_run(chars: str) -> str:
    """'U+200B ZERO WIDTH SPACE' for one character; a summary for runs, decoding tag text."""
    if len(chars) == 1:
        return f"invisible character {_name_of(chars)}"
    if all(0xE0020 <= ord(c) <= 0xE007E for c in chars):
        hidden = "".join(chr(ord(c) - 0xE0000) for c in chars)
        shown = hidden if len(hidden) <= 60 else hidden[:57] + "..."
        return f"{len(chars)} tag characters (U+E0000 block) that spell the hidden text {shown!r}"
    distinct = list(dict.fromkeys(chars))
    listed = ", ".join(_name_of(c) for c in distinct[:3]) + (", ..." if len(distinct) > 3 else "")
    return f"{len(chars)} invisible characters in a row ({listed})"


@register
class InvisibleCharacter(Rule):
    r"""Contains invisible or bidirectional-control characters (U+200B, U+202E, U+E0041 ...).

    Why: Zero-width characters, bidi controls, tag characters (U+E0000-U+E007F) and other format
    characters are invisible in editors and on the Hub, yet the template emits them into every
    prompt. That is how instructions are hidden from a reviewer (tag characters spell ASCII text
    the model reads but no one sees), how a role marker is made to look right while matching
    nothing, and how source is made to display in a different order than it runs (Trojan
    Source). The finding names each code point and its column. Comments are exempt because they
    are never emitted, except for bidi controls a comment leaves open, which reorder the code
    after it. Joiners inside emoji and non-Latin words, a single variation selector, a leading
    byte-order mark and flag tag sequences are left alone. Escapes in string literals
    (`'\u200b'`) are decoded and checked too.

    Bad:
        {{ 'You are a helpful assistant.\u200b' }}

    Good:
        {{ 'You are a helpful assistant.' }}
    """

    code = "TK906"
    name = "invisible-character"
    severity = "error"
    needs_tree = False

    def check(self, target: LintTarget) -> list:
        text = target.text
        tokens = target.tokens
        starts = [token.offset for token in tokens]
        comments = [token for token in tokens if token.type == "comment"]
        open_bidi = {token.offset + index for token in comments for index in _unbalanced_bidi(token.value)}
        found = []
        for start, end in _runs(text):
            flagged = [
                index for index in range(start, end)
                if not _legitimate(text, index, self._kind_run(text, index, start, end))
                and (not self._in(comments, index) or index in open_bidi)
            ]
            for group in _consecutive(flagged):
                chars = text[group[0]:group[-1] + 1]
                line, column = target.position(group[0])
                where = self._where(tokens, starts, group[0])
                message = f"{_describe_run(chars)} {where}"
                if any(c in _BIDI_CONTROLS for c in chars):
                    message += "; bidi controls make the source display in a different order than it runs"
                found.append(self.diagnostic(line, column, message))
        found.extend(self._escaped(target))
        return found

    @staticmethod
    def _kind_run(text: str, index: int, start: int, end: int) -> tuple[int, int]:
        """The sub-run of characters of the same kind as ``text[index]`` (a variation selector
        after a zero-width joiner is judged with the selectors, not with the joiner)."""
        kind = _invisible_kind(text[index])
        low = index
        while low > start and _invisible_kind(text[low - 1]) == kind:
            low -= 1
        high = index + 1
        while high < end and _invisible_kind(text[high]) == kind:
            high += 1
        return low, high

    @staticmethod
    def _in(comments: list[Token], offset: int) -> bool:
        return any(token.offset <= offset < token.end for token in comments)

    @staticmethod
    def _where(tokens: list[Token], starts: list[int], offset: int) -> str:
        position = bisect_right(starts, offset) - 1
        kind = tokens[position].type if position >= 0 and tokens[position].end > offset else "data"
        return {
            "data": "in template text, which is emitted into every prompt: the model reads it, a reviewer does not see it",
            "string": "in a string literal: the template emits or compares text a reviewer cannot see",
            "comment": "in a comment",
        }.get(kind, "inside a tag, where it hides what the code says")

    def _escaped(self, target: LintTarget) -> Iterator:
        """String literals that spell invisible characters as escapes ('\\u200b', '\\U000e0041')."""
        for token in target.tokens:
            if token.type != "string" or "\\" not in token.value:
                continue
            # Characters present literally are reported by the scan of the text; decode the rest.
            visible = "".join(char for char in token.value if _invisible_kind(char) is None)
            decoded = _decode_string_token(visible)
            if not decoded:
                continue
            flagged = [
                index for start, end in _runs(decoded) for index in range(start, end)
                if not _legitimate(decoded, index, self._kind_run(decoded, index, start, end), template_start=False)
            ]
            if flagged:
                chars = "".join(decoded[index] for index in flagged)
                yield self.diagnostic(
                    token.line, token.column,
                    f"string literal spells {_describe_run(chars)} as an escape sequence: the template emits or "
                    "compares text a reviewer cannot see",
                )


def _consecutive(indexes: list[int]) -> Iterator[list[int]]:
    group: list[int] = []
    for index in indexes:
        if group and index != group[-1] + 1:
            yield group
            group = []
        group.append(index)
    if group:
        yield group


# ---------------------------------------------------------------------------------------------
# TK907-TK909 resource exhaustion


@register
class OversizedValue(_SecurityRule):
    """Builds a huge value from constants (`range(10 ** 6)`, `'a' * 1000000`, `|indent(99999)`, `9 ** 9 ** 9`).

    Why: A template that builds a million-element range, a megabyte string, a line padded to a
    hundred thousand spaces, a thousand lorem-ipsum paragraphs or a number with millions of
    digits does nothing a prompt needs; it is a denial-of-service payload. transformers' sandbox
    caps only `range` (at 100,000); `minja` and other engines cap nothing, and the CVEs in the
    catalogue (class 34) are exactly this. The rule reports the expression where a constant size
    first crosses `max-size` (characters, items or digits): range literals, repetition with `*`,
    concatenations, `|center`, `|indent`, `|format` and `.format` widths, `|batch`/`|slice`
    counts, `|tojson(indent=...)`, `lipsum(n)` and `**`.

    Bad:
        {{ '=' * 1000000 }}

    Good:
        {{ '=' * 80 }}
    """

    code = "TK907"
    name = "oversized-value"
    options = RuleOptions({"max-size": WholeNumber(10_000, minimum=1)})

    _ORIGINS = (nodes.Mul, nodes.Add, nodes.Concat, nodes.Mod, nodes.Call, nodes.Filter, nodes.Pow)

    def inspect(self, tree: nodes.Template) -> None:
        self.limit = int(self.settings["max-size"])
        for node in self.facts.nodes_of(*self._ORIGINS):
            if isinstance(node, nodes.Pow):
                self._check_power(node)
                continue
            size = self.facts.size(node)
            if size is None or size < self.limit:
                continue
            if any((self.facts.size(operand) or 0) >= self.limit for operand in _operands(node)):
                continue  # an operand is already that large; the finding belongs to it
            message, kind, text = self._describe(node, size)
            self.report_token(node, message, kind, text)

    def _check_power(self, node: nodes.Pow) -> None:
        base, exponent = self.facts.fold(node.left), self.facts.fold(node.right)
        if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2 or exponent <= 0:
            return
        digits = exponent * math.log10(abs(base))
        if digits >= self.limit:
            self.report_token(
                node,
                f"'**' builds an integer of about {digits:,.0f} digits (max-size {self.limit:,}); "
                "computing and printing it stalls every engine",
                "operator",
                "**",
            )

    def _describe(self, node: nodes.Node, size: int) -> tuple[str, str, str]:
        limit = f"(max-size {self.limit:,})"
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            if node.node.name == "range":
                return (
                    f"range(...) produces {size:,} numbers {limit}: transformers refuses ranges over 100,000 "
                    "and other engines build the whole list",
                    "name",
                    "range",
                )
            return f"lipsum(...) generates about {size:,} characters {limit}", "name", node.node.name
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            return f".{node.node.attr}(...) pads to at least {size:,} characters {limit}", "name", node.node.attr
        if isinstance(node, nodes.Filter):
            return f"|{node.name}(...) builds at least {size:,} characters or items {limit}", "name", node.name
        if isinstance(node, nodes.Mul):
            _sequence, count, _size = self.facts.repetition(node)
            return f"'*' repeats a string or list {count:,} times, to at least {size:,} elements {limit}", "operator", "*"
        if isinstance(node, nodes.Mod):
            return f"'%' formatting pads to at least {size:,} characters {limit}", "operator", "%"
        symbol = "~" if isinstance(node, nodes.Concat) else "+"
        return f"'{symbol}' builds a value of at least {size:,} characters or items {limit}", "operator", symbol


def _operands(node: nodes.Node) -> list[nodes.Node]:
    """The values an expression is computed from (a method call's receiver included)."""
    if isinstance(node, nodes.Call):
        callee = [node.node.node] if isinstance(node.node, nodes.Getattr) else []
        return callee + list(node.args) + [keyword.value for keyword in node.kwargs]
    if isinstance(node, nodes.Filter):
        return ([node.node] if node.node is not None else []) + list(node.args) + [keyword.value for keyword in node.kwargs]
    return list(node.iter_child_nodes())


@register
class LoopBlowup(_SecurityRule):
    """Loops whose work multiplies: nested constant bounds, or a value that doubles every iteration.

    Why: Each loop here may be small, but `range(5000)` inside `range(5000)` is 25 million
    iterations, a macro with a loop called from a loop multiplies the same way, and
    `{% set ns.s = ns.s ~ ns.s %}` in a loop of forty messages builds a string of 2^40
    characters. None of it renders a prompt; all of it hangs a server (catalogue class 34).
    The rule multiplies the constant bounds it can see (ranges, literal lists, repeated strings)
    through nested loops and macro calls and reports where the product first reaches
    `max-iterations`; loops over messages or tools are not counted, since their size is the
    caller's.

    Bad:
        {% for i in range(5000) %}{% for j in range(5000) %}.{% endfor %}{% endfor %}

    Good:
        {% for message in messages %}{% for part in message.content %}{{ part.text }}{% endfor %}{% endfor %}
    """

    code = "TK908"
    name = "loop-blowup"
    options = RuleOptions({"max-iterations": WholeNumber(1_000_000, minimum=1)})

    def inspect(self, tree: nodes.Template) -> None:
        self.limit = int(self.settings["max-iterations"])
        self._costs: dict[str, int] = {}
        # An explicit stack rather than NodeVisitor recursion: hostile templates nest deeper than
        # Python's recursion limit. Each entry carries the constant bounds of the enclosing loops
        # (None where unknown) and whether an enclosing loop was already reported.
        pending: list[tuple[nodes.Node, tuple[int | None, ...], bool]] = [(tree, (), False)]
        while pending:
            node, loops, quiet = pending.pop()
            if isinstance(node, nodes.Macro):
                # A macro body runs where it is called; on its own it starts with no enclosing loops.
                children = [(child, (), False) for child in child_nodes(self.target, node)]
            elif isinstance(node, nodes.For):
                inner = (*loops, self.facts.size(node.iter))
                reported = not quiet and self._check_nesting(node, inner)
                per_item = [*node.body, *([node.test] if node.test is not None else [])]
                children = [(node.iter, loops, quiet)]
                children += [(child, inner, quiet or reported) for child in per_item]
                children += [(child, loops, quiet) for child in node.else_]  # runs once, after the loop
            else:
                if isinstance(node, nodes.Call) and not quiet:
                    self._check_call(node, loops)
                elif isinstance(node, nodes.Assign) and loops:
                    self._check_doubling(node)
                children = [(child, loops, quiet) for child in child_nodes(self.target, node)]
            pending.extend(reversed(children))

    def _check_nesting(self, node: nodes.For, loops: tuple[int | None, ...]) -> bool:
        known = [count for count in loops if count is not None]
        product = math.prod(known)
        if len(known) < 2 or product < self.limit:
            return False
        self.report_at(
            node,
            f"nested loops with constant bounds run {product:,} iterations (max-iterations {self.limit:,})",
            self.facts.statement_token(node, "for", (nodes.For,)),
        )
        return True

    def _check_call(self, node: nodes.Call, loops: tuple[int | None, ...]) -> None:
        callee = node.node
        known = [count for count in loops if count is not None]
        if not known or not isinstance(callee, nodes.Name) or callee.name not in self.facts.macros:
            return
        product, cost = math.prod(known), self._cost(callee.name, frozenset())
        if cost > 1 and product * cost >= self.limit:
            self.report_token(
                callee,
                f"macro '{callee.name}' runs loops of {cost:,} iterations and is called inside loops of "
                f"{product:,}: {product * cost:,} iterations (max-iterations {self.limit:,})",
                "name",
                callee.name,
                self.facts.is_call_site,
            )

    def _check_doubling(self, node: nodes.Assign) -> None:
        if not isinstance(node.target, nodes.NSRef) or self._numeric(node.target):
            return
        copies = _copies(node.node, node.target)
        if copies >= 2:
            shown = f"{node.target.name}.{node.target.attr}"
            self.report_at(
                node,
                f"'{shown}' is rebuilt from {copies} copies of itself on every loop iteration, so its size "
                f"grows {copies}^iterations",
                self.facts.statement_token(node, "set", (nodes.Assign, nodes.AssignBlock), after=True),
            )

    def _numeric(self, target: nodes.NSRef) -> bool:
        """Whether the namespace attribute starts as a number (doubling a number is harmless)."""
        for expression in self.facts.assigned_values(target.name) or ():
            if isinstance(expression, nodes.Call) and _is_name(expression.node, "namespace"):
                initial = self.facts.fold(_keyword(expression, target.attr))
                if _is_number(initial):
                    return True
        return False

    def _cost(self, name: str, visiting: frozenset[str]) -> int:
        """The largest product of constant loop bounds that one call of macro ``name`` runs,
        through nested loops and the macros it calls."""
        if name in self._costs:
            return self._costs[name]
        if name in visiting:
            return 1  # recursion is TK909's business; count one level
        visiting = visiting | {name}
        best = 1
        pending = [(child, 1) for macro in self.facts.macros[name] for child in macro.body]
        while pending:
            node, product = pending.pop()
            if isinstance(node, nodes.Macro):
                continue  # a nested definition runs nothing
            if isinstance(node, nodes.For):
                inner = product * (self.facts.size(node.iter) or 1)
                best = max(best, inner)
                pending.append((node.iter, product))
                pending.extend((child, inner) for child in node.body)
                pending.extend((child, product) for child in node.else_)
                continue
            if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name in self.facts.macros:
                try:
                    best = max(best, product * self._cost(node.node.name, visiting))
                except RecursionError:
                    pass  # thousands of macros calling each other in a chain: count what was seen
            pending.extend((child, product) for child in node.iter_child_nodes())
        self._costs[name] = best
        return best


def _copies(expression: nodes.Node, target: nodes.NSRef, depth: int = 0) -> int:
    """How many copies of the namespace attribute ``target`` the new value contains."""
    if depth > 100:
        return 0  # an expression this deep is not a plain self-concatenation
    if isinstance(expression, nodes.Getattr) and isinstance(expression.node, nodes.Name):
        return int(expression.node.name == target.name and expression.attr == target.attr)
    if isinstance(expression, (nodes.Add, nodes.Concat, nodes.List, nodes.Tuple)):
        return sum(_copies(child, target, depth + 1) for child in expression.iter_child_nodes())
    if isinstance(expression, nodes.Mul):
        for value, factor in ((expression.left, expression.right), (expression.right, expression.left)):
            if isinstance(factor, nodes.Const) and type(factor.value) is int:
                return _copies(value, target, depth + 1) * max(factor.value, 0)
        return 0
    if isinstance(expression, nodes.CondExpr):
        branches = [branch for branch in (expression.expr1, expression.expr2) if branch is not None]
        return max(_copies(branch, target, depth + 1) for branch in branches)
    if isinstance(expression, nodes.Filter) and expression.name in ("string", "list", "join", "safe") and expression.node is not None:
        return _copies(expression.node, target, depth + 1)
    return 0


@register
class UnboundedRecursion(_SecurityRule):
    """A macro (or recursive loop) calls itself with no base case, or with unchanged arguments.

    Why: A macro that calls itself on every path, or two macros that call each other that way,
    never stop; neither does one that recurses with exactly the arguments it received, once its
    guard holds, nor a `recursive` loop that calls `loop()` on the very sequence it iterates.
    Python's recursion limit ends the render with an error in transformers, after deep stack
    use; other engines crash. Real templates recurse into JSON schemas (`render(schema.items)`)
    inside an `if` or a loop over the children; that is a base case and is not reported.

    Bad:
        {% macro walk(node) %}{{ walk(node.child) }}{% endmacro %}

    Good:
        {% macro walk(node) %}{% if node.child %}{{ walk(node.child) }}{% endif %}{% endmacro %}
    """

    code = "TK909"
    name = "unbounded-recursion"

    def inspect(self, tree: nodes.Template) -> None:
        edges: dict[str, list[tuple[str, nodes.Call]]] = defaultdict(list)
        for name, macros in self.facts.macros.items():
            for macro in macros:
                params = {arg.name for arg in macro.args}
                for callee, call, guarded in _macro_calls(macro.body):
                    if callee not in self.facts.macros or callee in params:
                        continue
                    if not guarded:
                        edges[name].append((callee, call))
                    elif callee == name and _same_arguments(macro, call):
                        self.report_token(
                            call.node,
                            f"macro '{name}' calls itself with the arguments it received, unchanged: once its "
                            "condition holds the recursion never ends",
                            "name",
                            name,
                            self.facts.is_call_site,
                        )
        self._report_cycles(edges)
        for loop in self.facts.nodes_of(nodes.For):
            if loop.recursive:
                self._check_recursive_loop(loop)

    def _report_cycles(self, edges: dict[str, list[tuple[str, nodes.Call]]]) -> None:
        reach = {name: _reachable(name, edges) for name in edges}
        reported: set[frozenset[str]] = set()
        for name in sorted(edges, key=lambda n: min(call.lineno for _callee, call in edges[n])):
            if name not in reach[name]:
                continue
            cycle = frozenset(other for other in reach[name] if name in reach.get(other, ()))
            if cycle in reported:
                continue
            reported.add(cycle)
            callee, call = min(((c, k) for c, k in edges[name] if c in cycle), key=lambda item: item[1].lineno)
            if cycle == {name}:
                message = f"macro '{name}' calls itself on every path: there is no base case, so rendering never ends"
            else:
                names = " -> ".join(sorted(cycle))
                message = f"macros {names} call each other on every path: there is no base case, so rendering never ends"
            self.report_token(call.node, message, "name", callee, self.facts.is_call_site)

    def _check_recursive_loop(self, loop: nodes.For) -> None:
        for call in _loop_calls(loop.body):
            try:
                same = len(call.args) == 1 and not call.kwargs and call.args[0] == loop.iter
            except RecursionError:
                same = False  # node equality recurses; an iterable this deep is not the plain same name
            if same:
                self.report_token(
                    call,
                    "loop() recurses into the same sequence the recursive loop iterates, so it never ends",
                    "name",
                    "loop",
                    self.facts.is_call_site,
                )


def _macro_calls(body: Iterable[nodes.Node]) -> list[tuple[str, nodes.Call, bool]]:
    """(callee, call, guarded) for every call of a named function in a macro body; ``guarded``
    is True below a condition, a short-circuit operand, a loop body or a call block's body:
    anything that can stop the call from running. Iterative, since hostile templates nest deeper
    than Python's recursion limit."""
    found: list[tuple[str, nodes.Call, bool]] = []
    pending: list[tuple[nodes.Node, bool]] = [(node, False) for node in reversed(list(body))]
    while pending:
        node, guarded = pending.pop()
        if isinstance(node, nodes.Macro):
            continue  # defining a nested macro runs nothing
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            found.append((node.node.name, node, guarded))
        if isinstance(node, nodes.If):
            children = [(node.test, guarded)] + [(child, True) for child in (*node.body, *node.elif_, *node.else_)]
        elif isinstance(node, nodes.CondExpr):
            children = [(node.test, guarded)] + [(child, True) for child in (node.expr1, node.expr2) if child is not None]
        elif isinstance(node, (nodes.And, nodes.Or)):
            children = [(node.left, guarded), (node.right, True)]
        elif isinstance(node, nodes.For):
            per_item = (*node.body, *node.else_, *([node.test] if node.test is not None else []))
            children = [(node.iter, guarded)] + [(child, True) for child in per_item]
        elif isinstance(node, nodes.CallBlock):
            children = [(node.call, guarded)] + [(child, True) for child in node.body]
        else:
            children = [(child, guarded) for child in node.iter_child_nodes()]
        pending.extend(reversed(children))
    return found


def _same_arguments(macro: nodes.Macro, call: nodes.Call) -> bool:
    """Whether ``call`` passes the macro's own parameters back unchanged, with no namespace
    state inside the macro that could change between calls."""
    if call.kwargs or call.dyn_args is not None or call.dyn_kwargs is not None or len(call.args) != len(macro.args):
        return False
    if not all(isinstance(arg, nodes.Name) and arg.name == param.name for arg, param in zip(call.args, macro.args)):
        return False
    params = {param.name for param in macro.args}
    try:
        for body_node in macro.body:
            for assign in _walk(body_node, (nodes.Assign, nodes.AssignBlock)):
                target = assign.target
                if isinstance(target, nodes.NSRef) or any(name.name in params for name in _walk(target, nodes.Name)):
                    return False
    except RecursionError:
        return False  # a body too deep to search cannot be shown to leave its state unchanged
    return True


def _walk(node: nodes.Node, kind: type | tuple[type, ...]) -> Iterator[Any]:
    """``node`` itself when it is of ``kind``, then its descendants of that kind."""
    if isinstance(node, kind):
        yield node
    yield from node.find_all(kind)


def _reachable(start: str, edges: dict[str, list[tuple[str, nodes.Call]]]) -> set[str]:
    seen: set[str] = set()
    pending = [callee for callee, _call in edges.get(start, ())]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(callee for callee, _call in edges.get(name, ()))
    return seen


def _loop_calls(body: Iterable[nodes.Node]) -> Iterator[nodes.Call]:
    """``loop(...)`` calls that belong to this loop (a nested for-loop rebinds ``loop``)."""
    pending = list(reversed(list(body)))
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.For):
            pending.append(node.iter)  # the inner loop's iterable still sees the outer ``loop``
            continue
        if isinstance(node, nodes.Call) and _is_name(node.node, "loop"):
            yield node
        pending.extend(reversed(list(node.iter_child_nodes())))


@register
class EscapeNameReference(_SecurityRule):
    """Reads a name that only exists in a sandbox escape (`os`, `popen`, `__builtins__`, `config` ...).

    Why: A chat-template render defines `messages`, `tools`, special tokens, transformers'
    helpers and the caller's keyword arguments. `os`, `subprocess`, `popen`, `builtins`,
    `__import__`, `globals`, `mro`, `subclasses`, and Flask's `config`, `request`, `application`,
    `url_for` and `get_flashed_messages` are not among them: they appear in SSTI payloads
    (usually copied from Flask exploits), so reading one is a probe. Attributes that only exist on
    interpreter internals (`.popen`, `.f_globals`, `.gi_frame`, `.mro`) are reported too. Names the
    template binds itself are its own variables and are not reported.

    Bad:
        {{ request.application.__globals__.__builtins__ }}

    Good:
        {{ messages[0].content }}
    """

    code = "TK910"
    name = "escape-name-reference"

    def inspect(self, tree: nodes.Template) -> None:
        for node in self.facts.nodes_of(nodes.Name):
            self._check_name(node)
        for access in self.facts.accesses:
            if access.literal and access.name in ESCAPE_ATTRIBUTES and access.style != "store":
                self.report_token(
                    access.node,
                    f"'{access.name}' exists only on interpreter internals (functions, frames, modules): reaching "
                    "for it is a sandbox-escape step",
                    *access.token,
                )

    def _check_name(self, node: nodes.Name) -> None:
        if node.ctx != "load" or self.facts.is_bound(node.name):
            return
        if node.name in ESCAPE_NAMES or node.name.startswith("__"):
            self.report_token(
                node,
                f"'{node.name}' is not defined in a chat-template render; it only appears in sandbox-escape "
                "payloads (Python modules and builtins, Flask's template globals)",
                "name",
                node.name,
            )
