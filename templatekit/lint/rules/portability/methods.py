"""TK201-TK203: Python methods: ones a filter replaces in every engine, ones some engine lacks or
implements differently, and characters passed to strip."""

from __future__ import annotations

from collections.abc import Iterator

from jinja2 import nodes

from ...model import Diagnostic, Edit, Fix, Severity
from ...registry import register
from ...target import LintTarget, Token
from ._shared import (
    _TokenRule, _arguments, _at, _chain_start, _closing, _engines_text, _for_iterable_start, _is,
    _method_calls, _postfix_follows, _string_value, _unary_sign_before,
)
from .message_fields import _RawContentStrips
from .schema import _schema_flow


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
