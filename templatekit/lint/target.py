"""A template prepared for the rules: its text, AST, token stream with columns, and locations.

Everything is derived from the one environment in ``environment.py`` (its lexer and parser), so
rules see the template exactly as transformers compiles it. Jinja nodes carry a line but no
column; columns come from the token stream (``tokens``) or from ``column_of``.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from functools import cached_property
from typing import Any, NamedTuple

import jinja2
from jinja2 import nodes

from ..environment import environment, lex, parse_lexed

_DIRECTIVE = re.compile(r"^\s*templatekit\s*:\s*(?P<body>.*?)\s*$", re.DOTALL)


class Token(NamedTuple):
    """One lexer token: Jinja's type name, its raw text, and where it starts (1-based).

    A named tuple rather than a frozen dataclass: a template has hundreds of tokens and every lint
    builds them all, and a tuple is several times cheaper to create (same fields, equality, hash).
    """

    type: str
    value: str
    line: int
    column: int
    offset: int

    @property
    def end(self) -> int:
        return self.offset + len(self.value)


@dataclasses.dataclass(frozen=True)
class SyntaxProblem:
    message: str
    line: int
    column: int


class LintTarget:
    """One template to lint.

    ``text`` is the template exactly as transformers compiles it. ``source_text`` is the template
    as it is stored in the user's file where that differs (a ``.jinja`` file read without newline
    translation, so CRLF is visible); locations are the same in both.
    """

    def __init__(
        self,
        text: str,
        *,
        template: Any = None,
        source_text: str | None = None,
        special_tokens: dict[str, str] | None = None,
        config: Any = None,
        vocabulary: Any = None,
    ) -> None:
        self.text = text
        self.template = template
        self.source_text = source_text if source_text is not None else text
        self.special_tokens = dict(special_tokens or {})
        self.config = config
        # The model's tokenizer (``templatekit.vocabulary.Vocabulary``), when the source has one;
        # only the special-token rules (TK5xx) read it.
        self.vocabulary = vocabulary
        self._shared: dict[str, Any] = {}
        self._line_starts = [0]
        for index, char in enumerate(text):
            if char == "\n":
                self._line_starts.append(index + 1)

    def shared(self, key: str, compute: Any) -> Any:
        """``compute(self)``, once per target: analyses several rules need (the template's inputs,
        alias maps, ...) are computed by the first rule that asks and reused by the others."""
        if key not in self._shared:
            self._shared[key] = compute(self)
        return self._shared[key]

    def discard_shared(self) -> None:
        """Forget every shared analysis. A rule stopped halfway (its time budget, a recursion
        too deep) may leave one half-built, with lazy parts filled with placeholders; the rules
        after it must compute their own rather than read those."""
        self._shared.clear()

    # -- positions ------------------------------------------------------------------------------
    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), both 1-based, of a character offset."""
        line_index = bisect.bisect_right(self._line_starts, offset) - 1
        return line_index + 1, offset - self._line_starts[line_index] + 1

    def offset(self, line: int, column: int = 1) -> int:
        """Character offset of a 1-based (line, column)."""
        line = max(1, min(line, len(self._line_starts)))
        return self._line_starts[line - 1] + column - 1

    def column_of(self, line: int, needle: str, start_column: int = 1) -> int:
        """Column of the first ``needle`` on ``line`` at or after ``start_column`` (1 if absent)."""
        if not 1 <= line <= len(self.lines):
            return 1
        found = self.lines[line - 1].find(needle, start_column - 1)
        return found + 1 if found >= 0 else 1

    def location(self, line: int | None = None, column: int | None = None) -> str:
        if self.template is not None and hasattr(self.template, "location"):
            return self.template.location(line, column)
        parts = ["<template>"] + [str(part) for part in (line, column) if part is not None]
        return ":".join(parts)

    # -- parsing ---------------------------------------------------------------------------------
    @cached_property
    def lexed(self) -> tuple[tuple[int, str, str], ...] | None:
        """Jinja's raw tokens of the text as (line, type, value), lexed once for the token list,
        the parse and TK612; None when the text does not lex."""
        try:
            return lex(self.text)
        except jinja2.TemplateSyntaxError:
            return None

    @cached_property
    def _parsed(self) -> tuple[nodes.Template | None, SyntaxProblem | None]:
        try:
            if self.lexed is not None:
                return parse_lexed(self.lexed), None
            return environment().parse(self.text), None
        except jinja2.TemplateSyntaxError as exc:
            line = exc.lineno or 1
            return None, SyntaxProblem(str(exc.message or exc), line, self._syntax_error_column(line))
        except RecursionError:
            return None, SyntaxProblem("template is nested too deeply to parse", 1, 1)

    @property
    def tree(self) -> nodes.Template | None:
        """The AST, or None when the template does not parse (see ``syntax_problem``)."""
        return self._parsed[0]

    @property
    def syntax_problem(self) -> SyntaxProblem | None:
        return self._parsed[1]

    def _syntax_error_column(self, line: int) -> int:
        # The parser reports a line only; point at the last tag opened on that line.
        last = None
        for token in self.tokens:
            if token.line > line:
                break
            if token.line == line and token.type in ("block_begin", "variable_begin"):
                last = token
        return last.column if last is not None else 1

    @cached_property
    def tokens(self) -> list[Token]:
        """Every token, whitespace included, with its position. Stops at a lexing error."""
        found: list[Token] = []
        position = 0
        raw = self.lexed if self.lexed is not None else environment().lexer.tokeniter(self.text, None)
        # Tokens come in text order, so the line of each is found by walking forward, not by search.
        line_starts, line_index, last_line = self._line_starts, 0, len(self._line_starts) - 1
        try:
            for _line, kind, value in raw:
                start = self.text.find(value, position) if value else position
                if start < 0:
                    start = position
                while line_index < last_line and line_starts[line_index + 1] <= start:
                    line_index += 1
                found.append(Token(kind, value, line_index + 1, start - line_starts[line_index] + 1, start))
                position = start + len(value)
        except jinja2.TemplateSyntaxError:
            pass
        return found

    def directive_comments(self) -> list[tuple[str, Token, Token]]:
        """(body, opening token, closing token) of each ``{# templatekit: ... #}`` comment, in
        order: capability declarations and suppressions. Only real comment tokens count, so the
        same words inside ``{% raw %}`` or a string literal are not directives."""
        return self.shared("directive_comments", _directive_comments)

    def node_position(self, node: nodes.Node, needle: str | None = None) -> tuple[int, int]:
        """(line, column) for a node: its line, and the column of ``needle`` on that line."""
        line = getattr(node, "lineno", 1) or 1
        return line, self.column_of(line, needle) if needle else 1


def _directive_comments(target: LintTarget) -> list[tuple[str, Token, Token]]:
    found: list[tuple[str, Token, Token]] = []
    if "templatekit" not in target.text:
        return found  # no directive anywhere: the common case, without a pass over the tokens
    tokens = target.tokens
    for index, token in enumerate(tokens):
        if token.type != "comment":
            continue
        match = _DIRECTIVE.match(token.value)
        if match:
            opening = tokens[index - 1] if index > 0 else token
            closing = tokens[index + 1] if index + 1 < len(tokens) else token
            found.append((match.group("body"), opening, closing))
    return found
