"""TK1xx: whitespace the template's author did not mean to put in the prompt.

Models are trained on exact bytes; one stray newline or space around a turn marker shifts every
following token. transformers renders with ``trim_blocks`` (drop the first newline after a
``{% %}`` or ``{# #}`` tag) and ``lstrip_blocks`` (drop spaces and tabs before a ``{% %}`` or
``{# #}`` tag that starts a line), and Jinja drops one final newline of the source. Everything
else in template data renders, including the indentation in front of ``{{ }}``.

These rules read the lexer's tokens: a data token's value is exactly the text that renders
there, after trimming and stripping, so comparing it with the source text between two tags shows
what the template's layout leaks and what only the trimming options hide.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator

from ...visible import special_token_pattern
from ..model import Diagnostic, Edit, Fix
from ..registry import Rule, RuleDoc, register
from ..target import LintTarget, Token

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BEGINS = frozenset({"block_begin", "variable_begin", "comment_begin", "raw_begin"})
_ENDS = frozenset({"block_end", "variable_end", "comment_end", "raw_end"})
# Tags that trim_blocks and lstrip_blocks act on; an expression tag ``{{ }}`` is not one of them.
_STATEMENT_BEGINS = frozenset({"block_begin", "comment_begin", "raw_begin"})
_STATEMENT_ENDS = frozenset({"block_end", "comment_end", "raw_end"})


def _offsets_reliable(target: LintTarget) -> bool:
    # The lexer turns every \r\n and \r into \n before it tokenizes, so token values stop matching
    # the text and their offsets drift; TK104 reports such text and its fix comes first.
    return "\r" not in target.text


@dataclasses.dataclass(frozen=True)
class Gap:
    """The source between two tags, and what of it renders in transformers."""

    before: Token | None  # the tag end the gap follows (None: the start of the template)
    after: Token  # the tag begin it precedes
    start: int  # offset just past the closing delimiter (a trimmed newline is part of the gap)
    rendered: str

    def source(self, text: str) -> str:
        return text[self.start : self.after.offset]


def _closing_length(token: Token) -> int:
    # A trimmed block end carries the newline it swallowed in its value.
    return len(token.value) - 1 if token.value.endswith("\n") else len(token.value)


def _strips_after(token: Token | None) -> bool:
    return token is not None and token.value.rstrip("\n").endswith(("-%}", "-}}", "-#}"))


def _strips_before(token: Token) -> bool:
    return token.value.startswith(("{%-", "{{-", "{#-"))


def _gaps(target: LintTarget) -> list[Gap]:
    """Every stretch of template data between two tags (raw block contents excluded); found
    once per target, for the three rules that read them."""
    return target.shared("whitespace:gaps", lambda target: list(_find_gaps(target)))


def _find_gaps(target: LintTarget) -> Iterator[Gap]:
    before: Token | None = None
    rendered: list[str] = []
    in_raw = False
    for token in target.tokens:
        if token.type == "raw_begin":
            in_raw = True
        if token.type in _BEGINS:
            start = before.offset + _closing_length(before) if before is not None else 0
            yield Gap(before, token, start, "".join(rendered))
            rendered = []
        elif token.type in _ENDS:
            if token.type == "raw_end":
                in_raw = False
            if not in_raw:
                before = token
        elif token.type == "data" and not in_raw:
            rendered.append(token.value)


def _insert_dash(token: Token) -> Edit:
    """Add whitespace control to a tag's opening delimiter: ``{%`` becomes ``{%-``."""
    return Edit(token.offset + 2, token.offset + 2, "-")


# ---------------------------------------------------------------------------------------------
# TK101


@register
class IndentedExpression(Rule):
    """Indentation in front of a ``{{ }}`` line renders into the prompt.

    Why: ``lstrip_blocks`` strips indentation only before ``{%`` and ``{#`` tags, never before
    ``{{``, so an expression indented to line up with the surrounding block tags emits those
    spaces into every prompt. Engines that strip before ``{{`` too (minja) render the same
    template without them, so the prompt depends on the engine as well.

    Bad:
        {% for message in messages %}
            {{ message['content'] }}
        {% endfor %}

    Good:
        {% for message in messages %}
            {{- message['content'] }}
        {% endfor %}

    Fix: adds ``-`` to the ``{{`` when that removes exactly the indentation, otherwise deletes the
    indentation (unsafe: the prompt loses the spaces, which is the point).
    """

    code, name, severity = "TK101", "indented-expression", "warning"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if not _offsets_reliable(target):
            return
        text = target.text
        text_lines = _lines_with_text(target)
        tokens = target.tokens
        for gap in _gaps(target):
            opener = gap.after
            if opener.type != "variable_begin" or _strips_before(opener) or not gap.rendered:
                continue
            line_start = text.rfind("\n", 0, opener.offset) + 1
            indentation = text[line_start : opener.offset]
            if not indentation or indentation.strip(" \t") or not gap.rendered.endswith(indentation):
                continue
            # Indentation next to literal text (a docstring, a bulleted list) formats that text
            # on purpose; only lines of nothing but tags, under a line without text, are layout.
            if opener.line in text_lines or opener.line - 1 in text_lines:
                continue
            if _raises(tokens, opener):
                continue  # raise_exception ends the render; its indentation never reaches a prompt
            if gap.rendered == indentation:
                fix = Fix("add '-' to the '{{' so the indentation is stripped", (_insert_dash(opener),), safe=False)
            else:
                fix = Fix("delete the indentation", (Edit(line_start, opener.offset, ""),), safe=False)
            shown = _describe_spaces(indentation)
            yield self.diagnostic(
                opener.line,
                1,
                f"the {shown} before this '{{{{' render into the prompt (lstrip_blocks strips only before '{{%')",
                end_column=opener.column,
                fix=fix,
            )


def _lines_with_text(target: LintTarget) -> set[int]:
    """Lines on which some template data renders visible (non-whitespace) text."""
    lines: set[int] = set()
    for token in target.tokens:
        if token.type != "data":
            continue
        for number, piece in enumerate(token.value.split("\n"), token.line):
            if piece.strip():
                lines.add(number)
    return lines


def _raises(tokens: list[Token], opener: Token) -> bool:
    index = tokens.index(opener) + 1
    while index < len(tokens) and tokens[index].type == "whitespace":
        index += 1
    return index < len(tokens) and tokens[index].value == "raise_exception"


def _describe_spaces(indentation: str) -> str:
    spaces, tabs = indentation.count(" "), indentation.count("\t")
    parts = []
    if spaces:
        parts.append(f"{spaces} space{'s' if spaces != 1 else ''}")
    if tabs:
        parts.append(f"{tabs} tab{'s' if tabs != 1 else ''}")
    return " and ".join(parts)


# ---------------------------------------------------------------------------------------------
# TK102


@register
class BlankLineBetweenTags(Rule):
    """Blank line, or trailing space after a tag, renders a newline between statements.

    Why: ``trim_blocks`` removes only the one newline that immediately follows ``%}``. A blank
    line between two ``{% %}`` tags, or a space left after ``%}``, survives and becomes a
    newline in the prompt, usually somewhere the trained format has none (before the first turn,
    between turns). After ``}}`` nothing is trimmed at all: an expression followed on the next
    line by an indented ``{% generation %}`` or ``{% endif %}`` prints the line break (only the
    indentation goes), so ``{{- '<|im_start|>' + role }}`` then ``{{- '\\n' + content }}``
    renders two newlines where the format has one. That shape is reported when the layout
    newline lands next to a newline the template prints itself, after a space, or as a blank
    line; a newline the format needs there and gets only from the layout is left alone.

    Bad:
        {% set system = messages[0]['content'] %}

        {% for message in messages %}{{ message['content'] }}{% endfor %}

    Good:
        {% set system = messages[0]['content'] %}

        {%- for message in messages %}{{ message['content'] }}{% endfor %}

    Fix: adds ``-`` to the tag after the whitespace (to the ``}}`` before it when that ends an
    expression) so the whitespace is stripped (unsafe: the newline leaves the prompt).
    """

    code, name, severity = "TK102", "blank-line-between-tags", "warning"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if not _offsets_reliable(target):
            return
        text_lines = _lines_with_text(target)
        for gap in _gaps(target):
            if gap.before is not None and gap.before.type == "variable_end" and gap.after.type in _STATEMENT_BEGINS:
                yield from self._after_expression(target, gap, text_lines)
                continue
            if gap.before is None or gap.before.type not in _STATEMENT_ENDS or gap.after.type not in _STATEMENT_BEGINS:
                continue
            if gap.before.line in text_lines or gap.after.line in text_lines:
                continue  # a line break after or before printed text formats that text
            rendered = gap.rendered
            if not rendered or rendered.strip() or "\n" not in rendered:
                continue
            if _is_branch_body(target, gap):
                continue  # {% else %}<newline>{% endif %}: the newline is the branch's output
            if _moves_a_line_break(target, gap):
                continue
            newlines = rendered.count("\n")
            breaks = f"{newlines} newline{'s' if newlines != 1 else ''}"
            if rendered[0] in " \t":
                # trim_blocks matches only a newline right after the tag.
                message = (
                    f"whitespace after this tag stops trim_blocks from removing its line break: "
                    f"{breaks} render{'s' if newlines == 1 else ''} here"
                )
                line, column = target.position(gap.start)
            else:
                message = f"blank line between tags renders {breaks} into the prompt"
                line, column = target.position(gap.start)
                line += 1
                column = 1
            yield self.diagnostic(
                line,
                column,
                message,
                fix=Fix(
                    f"add '-' to the tag at line {gap.after.line} to strip the whitespace",
                    (_insert_dash(gap.after),),
                    safe=False,
                ),
            )

    def _after_expression(self, target: LintTarget, gap: Gap, text_lines: set[int]) -> Iterator[Diagnostic]:
        """The line break between ``}}`` and an indented statement tag on the next line: lstrip_blocks
        takes the indentation, nothing takes the line break."""
        rendered = gap.rendered
        if not rendered or rendered.strip() or "\n" not in rendered or gap.after.value not in ("{%", "{#"):
            return
        tokens = target.tokens
        end = tokens.index(gap.before)
        begin = end
        while begin > 0 and tokens[begin].type != "variable_begin":
            begin -= 1
        opener = tokens[begin]
        source = gap.source(target.text)
        indented = bool(source[source.rfind("\n") + 1 :])
        # Layout is evident when the next tag is indented or the expression strips what precedes it;
        # a `{{ x }}` line at column 0 may be a template written as the text it prints.
        if not indented and not _strips_before(opener):
            return
        lines = (opener.line - 1, opener.line, gap.before.line, gap.after.line)
        if any(line in text_lines for line in lines):
            return  # next to literal text the line break formats that text (a docstring, a list)
        if _raises(tokens, opener):
            return
        # A newline the format needs may come only from this layout (MiniMax's `<invoke name="..">`
        # line, GLM's `<tool_call>name` line), so the line break alone is no evidence; it is stray
        # when it doubles a newline the template prints, ends a line in a space, or is a blank line.
        newlines = rendered.count("\n")
        ends = _literal(tokens[_skip_whitespace(tokens, end - 1, -1)])
        follows, follows_line = _next_output(target, tokens.index(gap.after))
        if rendered[0] in " \t" or (ends or "")[-1:] in (" ", "\t"):
            detail = "the line it ends has a trailing space"
        elif ends and ends.endswith("\n"):
            detail = f"with the '\\n' this expression ends with, {newlines + 1} newlines render here"
        elif follows and follows.startswith("\n"):
            detail = f"when the '\\n' at line {follows_line} prints next, {newlines + 1} newlines render here"
        elif newlines > 1:
            detail = f"{newlines} newlines render here"
        else:
            return
        line, column = target.position(gap.start)
        # `{{ x}}` becomes `{{ x -}}`, spaced like the dashes templates write.
        dash = "-" if target.text[gap.before.offset - 1] in " \t" else " -"
        yield self.diagnostic(
            line,
            column,
            f"the line break after this '}}}}' renders into the prompt (trim_blocks removes one only after '%}}', "
            f"lstrip_blocks only the indentation): {detail}",
            fix=Fix(
                "add '-' to the '}}' to strip the whitespace after it",
                (Edit(gap.before.offset, gap.before.offset, dash),),
                safe=False,
            ),
        )


def _skip_whitespace(tokens: list[Token], index: int, step: int) -> int:
    while 0 <= index < len(tokens) and tokens[index].type == "whitespace":
        index += step
    return index


def _literal(token: Token) -> str | None:
    """The value of a string token, escapes resolved as Jinja's lexer resolves them."""
    if token.type != "string":
        return None
    try:
        return token.value[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")
    except UnicodeDecodeError:
        return None


# Tags that print nothing and that the output can flow straight through: `{% if %}` enters its
# body, `{% endif %}` leaves it. Others (else, endfor, macro, a block set) jump elsewhere.
_FLOW_THROUGH = frozenset({"if", "endif", "for", "generation", "endgeneration", "set"})


def _next_output(target: LintTarget, index: int) -> tuple[str | None, int]:
    """What renders first after the statement tag at ``index`` on the path that runs straight on:
    the text of a data token or the leading string literal of an expression (None: unknown)."""
    tokens = target.tokens
    while index < len(tokens):
        token = tokens[index]
        if token.type in ("block_begin", "comment_begin"):
            close = index
            while close < len(tokens) and tokens[close].type not in ("block_end", "comment_end"):
                close += 1
            if token.type == "block_begin":
                name = _tag_name(target, token)
                if name not in _FLOW_THROUGH:
                    return None, 0
                if name == "set" and not any(t.type == "operator" and t.value == "=" for t in tokens[index:close]):
                    return None, 0  # a block set: its body is captured, not printed
            index = close + 1
        elif token.type == "data":
            if token.value:
                return token.value, token.line
            index += 1
        elif token.type == "variable_begin":
            first = tokens[_skip_whitespace(tokens, index + 1, 1)]
            return _literal(first), first.line
        else:
            return None, 0
    return None, 0


_BRANCH_OPENERS = frozenset(
    {"if", "elif", "else", "for", "macro", "call", "filter", "with", "generation", "set", "block"}
)


def _tag_name(target: LintTarget, tag: Token) -> str:
    """The keyword of a ``{% %}`` tag, given its opening or closing delimiter token."""
    tokens = target.tokens
    index = tokens.index(tag)
    if tag.type in ("block_end", "raw_end"):
        while index > 0 and tokens[index].type != "block_begin":
            index -= 1
    step = index + 1
    while step < len(tokens) and tokens[step].type == "whitespace":
        step += 1
    return tokens[step].value if step < len(tokens) and tokens[step].type == "name" else ""


def _is_branch_body(target: LintTarget, gap: Gap) -> bool:
    """Whether the gap is everything between a block's opening (or else) tag and its end (or
    next branch): then it is what that branch outputs, not layout."""
    if gap.before is None or gap.before.type != "block_end" or gap.after.type != "block_begin":
        return False
    closing = _tag_name(target, gap.after)
    opening = _tag_name(target, gap.before)
    return opening in _BRANCH_OPENERS and (closing.startswith("end") or closing in ("elif", "else"))


def _moves_a_line_break(target: LintTarget, gap: Gap) -> bool:
    """Whether the tag before the gap strips (``{%-``) a line break that ends a line of text, so
    the blank line after the tag only puts that line break back: ``<|im_end|>`` newline
    ``{%- endif %}`` blank line renders ``<|im_end|>`` and one newline, the format's separator."""
    tokens = target.tokens
    index = tokens.index(gap.before)
    while index > 0 and tokens[index].type not in _STATEMENT_BEGINS:
        index -= 1
    opener = tokens[index]
    if not _strips_before(opener):
        return False
    stripped_from = len(target.text[: opener.offset].rstrip())
    stripped = target.text[stripped_from : opener.offset]
    before = target.text[:stripped_from]
    return "\n" in stripped and bool(before) and not before.endswith(("}}", "%}", "#}"))


# ---------------------------------------------------------------------------------------------
# TK103


@register
class DroppedTrailingNewline(Rule):
    """Final line break of the template never renders.

    Why: Python Jinja (``keep_trailing_newline=False``) removes one line break at the very end of
    the template source, so a template whose last line is ``<|im_start|>assistant`` followed by a
    line break renders the prompt without it. Other renderers, and anyone reading the file, see
    the line break; the model is then prompted one token short of its trained format. A line
    break after a closing tag is the usual end of a file and is not reported.

    Bad:
        {{ messages[0]['content'] }}<|im_end|>
        <|im_start|>assistant

    Good:
        {{ messages[0]['content'] }}<|im_end|>
        <|im_start|>assistant{{ '\\n' }}

    Fix: deletes the line break, which never rendered; after several line breaks, writes the ones
    that render as ``{{ '\\n' }}`` (safe: the output is identical). If the prompt is meant to end
    with one more, write it in the expression.
    """

    code, name, severity = "TK103", "dropped-trailing-newline", "warning"

    @classmethod
    def doc(cls) -> RuleDoc:
        # Docstring examples lose their trailing line breaks, and a trailing line break is this
        # rule's whole subject: the Bad example is the text above plus the line break ending it.
        parsed = super().doc()
        return dataclasses.replace(parsed, bad=parsed.bad + "\n")

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        text = target.text
        ending = re.search(r"(?:\r\n|\r|\n)+\Z", text)
        tokens = target.tokens
        if ending is None or not tokens or tokens[-1].type != "data" or not tokens[-1].value.strip():
            # After a closing tag the line break is the editor's end-of-file convention, not
            # prompt text: nobody expects it to render.
            return
        breaks = len(_LINE_BREAK.findall(ending.group()))
        line, column = target.position(ending.start())
        if breaks == 1:
            shown = tokens[-1].value[-24:]
            message = (
                "the template's final line break does not render (Python Jinja drops it: keep_trailing_newline "
                f"is off), so the prompt ends {shown!r}, not {shown + chr(10)!r}; write {{{{ '\\n' }}}} if it "
                "should end with one"
            )
            fix = Fix("delete the final line break (Jinja drops it anyway)", (Edit(ending.start(), len(text), ""),))
        else:
            message = (
                f"the template ends with {breaks} line breaks but the prompt with {breaks - 1}: Python Jinja drops "
                "the last (keep_trailing_newline is off), engines that keep it render one more"
            )
            # Printing the newlines that do render keeps the prompt and makes it engine-independent.
            shown = "\\n" * (breaks - 1)
            fix = Fix(
                f"write the {breaks - 1} rendered line breaks as an expression",
                (Edit(ending.start(), len(text), f"{{{{ '{shown}' }}}}"),),
            )
        yield self.diagnostic(line, column, message, fix=fix)


# ---------------------------------------------------------------------------------------------
# TK104


@register
class CarriageReturn(Rule):
    """Template uses CRLF (or CR) line endings.

    Why: Python Jinja normalises every line ending in the template to ``\\n`` before it renders,
    so transformers' prompt is the same either way; engines and tools that read the source
    verbatim keep the ``\\r``, which tokenizes as an extra token in every turn separator, and diffs
    of the template show every line changed.

    Bad:
        {{ bos_token }}\r
        {% for message in messages %}{{ message['content'] }}{% endfor %}

    Good:
        {{ bos_token }}
        {% for message in messages %}{{ message['content'] }}{% endfor %}

    Fix: converts the line endings to ``\\n`` (safe: transformers renders the same prompt).
    """

    code, name, severity = "TK104", "carriage-return", "warning"
    needs_tree = False

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        source = target.source_text
        first = source.find("\r")
        if first < 0:
            return
        line = len(_LINE_BREAK.findall(source, 0, first)) + 1
        line_start = max(source.rfind("\n", 0, first), source.rfind("\r", 0, first)) + 1
        column = first - line_start + 1
        crlf, count = source.count("\r\n"), source.count("\r")
        kinds = "CRLF" if crlf == count else ("CR" if not crlf else "CRLF and CR")
        edits = tuple(_newline_edits(target.text))
        fix = Fix("convert line endings to \\n", edits) if edits else None
        yield self.diagnostic(
            line,
            column,
            f"{kinds} line endings ({count} carriage return{'s' if count != 1 else ''}): Python Jinja turns them "
            "into \\n, other engines may keep the \\r",
            fix=fix,
        )


def _newline_edits(text: str) -> Iterator[Edit]:
    for match in re.finditer(r"\r\n?", text):
        yield Edit(match.start(), match.end(), "\n")


# ---------------------------------------------------------------------------------------------
# TK105


@register
class TrimDependentLayout(Rule):
    """Layout between tags disappears only because of trim_blocks and lstrip_blocks.

    Why: transformers turns both options on, and the template's newlines and indentation between
    tags vanish. Engines and tools that leave them at Jinja's defaults (off), as minijinja and
    many hand-built servers do, render every one of them: the same template gives those users
    a prompt full of blank lines and spaces. One ``-`` per tag makes the layout disappear under
    any settings.

    Bad:
        {% for message in messages %}
            {% if message['role'] == 'user' %}{{ message['content'] }}{% endif %}
        {% endfor %}

    Good:
        {%- for message in messages %}
            {%- if message['role'] == 'user' %}{{ message['content'] }}{% endif %}
        {%- endfor %}

    Fix: adds ``-`` to the tag after each such gap (safe: transformers renders the same prompt).
    """

    code, name, severity = "TK105", "trim-dependent-layout", "info"
    engines = ("minijinja", "minijinja-js")

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if not _offsets_reliable(target):
            return
        gaps = []
        for gap in _gaps(target):
            if gap.rendered or _strips_before(gap.after) or _strips_after(gap.before):
                continue
            if gap.before is not None and gap.before.type not in _STATEMENT_ENDS:
                continue
            source = gap.source(target.text)
            if source and not source.strip():
                gaps.append(gap)
        if not gaps:
            return
        first = gaps[0]
        line, column = target.position(first.start)
        if first.before is not None:
            line, column = first.before.line, first.before.column
        lines = len({gap.after.line for gap in gaps})
        yield self.diagnostic(
            line,
            column,
            f"{len(gaps)} stretch{'es' if len(gaps) != 1 else ''} of layout whitespace between tags (on {lines} "
            f"line{'s' if lines != 1 else ''}, up to line {gaps[-1].after.line}) "
            f"render{'s' if len(gaps) == 1 else ''} nothing only because transformers sets trim_blocks and "
            "lstrip_blocks; with Jinja's defaults (off) every one of them renders",
            fix=Fix("add '-' to the tag after each gap", tuple(_insert_dash(gap.after) for gap in gaps)),
        )


# ---------------------------------------------------------------------------------------------
# TK106


@register
class SpacingAroundSpecialToken(Rule):
    """Stray spaces next to a special token in template text.

    Why: turn markers such as ``<|im_end|>`` or ``[INST]`` are followed and preceded by exactly
    what the model saw in training. Two spaces where the format has one, or a space between a
    marker and its line break, add a token the model never saw at that place in every turn, and
    nothing errors.

    Bad:
        {{ '<|im_start|>user\\n' + message['content'] + '<|im_end|> \\n' }}

    Good:
        {{ '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' }}

    Fix: deletes the extra spaces (unsafe: the prompt changes; check it against the model's
    documented format).
    """

    code, name, severity = "TK106", "spacing-around-special-token", "warning"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if not _offsets_reliable(target):
            return
        marker = special_token_pattern(target.special_tokens.values())
        for token in target.tokens:
            if token.type == "data":
                literal, newline = token.value, r"\n"
            elif token.type == "string":
                literal, newline = token.value, r"\n|\\n"
            else:
                continue
            for start, end, message in _drift(literal, marker, newline):
                line, column = target.position(token.offset + start)
                yield self.diagnostic(
                    line,
                    column,
                    message,
                    fix=Fix(
                        "delete the extra spaces", (Edit(token.offset + start, token.offset + end, ""),), safe=False
                    ),
                )


_AT_MOST_ONE = "chat formats put at most one space next to a control token"


def _drift(literal: str, marker: re.Pattern, newline: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, message) of each stray run of spaces: the part of it to delete."""
    trailing = re.compile(rf"[ \t]+(?={newline})")
    for match in marker.finditer(literal):
        token = match.group()
        after = re.match(r" {2,}", literal[match.end() :])
        if after:
            yield match.end() + 1, match.end() + after.end(), f"{after.end()} spaces after {token}: {_AT_MOST_ONE}"
            continue
        line_end = trailing.match(literal, match.end())
        if line_end:
            yield line_end.start(), line_end.end(), (
                f"space between {token} and the line break after it: the model sees an extra space token at every turn"
            )
            continue
        before = re.search(r"(?<=\S) {2,}$", literal[: match.start()])
        if before:
            yield before.start() + 1, match.start(), f"{len(before.group())} spaces before {token}: {_AT_MOST_ONE}"
