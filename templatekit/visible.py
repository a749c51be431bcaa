"""Show a rendered prompt with its whitespace and special tokens visible.

A chat-template bug is often one space, one newline or one token: the visible form marks every
space (``·``), tab (``→``), newline (``↵`` before the real line break), carriage return (``␍``)
and invisible character (``⟨U+200B⟩``), and highlights special tokens when colour is on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

SPACE, TAB, NEWLINE, CARRIAGE_RETURN, NO_BREAK_SPACE = "·", "→", "↵", "␍", "⍽"

# Token shapes that are special in practically every vocabulary that uses them.
_TOKEN_SHAPES = (
    r"<\|[^|\s<>]{1,64}\|>",  # <|im_start|>, <|eot_id|>
    r"<｜[^｜\s]{1,64}｜>",  # DeepSeek's full-width bars
    r"\[/?[A-Z][A-Z_]{2,40}\]",  # [INST], [/INST], [AVAILABLE_TOOLS]
    r"<</?SYS>>",
    r"</?(?:s|start_of_turn|end_of_turn|bos|eos|pad|unk|think|tool_call|tool_response)>",
)

_BOLD_MAGENTA, _DIM, _RESET = "\x1b[1;35m", "\x1b[2m", "\x1b[0m"


def special_token_pattern(tokens: Iterable[str] = ()) -> re.Pattern:
    """A pattern matching the given token strings and the common special-token shapes."""
    literal = sorted({token for token in tokens if token and token.strip()}, key=len, reverse=True)
    parts = [re.escape(token) for token in literal] + list(_TOKEN_SHAPES)
    return re.compile("|".join(parts))


def _mark_character(char: str) -> str:
    if char == " ":
        return SPACE
    if char == "\t":
        return TAB
    if char == "\r":
        return CARRIAGE_RETURN
    if char == "\u00a0":
        return NO_BREAK_SPACE
    category = unicodedata.category(char)
    # Cs: a lone surrogate (JSON can spell one) cannot be written as UTF-8; shown as its code
    # point, it is not mistaken for a template that prints the six characters ``\ud800``.
    if category in ("Cc", "Cf", "Cs", "Zl", "Zp") or (category == "Zs" and char != " "):
        return f"⟨U+{ord(char):04X}⟩"
    return char


def _mark_text(text: str, color: bool) -> str:
    out = []
    for char in text:
        if char == "\n":
            out.append((_DIM + NEWLINE + _RESET if color else NEWLINE) + "\n")
            continue
        marked = _mark_character(char)
        if marked != char and color:
            marked = _DIM + marked + _RESET
        out.append(marked)
    return "".join(out)


def make_visible(text: str, special_tokens: Iterable[str] = (), *, color: bool = False) -> str:
    """``text`` with whitespace and invisible characters marked; special tokens highlighted when
    ``color`` is on (they are already legible without it)."""
    if not color:
        return _mark_text(text, color=False)
    pattern = special_token_pattern(special_tokens)
    pieces = []
    position = 0
    for match in pattern.finditer(text):
        pieces.append(_mark_text(text[position : match.start()], color=True))
        pieces.append(_BOLD_MAGENTA + match.group(0) + _RESET)
        position = match.end()
    pieces.append(_mark_text(text[position:], color=True))
    return "".join(pieces)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def first_lone_surrogate(text: str) -> tuple[int, int] | None:
    """``(offset, code point)`` of the first lone surrogate in ``text``, else None.

    UTF-8 cannot carry one, so a prompt holding one cannot be written exactly: the exact (raw)
    output must refuse it rather than write an escape that reads as six other characters.
    """
    found = _LONE_SURROGATE.search(text)
    return (found.start(), ord(found.group())) if found else None
