"""Errors templatekit reports to its users.

Every error a user can cause derives from ``TemplatekitError`` and renders as one line through
``str()``; the CLI prints that line and exits 2 (input) or 1 (the template failed). Nothing here
prints or exits.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

# Line breaks that str.splitlines() honours besides "\n": a message holding one would print as
# two lines, and terminals honour some of them too.
_LINE_BREAKS = frozenset("\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def one_line(text: str) -> str:
    """``text`` safe to print as one terminal line: line breaks become ``\\n``-style escapes,
    other control characters (ESC, BEL, ...) their ``\\x..`` escapes, and format characters
    (bidi controls, zero-width characters) ``⟨U+202E⟩``, as the visible render shows them.

    File names, template names and template-supplied messages reach error lines; without this a
    name with a newline splits the line, an escape sequence repaints the user's terminal, and a
    right-to-left override built at render time makes ``gnp.exe`` read as ``exe.png``.
    """
    if text.isprintable():
        return text
    return "".join(_escape_control(char) for char in text)


def clip_middle(text: str, limit: int = 400) -> str:
    """``text`` cut to about ``limit`` characters by leaving out its middle, with a note of how
    many characters were left out.

    A template controls its error messages (``raise_exception`` of a million-item list, an
    attribute named by an 8 MB string): printed whole, one such line fills the terminal or a CI
    log. The start stays, so the line still says what went wrong.
    """
    if len(text) <= limit:
        return text
    # Two thirds from the start (what failed), one from the end (often the quote's closing mark
    # or the name the message is about).
    tail = limit // 3
    head = limit - tail
    cut = len(text) - head - tail
    return f"{text[:head]}…[{cut:,} characters cut]…{text[len(text) - tail:]}"


def clipped(text: str, limit: int = 80) -> str:
    """``repr(text)``, cut to about ``limit`` characters: a made-up key or name of thousands of
    characters would otherwise fill the terminal with one error line."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _escape_control(char: str) -> str:
    if char.isprintable() or char == "\t":
        return char
    if char == "\n":
        return "\\n"
    code = ord(char)
    if char in _LINE_BREAKS or code < 0x20 or 0x7F <= code <= 0x9F:
        return repr(char)[1:-1]
    if unicodedata.category(char) == "Cf":
        return f"⟨U+{code:04X}⟩"
    return char


class TemplatekitError(Exception):
    """Base class of the errors templatekit explains in one line."""


class InputError(TemplatekitError):
    """A file, option or value the user gave cannot be used (exit code 2).

    ``location`` names the file (and, where it helps, the template or field inside it) so the
    message always says where the problem is.
    """

    def __init__(self, location: str | Path | None, problem: str) -> None:
        self.location = str(location) if location is not None else None
        self.problem = problem
        message = f"{self.location}: {problem}" if self.location else problem
        super().__init__(one_line(message))


# Jinja's message for a variable the template reads and nobody passed, when it names a special token.
_UNDEFINED_TOKEN = re.compile(r"'(\w+_token)' is undefined")


class RenderFailure(TemplatekitError):
    """Rendering did not produce a prompt.

    ``kind`` is one of:

    - ``"raised"``: the template called ``raise_exception`` (its own message, intended);
    - ``"syntax"``: the template does not parse;
    - ``"error"``: the template failed while rendering (undefined attribute, type error, ...);
    - ``"security"``: the sandbox refused an operation;
    - ``"budget"``: a time, size, memory or recursion budget was exhausted;
    - ``"input"``: transformers rejects the inputs before rendering (for example
      ``continue_final_message`` together with ``add_generation_prompt``).

    ``message`` is exactly the message transformers would raise with (for parity checks);
    ``location`` is "file:line" inside the file the user edits, when known.
    """

    KINDS = ("raised", "syntax", "error", "security", "budget", "input")

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        exception_type: str = "",
        location: str | None = None,
        line: int | None = None,
    ) -> None:
        assert kind in self.KINDS, kind
        self.kind = kind
        self.message = message
        self.exception_type = exception_type
        self.location = location
        self.line = line
        super().__init__(self.describe())

    def placed(self, locate: Any) -> "RenderFailure":
        """This failure located by ``locate(line)`` (``ChatTemplate.location``): renders of a
        template's bare text only know it as ``<template>``."""
        return self._at(locate(self.line) if self.line else self.location)

    def describe_unplaced(self) -> str:
        """``describe()`` without the location, for messages that say where on their own."""
        return self._at(None).describe()

    def undefined_special_token(self) -> str | None:
        """The special token (``bos_token``, ``sep_token``, ...) the template read while nobody
        passed it, when that is what failed; else None."""
        found = _UNDEFINED_TOKEN.fullmatch(self.message or "")
        return found[1] if found and self.exception_type == "UndefinedError" else None

    def _at(self, location: str | None) -> "RenderFailure":
        return RenderFailure(self.kind, self.message, exception_type=self.exception_type, location=location,
                             line=self.line)

    @property
    def spent_budget(self) -> bool:
        """The render failed only after spending its whole time, output or memory budget
        (``SpentBudget``): every other render of the template is likely to spend it again."""
        return self.exception_type in {kind.__name__ for kind in SpentBudget.__subclasses__()}

    @property
    def out_of_time(self) -> bool:
        """The render ran out of its time budget, the one budget a command's --timeout raises."""
        return self.exception_type == OutOfTime.__name__

    def describe(self) -> str:
        """One line: where, what kind, and the message (newlines shown as spaces)."""
        where = f"{self.location}: " if self.location else ""
        label = {
            "raised": "template raised",
            "syntax": "syntax error",
            "error": f"render error ({self.exception_type})" if self.exception_type else "render error",
            "security": "sandbox refused",
            "budget": "budget exceeded",
            "input": "invalid input",
        }[self.kind]
        # A template's own message often spans lines; shown as one, breaks become spaces. It is
        # cut here, not in ``message``, which stays exactly what transformers raises.
        flat = clip_middle(" ".join(self.message.splitlines())) if self.message else self.message
        return one_line(f"{where}{label}: {flat}")


class BudgetExceeded(Exception):
    """Raised inside a render when a guard trips; turned into ``RenderFailure(kind="budget")``."""


class SpentBudget(BudgetExceeded):
    """A budget a render exceeds only after spending all of it (time, output, memory). Unlike a
    single value over a size limit, which is refused before it is built, its cost is paid again in
    full by every later render of the same template (see ``Behaviour``)."""


class OutOfTime(SpentBudget):
    """The render's time budget ran out."""


class OutOfOutput(SpentBudget):
    """The render printed more than its output budget, or used more than its memory budget."""
