"""TK213-TK217: lexical and syntactic edge cases (line continuations, strftime_now, dotted
indices, postfix on a call, trailing commas)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from jinja2 import nodes

from ...model import Diagnostic, Edit, Fix
from ...registry import register
from ...target import LintTarget, Token
from ._shared import _KEYWORDS, _AstPortabilityRule, _TokenRule, _arguments, _at, _closing, _is, _opening


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
