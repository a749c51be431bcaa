"""The one Jinja environment templatekit renders and parses with.

It is built the way transformers 5 builds its chat-template environment
(``transformers/utils/chat_template_utils.py``): ``ImmutableSandboxedEnvironment`` with
``trim_blocks`` and ``lstrip_blocks``, the ``{% generation %}`` tag and ``loopcontrols``, the
``raise_exception`` and ``strftime_now`` globals, the restricted ``dict`` and ``namespace``, and a
``tojson`` filter with transformers' signature. Output is byte-identical to transformers.

On top of that it carries the render guards (see ``guards.py``): a code generator that ticks the
budget on every loop iteration and bounds ``~`` concatenation, intercepted binary operators (which
also stops Jinja from folding ``'a' * 4000000000`` at compile time), a guarded ``call`` for the
string methods that can grow text, guarded filters and an output ``finalize`` that bounds what
printing a container would produce. None of them changes a value; they only refuse to build one
that is over budget.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from datetime import datetime
from collections.abc import Mapping, Sequence
from functools import lru_cache, update_wrapper
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.filters import make_attrgetter, make_multi_attrgetter
from jinja2.runtime import LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

from . import guards
from .guards import current_guard, format_widths, star_widths

# Marks an exception as raised by the template's own raise_exception() call.
RAISED_BY_TEMPLATE = "_templatekit_raised_by_template"


# ---------------------------------------------------------------------------------------------
# transformers' template globals


def raise_exception(message: Any) -> None:
    """The template's way to reject its input: a plain ``jinja2.TemplateError`` with its message."""
    error = TemplateError(message)
    setattr(error, RAISED_BY_TEMPLATE, True)
    raise error


def strftime_now(format: str) -> str:
    """Local time formatted like transformers' ``datetime.now().strftime``, unless the render pins
    a clock (``now=``), which makes output reproducible."""
    guard = current_guard()
    if isinstance(format, str):
        # strftime directives expand up to ~12x (e.g. %c); bound the result before formatting.
        guard.check_text(len(format) * 12, "strftime_now() result")
    moment = guard.now if guard.now is not None else datetime.now()
    return moment.strftime(format)


class TemplateDict:
    """``dict`` as templates see it: callable and ``fromkeys`` only, nothing else to reach into."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(Namespace):
    """``namespace`` that refuses underscore-prefixed attribute names, as transformers' does."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's own signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        TemplateNamespace._check_name(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute."
            )


def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False) -> str:
    """transformers' ``tojson``: plain ``json.dumps`` (no HTML escaping), raw UTF-8 by default."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    if isinstance(n, int) and isinstance(max, int):
        current_guard().check_text(n * max * 16, "lipsum() result")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


# Jinja names an object's class by module in undefined-attribute errors ("'transformers.utils.
# chat_template_utils.TemplateDict object' has no attribute 'x'"); report the same module so the
# messages templatekit shows are the ones transformers users see.
for _template_global in (TemplateDict, TemplateNamespace):
    _template_global.__module__ = "transformers.utils.chat_template_utils"


# ---------------------------------------------------------------------------------------------
# {% generation %}


class GenerationExtension(Extension):
    """``{% generation %}...{% endgeneration %}``: renders its body unchanged and records the
    character span it occupies in the output, as transformers' AssistantTracker does (the start is
    the length of the output the renderer has received so far)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context: Any, caller: Any) -> str:
        rendered = caller()
        guard = guards._active_guard.get()
        if guard is not None:
            start = guard.output_length
            guard.generation_spans.append((start, start + len(rendered)))
        return rendered


# ---------------------------------------------------------------------------------------------
# code generation with budget hooks


class GuardedCodeGenerator(CodeGenerator):
    """Emits budget hooks: every ``{% for %}`` iterates through ``environment.guarded_iter`` and
    every ``~`` goes through ``environment.guarded_concat``.

    Jinja does not allow new node types, so the loop's iterable is wrapped where it is written:
    ``visit_For`` remembers which node is the iterable and ``visit`` surrounds exactly that node.
    """

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not hasattr(self, "_loop_iterables"):
            self._loop_iterables: set[int] = set()
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) in getattr(self, "_loop_iterables", ()):
            self.write("environment.guarded_iter(")
            result = super().visit(node, *args, **kwargs)
            self.write(")")
            return result
        return super().visit(node, *args, **kwargs)

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # Comparing containers of long strings runs in C with no tick (``s in [t] * 50000``
        # compares 50,000 long strings), and the sandbox intercepts no comparison; so each one
        # whose operands may be containers goes through ``environment.guarded_compare``. A
        # constant scalar operand (``role == 'user'``) bounds the work, and compiles as before.
        operands = [node.expr] + [operand.expr for operand in node.ops]
        if any(_scalar_constant(operand) for operand in operands[:2]) and len(node.ops) == 1:
            super().visit_Compare(node, frame)
            return
        self.write("environment.guarded_compare(")
        self.visit(node.expr, frame)
        for index, operand in enumerate(node.ops):
            # later operands are evaluated only when the chain gets that far, as in Python
            self.write(f", {operand.op!r}, ")
            if index:
                self.write("lambda: ")
            self.visit(operand.expr, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        # Building a dict hashes each key, and a tuple's hash walks all of it in C; a key that
        # is not a constant goes through ``environment.guarded_key`` first.
        self.write("{")
        for index, item in enumerate(node.items):
            if index:
                self.write(", ")
            constant = _scalar_constant(item.key)
            if not constant:
                self.write("environment.guarded_key(")
            self.visit(item.key, frame)
            if not constant:
                self.write(")")
            self.write(": ")
            self.visit(item.value, frame)
        self.write("}")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            self.write("environment.guarded_concat(context.eval_ctx.volatile, (")
        elif frame.eval_ctx.autoescape:
            self.write("environment.guarded_concat(True, (")
        else:
            self.write("environment.guarded_concat(False, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _scalar_constant(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and type(node.value) in (str, int, float, bool, type(None))


_COMPARISONS = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "lteq": operator.le, "gt": operator.gt,
    "gteq": operator.ge, "in": lambda left, right: left in right, "notin": lambda left, right: left not in right,
}
_COMPARISON_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">=", "in": "in",
                       "notin": "not in"}
_CONTAINERS = (list, tuple, dict)


def _compare(guard: guards.RenderGuard, name: str, left: Any, right: Any) -> bool:
    if isinstance(left, _CONTAINERS) or isinstance(right, _CONTAINERS):
        work = guards.comparison_work(name, left, right, guard.budget.max_work)
        guard.check_work(work, f"comparison ({_COMPARISON_SYMBOLS[name]})")
    return _COMPARISONS[name](left, right)


def _iterate_with_ticks(iterator: Any, guard: guards.RenderGuard) -> Any:
    for item in iterator:
        guard.ticks += 1
        if not guard.ticks & 31:
            guard.check_clock()
        yield item


# ---------------------------------------------------------------------------------------------
# the environment


# The sandbox's verdicts per (object type, attribute name); bounded, since a template can make up
# names (``x[some_string]`` falls back to an attribute lookup).
_SAFE_ATTRIBUTES: dict[tuple[type, Any], bool] = {}
_SAFE_ATTRIBUTES_LIMIT = 8192


class GuardedTemplate(jinja2.Template):
    """A compiled template whose render, once it has produced everything, checks the clock:
    a render whose last slow operation ran past the deadline has spent its time budget too."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        yield from super().generate(*args, **kwargs)
        guard = guards._active_guard.get()
        if guard is not None:
            guard.finish()


class TemplatekitEnvironment(ImmutableSandboxedEnvironment):
    """transformers' chat-template environment plus budget guards (see module docstring)."""

    code_generator_class = GuardedCodeGenerator
    template_class = GuardedTemplate
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def _generate(self, source: nodes.Template, name: Any, filename: Any, defer_init: bool = False) -> str:
        # Code generation and Python's compile cost grow with the tree, and no render budget runs
        # yet; a template far larger than any real one is refused before either starts.
        budget = guards.DEFAULT_BUDGET
        _check_nodes(source, budget.max_nodes)
        python = super()._generate(source, name, filename, defer_init=defer_init)
        if len(python) > budget.max_python:
            raise CompileBudgetExceeded(
                f"the template compiles to {len(python):,} characters of Python, more than the compile budget "
                f"of {budget.max_python:,} (the largest real templates compile to about 130,000)"
            )
        return python

    def guarded_iter(self, iterable: Any) -> Any:
        iterator = iter(iterable)  # fails here, like a plain for loop, on a non-iterable
        return _iterate_with_ticks(iterator, _guard())

    def guarded_compare(self, left: Any, *chain: Any) -> Any:
        """``left op1 right1 op2 right2 ...`` (later operands as thunks), each comparison bounded."""
        guard = _guard()
        guard.ticks += 1
        if not guard.ticks & 31:
            guard.check_clock()
        result: Any = True
        for index in range(0, len(chain), 2):
            right = chain[index + 1] if not index else chain[index + 1]()
            result = _compare(guard, chain[index], left, right)
            if not result:
                return result
            left = right
        return result

    def guarded_key(self, key: Any) -> Any:
        """``key``, once hashing it (as a dict literal will) is known to be cheap."""
        if isinstance(key, tuple):
            guard = _guard()
            guard.check_work(guards.hash_work(key, guard.budget.max_work), "dict key")
        return key

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(argument) is tuple and isinstance(obj, Mapping):  # ``d[t]`` hashes all of t
            guard = _guard()
            guard.check_work(guards.hash_work(argument, guard.budget.max_work), "subscript")
        return ImmutableSandboxedEnvironment.getitem(self, obj, argument)

    def guarded_concat(self, markup: bool, values: tuple) -> str:
        guard = _guard()
        guard.tick()
        limit = guard.budget.max_output
        total = 0
        for value in values:
            total += len(value) if type(value) is str else guard.estimate(value)
            if total > limit:
                break
        guard.check_text(total, "concatenation (~)")
        return markup_join(values) if markup else str_join(values)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        guard = _guard()
        guard.ticks += 1
        if not guard.ticks & 31:
            guard.check_clock()
        if operator == "+":
            if type(left) is str and type(right) is str:  # by far the most common case
                guard.check_text(len(left) + len(right), "concatenated string (+)")
                return left + right
            _check_add(guard, left, right)
        elif operator == "*":
            _check_multiply(guard, left, right)
        elif operator == "**":
            _check_power(guard, left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(guard, left, right)
        return self.binop_table[operator](left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # The sandbox's answer depends only on the object's type and the name (isinstance tests
        # against function, code, mutable-container types and their ABCs, and the name itself),
        # yet costs several ABC checks on every attribute a template reads. Remembered per
        # (type, name); objects whose __class__ disguises their type are always asked afresh.
        kind = type(obj)
        key = (kind, attr)
        try:
            return _SAFE_ATTRIBUTES[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable name: ask the sandbox
            return super().is_safe_attribute(obj, attr, value)
        safe = super().is_safe_attribute(obj, attr, value)
        if getattr(obj, "__class__", None) is kind and len(_SAFE_ATTRIBUTES) < _SAFE_ATTRIBUTES_LIMIT:
            _SAFE_ATTRIBUTES[key] = safe
        return safe

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        guard = _guard()
        guard.tick()
        if args or kwargs or getattr(__obj, "__name__", None) in _CHECKED_WITHOUT_ARGUMENTS:
            args = _check_call(guard, __obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


class CompileBudgetExceeded(guards.BudgetExceeded, MemoryError):
    """A template too large to compile within budget. Also a MemoryError, so that every
    caller that reports a template too deep to compile reports this one the same way."""


def _check_nodes(tree: nodes.Node, limit: int) -> None:
    count = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise CompileBudgetExceeded(
                f"the template has more than {limit:,} syntax nodes, the compile budget (the largest real "
                f"templates have about 3,000)"
            )
        stack.extend(node.iter_child_nodes())


# Methods that can build something large even when called without arguments.
_CHECKED_WITHOUT_ARGUMENTS = frozenset({"split", "rsplit", "splitlines", "expandtabs"})


def _guard() -> guards.RenderGuard:
    guard = guards._active_guard.get()
    return guard if guard is not None else current_guard()


def _finalize(value: Any) -> Any:
    # Printing a container prints its repr; bound it before str() builds it. Strings are counted
    # as output by the renderer, so they pass straight through.
    if type(value) is not str:
        _guard().check_rendered(value, "printed value")
    return value


def _is_count(value: Any) -> bool:
    return type(value) is int or type(value) is bool


def _check_multiply(guard: guards.RenderGuard, left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if _is_count(count) and isinstance(sequence, (str, list, tuple, bytes, bytearray)):
            size = len(sequence) * max(count, 0)
            if isinstance(sequence, (str, bytes, bytearray)):
                guard.check_text(size, "repeated string (*)")
            else:
                guard.check_items(size, "repeated sequence (*)")
            return
    if _is_count(left) and _is_count(right):
        guard.check_int_bits(abs(left).bit_length() + abs(right).bit_length())


def _check_add(guard: guards.RenderGuard, left: Any, right: Any) -> None:
    if isinstance(left, str) and isinstance(right, str):
        guard.check_text(len(left) + len(right), "concatenated string (+)")
    elif isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        guard.check_items(len(left) + len(right), "concatenated sequence (+)")


def _check_power(guard: guards.RenderGuard, base: Any, exponent: Any) -> None:
    if _is_count(base) and _is_count(exponent) and exponent > 0 and abs(base) > 1:
        guard.check_int_bits(guards.power_bits(base, exponent))


def _check_percent_format(guard: guards.RenderGuard, template: str, args: Any) -> None:
    limit = guard.budget.max_output
    size = len(template) + format_widths(template, brace=False) + star_widths(template, args)
    values = args if isinstance(args, tuple) else (args,)
    if isinstance(args, dict):
        values = tuple(args.values())
    for value in values:
        size += guard.estimate(value)
        if size > limit:
            break
    guard.check_text(size, "%-formatted string")


def _check_call(guard: guards.RenderGuard, func: Any, args: tuple, kwargs: dict) -> tuple:
    """Bound what a call to a string method could build; returns the (possibly materialised) args."""
    wrapped = getattr(func, "__wrapped__", None)
    target = wrapped if wrapped is not None else func
    owner = getattr(target, "__self__", None)
    name = getattr(target, "__name__", "")
    if isinstance(owner, (bytes, bytearray)):
        return _check_bytes_call(guard, owner, name, args, kwargs)
    if _is_count(owner) and name == "to_bytes":
        length = _argument(args, kwargs, 0, "length", 1)
        if _is_count(length):
            guard.check_text(length, "int.to_bytes() result")
        return args
    if not isinstance(owner, str):
        if args:
            _check_lookup_call(guard, owner, name, target, args)
        return args
    limit = guard.budget.max_output
    if name in ("split", "rsplit", "splitlines"):
        guard.check_items(_split_count(owner, name, args, kwargs, guard.budget.max_items), f"str.{name}() result")
        return args
    if name in ("center", "ljust", "rjust", "zfill") and args and _is_count(args[0]):
        guard.check_text(max(len(owner), args[0]), f"str.{name}() result")
    elif name == "expandtabs":
        tabsize = args[0] if args and _is_count(args[0]) else kwargs.get("tabsize", 8)
        if _is_count(tabsize):
            # a tab becomes 0 to tabsize spaces
            guard.check_text(len(owner) + owner.count("\t") * max(tabsize - 1, 0), "str.expandtabs() result")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        guard.check_text(_replace_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1), "str.replace() result")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        guard.check_text(guards.translated_size(owner, args[0], limit), "str.translate() result")
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else list(_iterate_with_ticks(iter(args[0]), guard))
        guard.check_items(len(items), "str.join() input")
        size = len(owner) * max(len(items) - 1, 0)
        for item in items:
            size += len(item) if isinstance(item, str) else 0
            if size > limit:
                break
        guard.check_text(size, "str.join() result")
        return (items,) + tuple(args[1:])
    elif name in ("format", "format_map"):
        named = args[0] if name == "format_map" and args and isinstance(args[0], Mapping) else kwargs
        positional = () if name == "format_map" else args
        size = len(owner) + guards.brace_format_widths(owner, positional, named, _format_lookup)
        values = list(args) + list(kwargs.values())
        if name == "format_map" and args and hasattr(args[0], "values"):
            values = list(args[0].values())
        for value in values:
            size += guard.estimate(value)
            if size > limit:
                break
        guard.check_text(size, f"str.{name}() result")
    return args


def _check_lookup_call(guard: guards.RenderGuard, owner: Any, name: str, target: Any, args: tuple) -> None:
    """Bound the comparing and hashing a container method or ``loop.changed`` does in C."""
    limit = guard.budget.max_work
    if isinstance(owner, (list, tuple)) and name in ("index", "count"):
        work = guards.containment_work(args[0], owner, limit)
    elif isinstance(owner, Mapping) and name in ("get", "__contains__", "__getitem__"):
        work = guards.hash_work(args[0], limit)
    elif isinstance(owner, LoopContext) and name == "changed":
        work = guards.comparison_work("ne", owner._last_changed_value, args, limit)
    elif isinstance(owner, TemplateDict) or isinstance(target, TemplateDict):  # dict(pairs), dict.fromkeys(keys)
        work = 2 * guards.expanded_work(args[0], limit, {})
    else:
        return
    kind = "dict" if owner is None or isinstance(owner, TemplateDict) else type(owner).__name__
    guard.check_work(work, f"{kind}.{name}()" if owner is not None else "dict()")


def _format_lookup(value: Any, key: Any, is_attribute: bool) -> Any:
    # what the sandbox's own formatter reads for a field name: sandboxed attributes and items
    if is_attribute:
        return environment().getattr(value, key)
    return environment().getitem(value, key)


def _check_bytes_call(guard: guards.RenderGuard, owner: bytes | bytearray, name: str, args: tuple,
                      kwargs: dict) -> tuple:
    """Bound what a bytes method could build, as ``_check_call`` does for str (a byte counts as
    a character)."""
    kind = type(owner).__name__
    if name in ("center", "ljust", "rjust", "zfill") and args and _is_count(args[0]):
        guard.check_text(max(len(owner), args[0]), f"{kind}.{name}() result")
    elif name == "expandtabs":
        tabsize = args[0] if args and _is_count(args[0]) else kwargs.get("tabsize", 8)
        if _is_count(tabsize):
            guard.check_text(len(owner) + owner.count(b"\t") * max(tabsize - 1, 0), f"{kind}.expandtabs() result")
    elif name == "replace" and len(args) >= 2 and all(isinstance(arg, (bytes, bytearray)) for arg in args[:2]):
        old, new = args[0], args[1]
        occurrences = owner.count(old) if old else len(owner) + 1
        count = args[2] if len(args) > 2 else -1
        if _is_count(count) and count >= 0:
            occurrences = min(occurrences, count)
        guard.check_text(len(owner) + occurrences * (len(new) - len(old)), f"{kind}.replace() result")
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else list(_iterate_with_ticks(iter(args[0]), guard))
        guard.check_items(len(items), f"{kind}.join() input")
        size = len(owner) * max(len(items) - 1, 0)
        for item in items:
            size += len(item) if isinstance(item, (bytes, bytearray)) else 0
            if size > guard.budget.max_output:
                break
        guard.check_text(size, f"{kind}.join() result")
        return (items,) + tuple(args[1:])
    elif name in ("split", "rsplit", "splitlines"):
        guard.check_items(_split_count(owner, name, args, kwargs, guard.budget.max_items), f"{kind}.{name}() result")
    return args


def _split_count(text: str | bytes | bytearray, name: str, args: tuple, kwargs: dict, limit: int) -> int:
    """At most how many items ``text.split``/``rsplit``/``splitlines`` returns."""
    if name == "splitlines":
        if isinstance(text, str):
            return guards.line_breaks(text) + 1
        return text.count(b"\n") + text.count(b"\r") + 1
    separator = _argument(args, kwargs, 0, "sep", None)
    most = _argument(args, kwargs, 1, "maxsplit", -1)
    if separator is None:
        count = (len(text) + 1) // 2  # words need whitespace between them
        if count > limit:  # count them, stopping past the limit
            words = re.finditer(rb"\S+" if isinstance(text, (bytes, bytearray)) else r"\S+", text)
            count = sum(1 for _ in itertools.islice(words, limit + 1))
    else:
        try:
            count = text.count(separator) + 1 if separator else 0
        except TypeError:
            return 0  # split refuses it
    if _is_count(most) and most >= 0:
        count = min(count, most + 1)
    return count


def _replace_size(text: str, old: str, new: str, count: Any) -> int:
    occurrences = text.count(old) if old else len(text) + 1
    if _is_count(count) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * (len(new) - len(old))


# ---------------------------------------------------------------------------------------------
# filters


# Filters that turn their input into text, so printing a huge container through them is as bad
# as printing it directly.
_STRINGIFYING_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
        "pprint", "replace", "safe", "string", "striptags", "title", "trim", "truncate",
        "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
    }
)


def _guard_filter(name: str, func: Any) -> Any:
    """``func`` with its input and result bounded; the same values in, the same value out."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    at = 0 if pass_arg is None else 1
    bound_result = _FILTER_CHECKS.get(name)
    stringifies = name in _STRINGIFYING_FILTERS

    def guarded(*args: Any, **kwargs: Any) -> Any:
        guard = _guard()
        guard.tick()
        if len(args) > at:
            value = args[at]
            if stringifies and type(value) is not str:
                guard.check_rendered(value, f"|{name} input")
            if bound_result is not None:
                args = bound_result(guard, value, args, at, kwargs) or args
        result = func(*args, **kwargs)
        if type(result) is str:
            guard.check_text(len(result), f"|{name} result")
        elif type(result) is list:
            guard.check_items(len(result), f"|{name} result")
        return result

    update_wrapper(guarded, func)
    return guarded


# Jinja's comparison tests (``x is in y``, ``select('eq', x)``), by the operator they apply.
_COMPARISON_TESTS = {
    "eq": "eq", "==": "eq", "equalto": "eq", "ne": "ne", "!=": "ne", "lt": "lt", "<": "lt",
    "lessthan": "lt", "le": "lteq", "<=": "lteq", "gt": "gt", ">": "gt", "greaterthan": "gt",
    "ge": "gteq", ">=": "gteq", "in": "in",
}


def _guard_test(name: str, func: Any) -> Any:
    """A comparison test with its work bounded as the comparison operators' is."""
    operator_name = _COMPARISON_TESTS.get(name)
    if operator_name is None:
        return func

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 2 and (isinstance(args[0], _CONTAINERS) or isinstance(args[1], _CONTAINERS)):
            guard = _guard()
            work = guards.comparison_work(operator_name, args[0], args[1], guard.budget.max_work)
            guard.check_work(work, f"test '{name}'")
        return func(*args, **kwargs)

    update_wrapper(guarded, func)
    return guarded


def _argument(args: tuple, kwargs: dict, position: int, keyword: str, default: Any) -> Any:
    if len(args) > position:
        return args[position]
    return kwargs.get(keyword, default)


def _with_value(args: tuple, at: int, value: Any) -> tuple:
    return args[:at] + (value,) + args[at + 1:]


def _materialise(guard: guards.RenderGuard, value: Any, what: str) -> list | tuple:
    items = value if isinstance(value, (list, tuple)) else list(_iterate_with_ticks(iter(value), guard))
    guard.check_items(len(items), what)
    return items


# Each check bounds one filter's result before the filter runs, from the same arguments the filter
# receives (``args[at]`` is the filtered value). A check that had to consume an iterator returns
# the arguments with the materialised list in its place.


def _check_center_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    width = _argument(args, kwargs, at + 1, "width", 80)
    if isinstance(value, str) and _is_count(width):
        guard.check_text(max(len(value), width), "|center result")


def _check_indent_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    if isinstance(value, str):
        width = _argument(args, kwargs, at + 1, "width", 4)
        pad = width if _is_count(width) else len(width) if isinstance(width, str) else 0
        first = bool(_argument(args, kwargs, at + 2, "first", False))
        guard.check_text(guards.indented_size(value, pad, first), "|indent result")


def _check_replace_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    old, new = _argument(args, kwargs, at + 1, "old", ""), _argument(args, kwargs, at + 2, "new", "")
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        count = _argument(args, kwargs, at + 3, "count", None)
        guard.check_text(_replace_size(value, old, new, -1 if count is None else count), "|replace result")


def _check_format_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    if isinstance(value, str):
        _check_percent_format(guard, value, tuple(args[at + 1:]) or kwargs)


def _check_wordwrap_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    if isinstance(value, str):
        width = _argument(args, kwargs, at + 1, "width", 79)
        wrapstring = _argument(args, kwargs, at + 3, "wrapstring", None)
        wrap = len(wrapstring) if isinstance(wrapstring, str) else 1  # None: the newline sequence
        guard.check_text(guards.wrapped_size(value, width, wrap), "|wordwrap result")


def _check_wordwrap_work(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    _check_wordwrap_filter(guard, value, args, at, kwargs)
    if isinstance(value, str) and _argument(args, kwargs, at + 2, "break_long_words", True):
        width = _argument(args, kwargs, at + 1, "width", 79)
        guard.check_work(guards.wrap_work(value, width, guard.budget.max_work), "|wordwrap")


def _check_striptags_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    if isinstance(value, str) and len(value) * len(value) > guard.budget.max_work:
        guard.check_work(guards.striptags_work(value), "|striptags")


def _check_pieces_filter(name: str, pattern: str, per_match: int) -> Any:
    """A filter that splits its text with ``pattern`` (``per_match`` pieces per match, plus
    one) into a list before building its result: the list is bounded like any other."""
    compiled = re.compile(pattern)

    def check(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
        if not isinstance(value, str) or len(value) + 1 <= guard.budget.max_items:
            return  # no more pieces than characters
        limit = guard.budget.max_items
        matches = sum(1 for _ in itertools.islice(compiled.finditer(value), limit // per_match + 1))
        guard.check_items(matches * per_match + 1, f"|{name} intermediate list")

    return check


def _check_pprint_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    # pprint breaks the repr into lines indented by one space per level of nesting.
    guard.check_text(guard.estimate(value) * (1 + _nesting_depth(value)), "|pprint result")


def _check_tojson_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> tuple | None:
    # transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # its JSON is measured exactly (what |string would print of the same value is no bound on it).
    separators = _argument(args, kwargs, at + 3, "separators", None)
    if separators is not None and not isinstance(separators, (tuple, list, str)):
        # json.dumps unpacks any iterable into two separators; read an iterator once, here, so
        # the separators measured are the ones json.dumps then gets.
        try:
            separators = tuple(itertools.islice(iter(separators), 3))
        except TypeError:
            separators = None  # json.dumps refuses it before writing anything
        else:
            if len(args) > at + 3:
                args = _with_value(args, at + 3, separators)
            else:
                kwargs["separators"] = separators
    ensure_ascii = _argument(args, kwargs, at + 1, "ensure_ascii", False)
    indent = _argument(args, kwargs, at + 2, "indent", None)
    guard.check_text(guard.json_size(value, ensure_ascii, indent, separators), "|tojson result")
    return args


def _check_join_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> tuple:
    items = _materialise(guard, value, "|join input")
    separator = _argument(args, kwargs, at + 1, "d", "")
    total = (len(separator) if isinstance(separator, str) else 0) * max(len(items) - 1, 0)
    for item in items:
        total += len(item) if type(item) is str else guard.estimate(item)
        if total > guard.budget.max_output:
            break
    guard.check_text(total, "|join result")
    return _with_value(args, at, items)


def _check_count_filter(name: str, keyword: str) -> Any:
    def check(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
        count = _argument(args, kwargs, at + 1, keyword, 1)
        if _is_count(count):
            guard.check_items(count, f"|{name} size")

    return check


def _check_listing_filter(name: str) -> Any:
    def check(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
        if isinstance(value, str):
            guard.check_items(len(value), f"|{name} result")

    return check


def _check_sum_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> tuple:
    items = _materialise(guard, value, "|sum input")
    _check_sum(guard, items, _argument(args, kwargs, at + 2, "start", 0))
    return _with_value(args, at, items)


def _sort_keys(args: tuple, at: int, attribute: Any, default: Any = None, multiple: bool = False) -> Any:
    # What the filter compares: the items, or (with ``attribute``) what Jinja looks up in them.
    if attribute is None or not at:
        return None
    if multiple:  # |sort(attribute='a,b')
        return make_multi_attrgetter(args[0], attribute)
    return make_attrgetter(args[0], attribute, default=default)


def _check_sorting_filter(name: str, attribute_at: int) -> Any:
    """``|sort``/``|groupby`` sort a list in one C call: its whole comparing work is bounded."""
    def check(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> tuple | None:
        if isinstance(value, str):
            return None
        items = _materialise(guard, value, f"|{name} input")
        attribute = _argument(args, kwargs, at + attribute_at, "attribute", None)
        default = _argument(args, kwargs, at + 2, "default", None) if name == "groupby" else None
        key = _sort_keys(args, at, attribute, default, multiple=name == "sort")
        keys = items if key is None else [key(item) for item in items]
        guard.check_work(guards.sorting_work(keys, guard.budget.max_work), f"|{name}")
        return _with_value(args, at, items)

    return check


def _check_dictsort_filter(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> None:
    if isinstance(value, Mapping):
        by = _argument(args, kwargs, at + 2, "by", "key")
        keys = list(value.values()) if by == "value" else list(value)
        guard.check_work(guards.sorting_work(keys, guard.budget.max_work), "|dictsort")


def _check_each_filter(name: str) -> Any:
    """``|max``, ``|min`` and ``|unique`` compare or hash one item at a time as they read their
    input: each item is bounded (and the clock checked) as it is read, so the filter stays lazy."""
    def check(guard: guards.RenderGuard, value: Any, args: tuple, at: int, kwargs: dict) -> tuple | None:
        if isinstance(value, str):
            return None
        key = _sort_keys(args, at, _argument(args, kwargs, at + 2, "attribute", None))
        return _with_value(args, at, _bounded_items(guard, value, key, f"|{name}"))

    return check


def _bounded_items(guard: guards.RenderGuard, value: Any, key: Any, what: str) -> Any:
    limit = guard.budget.max_work
    for item in value:
        guard.tick()
        # a fresh memo per item: an item already consumed may be gone, and its id reused
        guard.check_work(2 * guards.expanded_work(item if key is None else key(item), limit, {}), what)
        yield item


_FILTER_CHECKS = {
    "center": _check_center_filter,
    "indent": _check_indent_filter,
    "replace": _check_replace_filter,
    "format": _check_format_filter,
    "wordwrap": _check_wordwrap_work,
    "striptags": _check_striptags_filter,
    # the patterns Jinja's filters split with (jinja2.filters, jinja2.utils.urlize)
    "title": _check_pieces_filter("title", r"([-\s({\[<]+)", 2),
    "wordcount": _check_pieces_filter("wordcount", r"\w+", 1),
    "urlize": _check_pieces_filter("urlize", r"(\s+)", 2),
    "tojson": _check_tojson_filter,
    "pprint": _check_pprint_filter,
    "join": _check_join_filter,
    "batch": _check_count_filter("batch", "linecount"),
    "slice": _check_count_filter("slice", "slices"),
    "list": _check_listing_filter("list"),
    "reverse": _check_listing_filter("reverse"),
    "sum": _check_sum_filter,
    "sort": _check_sorting_filter("sort", 3),
    "groupby": _check_sorting_filter("groupby", 1),
    "dictsort": _check_dictsort_filter,
    "max": _check_each_filter("max"),
    "min": _check_each_filter("min"),
    "unique": _check_each_filter("unique"),
}


def _check_sum(guard: guards.RenderGuard, items: Any, start: Any) -> None:
    # Summing sequences copies the running total each step: quadratic work for linear data.
    if not isinstance(start, (list, tuple, str)):
        return
    running, copied = len(start), 0
    for item in items:
        if isinstance(item, (list, tuple, str)):
            running += len(item)
            copied += running
    guard.check_items(running, "|sum result")
    if copied > guard.budget.max_items * 10:
        raise guards.BudgetExceeded(f"|sum over sequences would copy {copied:,} items (size budget)")


def _nesting_depth(value: Any, _depth: int = 0) -> int:
    if _depth > 100:
        return _depth
    if isinstance(value, dict):
        return max((_nesting_depth(item, _depth + 1) for item in value.values()), default=_depth + 1)
    if isinstance(value, (list, tuple)):
        return max((_nesting_depth(item, _depth + 1) for item in value), default=_depth + 1)
    return _depth


# ---------------------------------------------------------------------------------------------
# building and compiling


def _build_environment(trim_blocks: bool = True, lstrip_blocks: bool = True) -> TemplatekitEnvironment:
    env = TemplatekitEnvironment(
        trim_blocks=trim_blocks,
        lstrip_blocks=lstrip_blocks,
        extensions=[GenerationExtension, loopcontrols],
        finalize=_finalize,
    )
    # Jinja's optimizer only folds constant expressions at compile time; the same expressions
    # evaluate to the same values at render time, and skipping the fold attempts (each an
    # exception) makes compilation, the dominant cost, about a sixth faster.
    env.optimized = False
    env.filters["tojson"] = tojson
    env.filters = {name: _guard_filter(name, func) for name, func in env.filters.items()}
    env.tests = {name: _guard_test(name, func) for name, func in env.tests.items()}
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    env.globals["lipsum"] = lipsum
    return env


_ENVIRONMENT: TemplatekitEnvironment | None = None


def environment() -> TemplatekitEnvironment:
    """The shared environment (built on first use)."""
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        _ENVIRONMENT = _build_environment()
    return _ENVIRONMENT


@lru_cache(maxsize=None)
def variant_environment(trim_blocks: bool, lstrip_blocks: bool) -> TemplatekitEnvironment:
    """The environment with other ``trim_blocks``/``lstrip_blocks`` settings, everything else
    (sandbox, guards, globals, filters, extensions) as in ``environment()``.

    transformers renders with both on; plain ``jinja2.Template`` and some engines and tools leave
    them off, and the whitespace a template prints can depend on them (TK612 checks). With both
    on this is the shared environment itself.
    """
    if trim_blocks and lstrip_blocks:
        return environment()
    return _build_environment(trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks)


@lru_cache(maxsize=64)
def compile_variant(text: str, trim_blocks: bool, lstrip_blocks: bool) -> jinja2.Template:
    """``text`` compiled in ``variant_environment(trim_blocks, lstrip_blocks)``; raises as
    ``compile_template`` does. A separate cache, so variant compiles never evict the renders'."""
    if trim_blocks and lstrip_blocks:
        return compile_template(text)
    return variant_environment(trim_blocks, lstrip_blocks).from_string(text)


# Where trim_blocks and lstrip_blocks can act at all, found on the raw text (a superset: inside
# strings or comments too). trim_blocks drops a line break right after a tag closed without "-"
# or "+" ("%}", "#}"; in "{%-%}" the sign belongs to the opening), unless it is the text's last
# (the lexer drops one final newline first); lstrip_blocks drops the whitespace between a line
# start and a block or comment tag opened without "-" or "+". Where neither pattern occurs, a
# setting lexes exactly as transformers' does.
_TRIMMABLE = re.compile(r"(?:(?<![-+])|(?<=\{[%#][-+]))[%#]\}(?:\r\n|\r|\n)(?!\Z)")
_LSTRIPPABLE = re.compile(r"(?:\A|[\r\n])[^\S\r\n]+\{[%#](?![+-])")


def acting_settings(text: str, trim_blocks: bool, lstrip_blocks: bool) -> tuple[bool, bool]:
    """The settings that lex ``text`` as (trim_blocks, lstrip_blocks) do, with a setting that
    has nowhere to act in ``text`` turned on, as transformers has it (fewer distinct lexes)."""
    can_trim, can_lstrip = _settings_can_act(text)
    return (trim_blocks or not can_trim, lstrip_blocks or not can_lstrip)


@lru_cache(maxsize=16)
def _settings_can_act(text: str) -> tuple[bool, bool]:
    # Asked for every variant render; each answer scans the whole text once.
    return bool(_TRIMMABLE.search(text)), bool(_LSTRIPPABLE.search(text))


@lru_cache(maxsize=8)
def lex_variant(text: str, trim_blocks: bool, lstrip_blocks: bool) -> tuple[tuple[int, str, str], ...]:
    """``lex(text)`` under other trim_blocks/lstrip_blocks settings; kept for the next caller,
    since TK612 compares the lexes and then builds its one compile from them."""
    return tuple(variant_environment(trim_blocks, lstrip_blocks).lexer.tokeniter(text, None))


# The variable through which a text-slotted compile reads its template text.
TEXT_SLOTS_VARIABLE = "templatekit_template_texts"


class TextSlots:
    """One compile of a template that prints under any trim_blocks/lstrip_blocks setting.

    Those settings change only the literal text between tags (a newline after a tag, the
    indentation before one), never the tags or the tree. So the template is parsed once from
    its lex with both settings off (which keeps every piece of text, the most whitespace), each
    piece of literal text is replaced by a read of ``TEXT_SLOTS_VARIABLE[i]``, and a setting
    is rendered by passing its lex's texts for the slots (``variables``). A compile costs about
    fifty renders, and TK612 would otherwise compile once per setting.
    """

    def __init__(self, text: str, template: jinja2.Template, fullest: tuple[tuple[int, str, str], ...]) -> None:
        self.text = text
        self.template = template
        self._fullest = fullest
        self._texts: dict[tuple[bool, bool], tuple[str, ...] | None] = {}

    def variables(self, trim_blocks: bool, lstrip_blocks: bool) -> dict[str, tuple[str, ...]] | None:
        """The slot variable for these settings, or None when their lex does not line up with the
        slotted one (then only a real compile under them is exact)."""
        settings = acting_settings(self.text, trim_blocks, lstrip_blocks)
        if settings not in self._texts:
            try:
                lexed = lex_variant(self.text, *settings)
            except jinja2.TemplateSyntaxError:
                lexed = None
            self._texts[settings] = None if lexed is None else _slot_texts(self._fullest, lexed)
        texts = self._texts[settings]
        return None if texts is None else {TEXT_SLOTS_VARIABLE: texts}


def _slot_texts(fullest: tuple, lexed: tuple) -> tuple[str, ...] | None:
    """The text each data token of ``fullest`` has in ``lexed`` (the same template under other
    settings): every other token must match one to one; a data token the settings emptied is
    absent from ``lexed`` (the lexer yields no empty data) and gets "". None when the two do not
    line up."""
    texts: list[str] = []
    position = 0
    for _line, kind, value in fullest:
        other = lexed[position] if position < len(lexed) else None
        if kind == "data":
            if other is not None and other[1] == "data":
                texts.append(other[2])
                position += 1
            else:
                texts.append("")
            continue
        if other is None or other[1] != kind:
            return None
        # trim_blocks moves the newline after a tag into the tag's closing token.
        if other[2] != value and not (kind in ("block_end", "comment_end", "raw_end") and other[2].rstrip("\r\n") == value.rstrip("\r\n")):
            return None
        position += 1
    return tuple(texts) if position == len(lexed) else None


@lru_cache(maxsize=16)
def compile_with_text_slots(text: str) -> TextSlots | None:
    """``text`` compiled once for every trim_blocks/lstrip_blocks setting (see ``TextSlots``);
    None when it does not lex, parse or compile that way."""
    try:
        fullest = lex_variant(text, *acting_settings(text, False, False))
        tree = parse_lexed(fullest)
        outputs = list(tree.find_all(nodes.Output))
    except (jinja2.TemplateSyntaxError, RecursionError):
        return None
    # The parser makes one TemplateData per non-empty data token, in text order.
    expected = iter([value for _line, kind, value in fullest if kind == "data" and value])
    slot = 0
    for output in outputs:
        children = []
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                if child.data != next(expected, None):
                    return None
                child = nodes.Getitem(nodes.Name(TEXT_SLOTS_VARIABLE, "load"), nodes.Const(slot), "load",
                                      lineno=child.lineno)
                slot += 1
            children.append(child)
        output.nodes = children
    if next(expected, None) is not None:
        return None
    tree.set_environment(environment())
    try:
        compiled = environment().from_string(tree)
    except (jinja2.TemplateSyntaxError, RecursionError, MemoryError, SyntaxError):
        return None
    return TextSlots(text, compiled, fullest)


# A tree the caller already parsed from a text (the lint target's), for the next compile of that
# text: parsing is about a third of compiling. ``parse`` is what compiling would do first, and
# neither the code generator nor the rules change a tree, so the compiled code is the same.
_HANDED_OVER: dict[str, nodes.Template] = {}


def hand_over_tree(text: str, tree: nodes.Template) -> None:
    """Let the next ``compile_template(text)`` use ``tree`` (``parse(text)``'s result) instead of
    parsing ``text`` again. Holds one tree at a time."""
    _HANDED_OVER.clear()
    _HANDED_OVER[text] = tree


@lru_cache(maxsize=256)
def compile_template(text: str) -> jinja2.Template:
    """Compile template source once per process (keyed by the exact text, as transformers does).

    Raises ``jinja2.TemplateSyntaxError`` for templates that do not parse, and ``RecursionError``
    or ``SyntaxError`` for sources nested too deeply to compile.
    """
    tree = _HANDED_OVER.pop(text, None)
    return environment().from_string(tree if tree is not None else text)


def parse(text: str) -> nodes.Template:
    """The template's AST, parsed by the same environment that renders it (no compilation)."""
    return environment().parse(text)


def lex(text: str) -> tuple[tuple[int, str, str], ...]:
    """Every raw token of ``text`` as (line, type, value), whitespace and comments included, as the
    shared environment's lexer yields them; raises ``jinja2.TemplateSyntaxError`` where lexing fails.
    Kept for the next caller, as ``lex_variant`` keeps its lexes: TK612 asks for this one again."""
    return lex_variant(text, True, True)


def parse_lexed(lexed: Sequence[tuple[int, str, str]]) -> nodes.Template:
    """``parse(text)`` for ``lexed = lex(text)``, without lexing the text again: lexing is about
    half of parsing, and linting needs the raw tokens anyway. Only for a text that lexed
    completely; one that did not must go through ``parse``, where the parser may stop at an
    earlier syntax error than the lexer's."""
    from jinja2.lexer import TokenStream
    from jinja2.parser import Parser

    shared = environment()
    parser = Parser(shared, "")
    stream = TokenStream(shared.lexer.wrap(iter(lexed)), None, None)
    # What Environment._tokenize does after lexing (no extension here changes the source first).
    for extension in shared.iter_extensions():
        stream = extension.filter_stream(stream)
        if not isinstance(stream, TokenStream):
            stream = TokenStream(stream, None, None)
    parser.stream = stream
    return parser.parse()

