"""TK204-TK206: statements and slices: step slices and descending ranges, the generation tag, break and
continue."""

from __future__ import annotations

import re
from collections.abc import Iterator

import jinja2
from jinja2 import nodes

from ....environment import environment
from ...model import Diagnostic
from ...registry import register
from ...target import LintTarget, Token
from ._shared import _AstPortabilityRule, _TokenRule, _at, _is


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
                parts.append(f"hf-jinja deletes `{{% {name} %}}` before rendering, so a `-` on it or on the tag "
                             f"next to it strips whitespace across the place it stood")
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
