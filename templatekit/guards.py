"""Budgets that stop hostile templates without changing what benign ones render.

A chat template is untrusted code. The sandbox already blocks attribute escapes; what it does not
block is work: nested loops, recursion, and values that grow without bound (``'a' * 4000000000``,
``s.replace`` chains, a list repeated inside a list whose repr is astronomically long). Every such
path runs through one of the hooks in ``environment.py``, and each hook asks the active
``RenderGuard`` before the expensive step happens:

- ``tick()`` on every loop iteration and call: wall-time deadline, and periodically memory;
- ``check_text(n)`` / ``check_items(n)`` before a string or container of that size is built;
- ``text_size_estimate(value)`` and ``json_size_estimate(value, ...)`` to measure what ``str()``
  or ``json.dumps`` would produce without producing it (memoised by identity, so shared
  references cost nothing to measure).

The limits sit far above anything a real prompt needs, so a benign template renders exactly as in
transformers; a hostile one ends with ``BudgetExceeded`` and one clear message.
"""

from __future__ import annotations

import abc
import contextvars
import dataclasses
import itertools
import os
import re
import sys
import time
from collections.abc import Mapping, Set, ValuesView
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

from .errors import BudgetExceeded, OutOfOutput, OutOfTime

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits for one render. Defaults are far above any real prompt and far below harm."""

    seconds: float | None = None
    """Wall time for the render itself (compilation excluded). None: ``render_seconds`` for the
    size of the conversation, so a long conversation gets the time a long conversation needs."""
    max_output: int = 8 * MiB
    """Characters of rendered output; also the size of any single string a template builds."""
    max_items: int = 1_000_000
    """Elements of any single list, tuple or dict a template builds."""
    max_memory: int = 256 * MiB
    """Growth of the process's resident memory during the render, in bytes."""
    max_int_bits: int = 65_536
    """Size of any integer arithmetic result (stops ``9**9**9``)."""
    max_template: int = 1 * MiB
    """Characters of template source accepted for compilation."""
    max_work: int = 1 << 34
    """Characters one operation may compare, copy or scan (``==``/``in`` on containers of long
    strings, ``|striptags``, ``|wordwrap``): about a second of work. Such an operation runs in C
    without reaching a tick, so it is measured before it starts. An element step (a pair of
    objects compared, an item hashed or sorted) counts as ``ELEMENT_WORK`` (256) characters,
    so at most about 67 million of them."""
    max_nodes: int = 10_000
    """Syntax-tree nodes of a template accepted for compilation, which no other budget bounds.
    Jinja's code generation and Python's compile() grow faster than the tree: at 10,000 nodes
    the worst shapes measured (empty macros, 80 nested loops around thousands of outputs) take
    4.5 s, at 15,000 9 s, at 30,000 43 s and 690 MB. The largest of 786 real templates has
    2,946 nodes."""
    max_python: int = 1 * MiB
    """Characters of Python source generated from a template, checked before Python compiles
    it (its compile time grows faster than the source: 1.3 MB takes 1 s, 2.6 MB 4 s, 3.9 MB 8 s).
    An empty macro is one node but 260 characters of Python; the largest real template
    generates 127 KB."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and value <= 0:
                raise ValueError(f"budget {field.name} must be positive")

    def seconds_for(self, parts: int = 0, characters: int = 0) -> float:
        """The wall time for rendering a conversation of ``parts`` messages, tools and documents
        holding ``characters`` characters of text."""
        return self.seconds if self.seconds is not None else render_seconds(parts, characters)


# A fixed time budget either stops benign renders of long conversations or lets an endless loop
# on a short one run for minutes. What real templates need grows two ways, measured here (2 cores)
# over the 786 corpus templates, with transformers taking about as long:
# - with the square of the number of messages, since templates look through the whole
#   conversation again for every message (for the last user turn, the last tool call): the
#   slowest, a gpt-oss template, takes 1.5 s for 1,000 messages, 7 s for 2,000, 19 s for 3,000,
#   and 27 s for 2,000 while the full test suite ran alongside;
# - with the length of the text, since some templates loop over a string's characters (content
#   they expected to be a list of parts): 7-8 us per character.
# The default is a short base plus about six times the first (renders run several times slower on
# a busy machine) and two to three times the second, capped.
BASE_SECONDS = 2.0
SECONDS_PER_THOUSAND_PARTS_SQUARED = 12.0
SECONDS_PER_MILLION_CHARACTERS = 20.0
MAX_DEFAULT_SECONDS = 120.0


def render_seconds(parts: int = 0, characters: int = 0) -> float:
    """The default time budget of a render whose conversation has ``parts`` messages, tools and
    documents holding ``characters`` characters of text: 2 s for an ordinary conversation, 14 s
    for 1,000 short messages, 50 s for 2,000, 22 s for 1 MB of text; never more than 120 s."""
    allowance = (SECONDS_PER_THOUSAND_PARTS_SQUARED * (max(parts, 0) / 1000) ** 2
                 + SECONDS_PER_MILLION_CHARACTERS * max(characters, 0) / 1_000_000)
    return min(BASE_SECONDS + allowance, MAX_DEFAULT_SECONDS)


DEFAULT_BUDGET = Budget()

# How often (in ticks, and in bytes noted as allocated) the resident memory is sampled.
_MEMORY_SAMPLE_TICKS = 4096
_MEMORY_SAMPLE_BYTES = 32 * MiB


def resident_memory() -> int:
    """Current resident set size in bytes (peak size where the current one is unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class RenderGuard:
    """The budget state of one render: a deadline, counters, and the memory baseline."""

    def __init__(self, budget: Budget = DEFAULT_BUDGET, *, timed: bool = True, parts: int = 0,
                 characters: int = 0) -> None:
        self.budget = budget
        self.seconds = budget.seconds_for(parts, characters)
        self.deadline = time.monotonic() + self.seconds if timed else float("inf")
        self.ticks = 0
        self.allocated_since_sample = 0
        # Measured at the first memory sample, not here: reading it costs more than most renders.
        self.memory_baseline: int | None = None if timed else 0
        self.output_length = 0
        self.generation_spans: list[tuple[int, int]] = []
        self.now: Any = None
        self.sizes = SizeMemo()
        # Strings up to this length need no bookkeeping (well under any budget).
        self.small_text = min(65_536, budget.max_output)

    # -- time and memory ------------------------------------------------------------------------
    def tick(self) -> None:
        """One unit of work. Hot paths inline this (increment, then ``check_clock`` every 32)."""
        self.ticks += 1
        if not self.ticks & 31:  # the clock is read every 32 ticks: microseconds apart, much cheaper
            self.check_clock()

    def check_clock(self) -> None:
        if time.monotonic() > self.deadline:
            # Not "the template loops forever": a long conversation takes long too. How to allow
            # more depends on the caller (lint's budget is fixed), so the caller adds that.
            raise OutOfTime(f"render took longer than {self.seconds:.3g} s (its time budget)")
        if self.ticks % _MEMORY_SAMPLE_TICKS == 0:
            self._sample_memory()

    def note_allocation(self, size: int) -> None:
        """Count ``size`` bytes about to be allocated; sample memory when enough has piled up."""
        self.allocated_since_sample += size
        if self.allocated_since_sample >= _MEMORY_SAMPLE_BYTES:
            self._sample_memory()

    def _sample_memory(self) -> None:
        self.allocated_since_sample = 0
        if self.memory_baseline is None:
            self.memory_baseline = resident_memory()
            return
        if self.memory_baseline and resident_memory() - self.memory_baseline > self.budget.max_memory:
            raise OutOfOutput(
                f"render used more than {self.budget.max_memory // MiB} MiB of memory (memory budget)"
            )

    # -- sizes ----------------------------------------------------------------------------------
    def check_text(self, length: int, what: str = "string") -> None:
        if length <= self.small_text:
            return
        if length > self.budget.max_output:
            raise BudgetExceeded(
                f"{what} of {length:,} characters exceeds the size budget of "
                f"{self.budget.max_output:,} characters"
            )
        self.note_allocation(length * 2)

    def check_items(self, count: int, what: str = "sequence") -> None:
        if count > self.budget.max_items:
            raise BudgetExceeded(
                f"{what} of {count:,} items exceeds the size budget of {self.budget.max_items:,} items"
            )
        self.note_allocation(count * 8)

    def check_int_bits(self, bits: int) -> None:
        if bits > self.budget.max_int_bits:
            raise BudgetExceeded(
                f"integer of about {bits:,} bits exceeds the size budget of {self.budget.max_int_bits:,} bits"
            )

    def check_rendered(self, value: Any, what: str = "value") -> None:
        """Bound the text ``str(value)`` would produce, before producing it."""
        if type(value) is str:
            self.check_text(len(value), what)
        else:
            self.check_text(self.estimate(value), what)

    def estimate(self, value: Any) -> int:
        """``text_size_estimate`` with this render's memo and output limit."""
        return text_size_estimate(value, self.budget.max_output, self.sizes)

    def json_size(self, value: Any, ensure_ascii: Any = False, indent: Any = None, separators: Any = None) -> int:
        """``json_size_estimate`` with this render's memo and output limit."""
        return json_size_estimate(value, self.budget.max_output, self.sizes, ensure_ascii=ensure_ascii,
                                  indent=indent, separators=separators)

    def check_work(self, steps: int, what: str) -> None:
        """Refuse an operation that would compare, copy or scan ``steps`` characters in one go."""
        if steps > self.budget.max_work:
            raise BudgetExceeded(
                f"{what} would process about {steps:,} characters, which exceeds the work budget of "
                f"{self.budget.max_work:,} characters per operation"
            )

    def finish(self) -> None:
        """The render is done: one that ended after its deadline spent its time budget even if no
        tick saw the deadline pass (the last slow operation ran to its end), and every later
        render of the template would spend it again."""
        if time.monotonic() > self.deadline:
            raise OutOfTime(f"render took longer than {self.seconds:.3g} s (its time budget)")

    def output_exceeded(self) -> OutOfOutput:
        return OutOfOutput(f"rendered output exceeds the output budget of {self.budget.max_output:,} characters")


_active_guard: contextvars.ContextVar[RenderGuard | None] = contextvars.ContextVar(
    "templatekit_render_guard", default=None
)


def current_guard() -> RenderGuard:
    """The guard of the render in progress; outside a render (e.g. while Jinja folds constants at
    compile time) an untimed guard with the default limits."""
    guard = _active_guard.get()
    return guard if guard is not None else RenderGuard(timed=False)


def activate(guard: RenderGuard) -> contextvars.Token:
    return _active_guard.set(guard)


def deactivate(token: contextvars.Token) -> None:
    _active_guard.reset(token)


# ---------------------------------------------------------------------------------------------
# size estimation
#
# Each estimate is the exact length of what Python would print, or a few characters more, so a
# value whose text fits the budget is never refused; and each stops counting as soon as the count
# passes the limit, so refusing an astronomically large value costs no more than the limit's worth
# of counting. Neither builds the text it measures (strings that need escaping are escaped a chunk
# at a time).

# Characters escaped at once when measuring a string that needs escapes: small enough that the
# escaped chunk (at most ten times longer) costs little memory, large enough to run at C speed.
_ESCAPE_CHUNK = 1 << 16
# Strings this long are remembered once measured (the same message text is often printed twice).
_REMEMBERED_STRING = 4096


def text_size_estimate(value: Any, limit: int, memo: "SizeMemo | None" = None) -> int:
    """An upper bound on ``len(str(value))`` that stops counting once it passes ``limit``.

    Containers are measured by their repr. Each distinct object is measured once, so
    ``[[big] * 1000] * 1000`` costs a few thousand steps to find out it would print 10^12
    characters. Cycles count as a short placeholder (Python prints ``[...]`` for them). A
    ``SizeMemo`` carries measurements from one call to the next within a render.
    """
    if isinstance(value, str):
        return len(value)
    size = _REPR.leaf_size(value)
    if size is not None:
        return size
    return (memo if memo is not None else SizeMemo()).measure(value, limit)


def json_size_estimate(
    value: Any, limit: int, memo: "SizeMemo | None" = None, *, ensure_ascii: Any = False,
    indent: Any = None, separators: Any = None,
) -> int:
    """An upper bound on ``len(json.dumps(value, ensure_ascii=..., indent=..., separators=...))``
    that stops counting once it passes ``limit``; for a value ``json.dumps`` refuses (an object it
    cannot serialise, a cycle), a bound on what it would have built before refusing.

    ``separators`` must be None or a sequence of two (a caller holding some other iterable
    materialises it first, so that measuring does not consume what ``json.dumps`` then reads).
    """
    style = _JsonStyle.of(ensure_ascii, indent, separators)
    if isinstance(value, str):
        return _json_str_size(value, style.ensure_ascii, limit)
    size = style.leaf_size(value)
    if size is not None:
        return size
    return (memo if memo is not None else SizeMemo()).measure(value, limit, style)


class SizeMemo:
    """Printed sizes of containers, remembered for the rest of a render, per way of printing.

    Sound because the immutable sandbox cannot change a list, dict or tuple, and every measured
    object is kept alive here so its id cannot be reused by another object. Namespaces are the
    one mutable container, so neither they nor anything holding one is remembered.
    """

    def __init__(self) -> None:
        # style key -> id -> (size at nesting level 0, size added per level of nesting)
        self.tables: dict[Any, dict[int, tuple[int, int]]] = {}
        self.pinned: list[Any] = []

    def measure(self, value: Any, limit: int, style: "_Style | None" = None) -> int:
        return _measure(value, style or _REPR, limit, self)


class _Frame:
    """A container being measured: what it adds at its own nesting level (``own``) and per level
    below the top (``per_level``), both relative to where it sits; and what each of its parts
    adds besides the part itself (``part_own``, ``part_level``; for a keyed part, also its key)."""

    __slots__ = ("item", "parts", "keyed", "part_own", "part_level", "depth", "own", "per_level", "count",
                 "stable")

    def __init__(self, item: Any, style: "_Style", depth: int) -> None:
        self.item = item
        self.parts, self.keyed, self.part_own, self.part_level, self.stable = style.parts(item)
        self.depth = depth
        self.own = 0
        self.per_level = 0
        self.count = 0


_DONE = object()


def _measure(root: Any, style: "_Style", limit: int, memo: SizeMemo) -> int:
    """The printed size of the container ``root`` in ``style``; or, as soon as the running count
    passes ``limit``, that count. Iterative, so any nesting depth is measured exactly."""
    table = memo.tables.setdefault(style.key, {})
    known = table.get(id(root))
    if known is not None:
        return known[0]
    leaf_size, key_size = style.leaf_size, style.key_size
    in_progress = {id(root)}
    stack = [_Frame(root, style, 0)]
    # What has been counted so far, at each part's real nesting level: the early-stop test.
    running = 0
    while True:
        frame = stack[-1]
        child = next(frame.parts, _DONE)
        if child is _DONE:
            own, per_level = style.closing(frame.count)
            frame.own += own
            frame.per_level += per_level
            running += own + per_level * frame.depth
            stack.pop()
            in_progress.discard(id(frame.item))
            if frame.stable:
                table[id(frame.item)] = (frame.own, frame.per_level)
                memo.pinned.append(frame.item)
            if not stack:
                return frame.own
            parent = stack[-1]
            parent.own += frame.own + frame.per_level
            parent.per_level += frame.per_level
            parent.stable = parent.stable and frame.stable
            if running > limit:
                return running
            continue
        frame.count += 1
        own = frame.part_own
        if frame.keyed:
            key, child = child
            own += key_size(key)
        frame.own += own
        frame.per_level += frame.part_level
        running += own + frame.part_level * frame.depth
        size = leaf_size(child)
        if size is None and type(child) is str:  # a long string that needs escaping
            remembered = table.get(id(child))
            if remembered is None:
                size = style.string_size(child, limit - running)
                if size <= limit - running:
                    table[id(child)] = (size, 0)
                    memo.pinned.append(child)
            else:
                size = remembered[0]
        if size is not None:
            frame.own += size
            running += size
        else:
            known = table.get(id(child))
            if known is None and id(child) not in in_progress:
                in_progress.add(id(child))
                stack.append(_Frame(child, style, frame.depth + 1))
                continue
            if known is None:  # a cycle: Python prints "[...]", json.dumps refuses
                known = (style.cycle_size, 0)
                frame.stable = False
            frame.own += known[0] + known[1]
            frame.per_level += known[1]
            running += known[0] + known[1] * (frame.depth + 1)
        if running > limit:
            return running


class _Style(abc.ABC):
    """How Python prints a value; subclasses say how each kind of value prints."""

    cycle_size = 5
    key: Any = None
    """Tells this way of printing apart from others in a ``SizeMemo``."""

    @abc.abstractmethod
    def leaf_size(self, value: Any) -> int | None:
        """The printed size of a value with no parts to measure; None for containers and for
        long strings that need escaping (measured by ``string_size``, and remembered)."""
        ...

    @abc.abstractmethod
    def string_size(self, text: str, limit: int) -> int:
        ...

    @abc.abstractmethod
    def parts(self, container: Any) -> tuple[Any, bool, int, int, bool]:
        """(iterator over the parts, whether each is a (key, value) pair whose key ``key_size``
        measures, what each part adds besides itself at the container's level and per level,
        whether the size can be remembered)."""
        ...

    def key_size(self, key: Any) -> int:
        """The printed size of a mapping key, asked only of styles whose ``parts`` yields (key,
        value) pairs; by default a key prints like any other value."""
        size = self.leaf_size(key)
        return 0 if size is None else size

    @abc.abstractmethod
    def closing(self, count: int) -> tuple[int, int]:
        """What a container of ``count`` parts adds besides its parts and what ``parts`` said."""
        ...


class _ReprStyle(_Style):
    """``str()`` of a container, that is ``repr()`` of everything inside it.

    Brackets and type names are counted generously (16 characters per container: ``frozenset({``
    ... ``})``), separators exactly (2 per part; a mapping's key and value are two parts)."""

    key = "repr"

    def leaf_size(self, value: Any) -> int | None:
        kind = type(value)
        if kind is str:
            if len(value) <= _REMEMBERED_STRING or value.isprintable():
                return _repr_str_size(value, sys.maxsize)
            return None
        if kind is int:
            return _int_size(value)
        if value is None or kind is bool:
            return 5
        if kind is float:
            return len(float.__repr__(value))
        if kind in _CONTAINERS or isinstance(value, (Mapping, list, tuple, set, frozenset)):
            return None
        if kind.__name__ in _DICT_VIEWS or _namespace_attrs(value) is not None:
            return None
        if isinstance(value, str):  # str subclasses such as Markup print as Markup('...')
            return _repr_str_size(value, sys.maxsize) + 16
        return 128

    def string_size(self, text: str, limit: int) -> int:
        return _repr_str_size(text, limit)

    def parts(self, container: Any) -> tuple[Any, bool, int, int, bool]:
        if not isinstance(container, (Mapping, list, tuple)):
            attrs = _namespace_attrs(container)
            if attrs is not None:  # a namespace prints <Namespace {...}> and can change later
                return itertools.chain.from_iterable(attrs.items()), False, 2, 0, False
        if isinstance(container, Mapping):
            return itertools.chain.from_iterable(container.items()), False, 2, 0, True
        return iter(container), False, 2, 0, True

    def closing(self, count: int) -> tuple[int, int]:
        return 16, 0


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
_DICT_VIEWS = ("dict_keys", "dict_values", "dict_items")
_REPR = _ReprStyle()


class _JsonStyle(_Style):
    """``json.dumps`` with given ``ensure_ascii``, ``indent`` and ``separators``: exact.

    With an indent, a container's size grows with the level it sits at (every line inside it is
    indented once more), so sizes are kept as (size at level 0, growth per level)."""

    cycle_size = 0  # json.dumps refuses a cycle

    def __init__(self, ensure_ascii: bool, indent: int | None, item_separator: int, key_separator: int) -> None:
        self.ensure_ascii = ensure_ascii
        self.indent = indent  # characters per level of indentation; None: no line breaks at all
        self.item_separator = item_separator
        self.key_separator = key_separator
        self.key = ("json", ensure_ascii, indent, item_separator, key_separator)
        # Before each part: a separator (one fewer than parts: see closing) and, indented, a line
        # break and one more level of indentation than the container's own.
        self.part_level = 0 if indent is None else indent
        self.part_own = item_separator + (0 if indent is None else 1 + indent)

    @classmethod
    def of(cls, ensure_ascii: Any, indent: Any, separators: Any) -> "_JsonStyle":
        if indent is None:
            width = None
        elif isinstance(indent, str):
            width = len(indent)
        elif isinstance(indent, int):
            width = max(indent, 0)  # json indents with " " * indent
        else:
            width = 0  # json.dumps refuses it before writing anything
        item, key = (", " if width is None else ","), ": "
        if isinstance(separators, (tuple, list, str)) and len(separators) == 2:
            item, key = separators
        return cls(bool(ensure_ascii), width, _text_length(item), _text_length(key))

    def leaf_size(self, value: Any) -> int | None:
        kind = type(value)
        if kind is str:
            if len(value) <= _REMEMBERED_STRING or value.isprintable():
                return _json_str_size(value, self.ensure_ascii, sys.maxsize)
            return None
        if kind is list or kind is dict or kind is tuple:
            return None
        if isinstance(value, str):
            return _json_str_size(value, self.ensure_ascii, sys.maxsize)
        scalar = _json_scalar_size(value)
        if scalar is not None:
            return scalar
        if isinstance(value, (list, tuple, dict)):
            return None
        return 0  # json.dumps refuses it (TypeError) before writing it

    def string_size(self, text: str, limit: int) -> int:
        return _json_str_size(text, self.ensure_ascii, limit)

    def parts(self, container: Any) -> tuple[Any, bool, int, int, bool]:
        if isinstance(container, dict):
            return iter(container.items()), True, self.part_own + self.key_separator, self.part_level, True
        return iter(container), False, self.part_own, self.part_level, True

    def key_size(self, key: Any) -> int:
        if isinstance(key, str):
            return _json_str_size(key, self.ensure_ascii, sys.maxsize)
        scalar = _json_scalar_size(key)
        # json.dumps writes a number, true, false or null key as a quoted string, and refuses others.
        return 0 if scalar is None else scalar + 2

    def closing(self, count: int) -> tuple[int, int]:
        if not count:
            return 2, 0
        if self.indent is None:
            return 2 - self.item_separator, 0
        # The closing bracket sits on its own line at the container's level.
        return 2 - self.item_separator + 1, self.indent


def _text_length(separator: Any) -> int:
    # A separator that is not text makes json.dumps fail; it never adds characters.
    return len(separator) if isinstance(separator, str) else 0


def _json_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _repr_str_size(text: str, limit: int) -> int:
    """``len(repr(text))``, or up to one character per quote more; stops past ``limit``."""
    if text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count("'")
    total = 2
    for start in range(0, len(text), _ESCAPE_CHUNK):
        piece = str(text[start : start + _ESCAPE_CHUNK])
        quoted = str.__repr__(piece)
        total += len(quoted) - 2
        if quoted[0] == '"':  # the piece alone needed no escaped ', the whole string may
            total += piece.count("'")
        if total > limit:
            break
    return total


def _json_str_size(text: str, ensure_ascii: bool, limit: int) -> int:
    """``len(json.dumps(text, ensure_ascii=ensure_ascii))``, exactly; stops past ``limit``."""
    if text.isprintable() and (text.isascii() or not ensure_ascii):
        return len(text) + 2 + text.count('"') + text.count("\\")
    escape = encode_basestring_ascii if ensure_ascii else encode_basestring
    total = 2
    for start in range(0, len(text), _ESCAPE_CHUNK):
        total += len(escape(str(text[start : start + _ESCAPE_CHUNK]))) - 2
        if total > limit:
            break
    return total


def _json_scalar_size(value: Any) -> int | None:
    """The length json.dumps writes for a number, true, false or null; None for anything else."""
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, int):
        return _int_size(value)
    if isinstance(value, float):
        return len(_json_float(value))
    return None


def _int_size(number: int) -> int:
    if number.bit_length() <= 4096:  # printing it is cheap: measure exactly
        return len(int.__repr__(number))
    # bit_length * log10(2), rounded up, and a sign; never materialises the digits.
    return number.bit_length() * 30103 // 100000 + 3


# Where str.splitlines breaks a line ("\r\n" counts once).
_LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_WIDE_LINE_BREAKS = ("\x85", "\u2028", "\u2029")


def line_breaks(text: str) -> int:
    """How many line breaks ``text.splitlines()`` sees in ``text`` (not only newlines)."""
    breaks = sum(text.count(mark) for mark in _LINE_BREAKS) - text.count("\r\n")
    if not text.isascii():
        breaks += sum(text.count(mark) for mark in _WIDE_LINE_BREAKS)
    return breaks


def indented_size(text: str, indentation: int, first: bool) -> int:
    """A bound on the length of Jinja's ``text|indent``: every line but the first (the first too
    with ``first``) gains the indentation; line breaks become one newline each."""
    return len(text) + (line_breaks(text) + (1 if first else 0)) * max(indentation, 0)


def wrapped_size(text: str, width: Any, wrapstring: int) -> int:
    """A bound on the length of Jinja's ``text|wordwrap(width, wrapstring=...)``.

    Jinja wraps each line of ``text`` with textwrap and joins every wrapped line with the
    wrapstring. textwrap ends a line only when the next piece does not fit, so any two consecutive
    wrapped lines span more than ``width`` characters of input (whitespace dropped at the break
    included), or the first alone fills ``width``: a line of n characters wraps into at most
    2n/width + 1 lines. Without a usable width, at most one line per character.
    """
    at_most_one_per_character = len(text) * (1 + wrapstring)
    if type(width) is not int or width < 1:
        return at_most_one_per_character
    lines = 2 * (len(text) // width) + 2 * (line_breaks(text) + 1)
    return min(len(text) + lines * wrapstring, at_most_one_per_character)


# Up to this many growing entries of a str.translate table are counted one by one (one pass over
# the text each); more, and the text's characters are tallied once instead.
_TRANSLATE_COUNTS = 32


def translated_size(text: str, table: Mapping, limit: int) -> int:
    """``len(text.translate(table))``, or more for a table that also deletes; exact where the
    cheap bound (every character mapped to the longest replacement) would pass ``limit``."""
    growth: dict[int, int] = {}
    for key, value in table.items():
        if isinstance(value, str) and len(value) > 1 and isinstance(key, (int, float)):
            # translate looks up ord(character): a float key equal to it is found too
            if key == key and abs(key) != float("inf") and key == int(key) and 0 <= key <= sys.maxunicode:
                growth[int(key)] = max(growth.get(int(key), 0), len(value) - 1)
    if not growth:
        return len(text)
    cheap = len(text) * (1 + max(growth.values()))
    if cheap <= limit:
        return cheap
    if len(growth) <= _TRANSLATE_COUNTS:
        return len(text) + sum(text.count(chr(code)) * extra for code, extra in growth.items())
    from collections import Counter

    return len(text) + sum(count * growth.get(ord(character), 0) for character, count in Counter(text).items())


def _namespace_attrs(item: Any) -> Mapping | None:
    # jinja2.utils.Namespace keeps its attributes in a name-mangled dict; its repr prints them.
    try:
        attrs = object.__getattribute__(item, "_Namespace__attrs")
    except AttributeError:
        return None
    return attrs if isinstance(attrs, Mapping) else None


# ---------------------------------------------------------------------------------------------
# format strings: widths and precisions are how a short format builds a huge string

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_BRACE_SPEC = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)(?:\.(\d+))?[^{}]*\}")


def format_widths(template: str, *, brace: bool) -> int:
    """The sum of the field widths and precisions in a %-style or {}-style format string."""
    pattern = _BRACE_SPEC if brace else _PERCENT_SPEC
    total = 0
    for match in pattern.finditer(template):
        for group in match.groups():
            if group and group.isdigit():
                total += int(group)
    return total


def star_widths(template: str, args: Any) -> int:
    """Widths a %-format takes from its arguments (``'%*d' % (10**9, 1)``)."""
    if "*" not in template:
        return 0
    values = args if isinstance(args, tuple) else (args,)
    return sum(abs(value) for value in values if type(value) is int)


def brace_format_widths(template: str, args: tuple, kwargs: Mapping, lookup: Any) -> int:
    """The sum of the field widths and precisions in a {}-style format string, with the widths
    that nested fields (``'{0:{1}}'``) take from the arguments resolved as ``str.format`` would;
    ``lookup(value, key, is_attribute)`` reads one step of a field name (sandboxed)."""
    import _string
    from string import Formatter

    parser = Formatter()
    total = 0
    auto = 0
    for _literal, field, spec, _conversion in _parse_format(parser, template):
        if field is None:
            continue
        if field == "":
            auto += 1  # the outer field takes its number before the nested ones
        if not spec:
            continue
        if "{" not in spec:
            total += _spec_widths(spec)
            continue
        built = []
        for literal, inner, inner_spec, conversion in _parse_format(parser, spec):
            built.append(literal)
            if inner is None:
                continue
            if inner_spec:
                # bounded before the nested field is formatted: it cannot nest any deeper
                total += _spec_widths(inner_spec)
            if inner == "":
                inner, auto = str(auto), auto + 1
            try:
                first, rest = _string.formatter_field_name_split(inner)
                value = args[first] if isinstance(first, int) else kwargs[first]
                for is_attribute, key in rest:
                    value = lookup(value, key, is_attribute)
                if conversion == "r":
                    value = repr(value) if type(value) in (int, float, bool, str) else ""
                elif conversion in ("s", "a"):
                    value = str(value) if type(value) in (int, float, bool, str) else ""
                if type(value) not in (int, float, bool, str):
                    continue
                text = format(value, inner_spec)
            except Exception:  # noqa: BLE001 - str.format itself reports what is wrong
                continue
            built.append(text[:64])  # a longer width is no width at all: str.format refuses it
        total += _spec_widths("".join(built))
    return total


def _parse_format(parser: Any, template: str) -> list:
    try:
        return list(parser.parse(template))
    except ValueError:  # str.format refuses it before building anything
        return []


_SPEC_WIDTH = re.compile(r"(\d+)(?:[,_])?(?:\.(\d+))?")


def _spec_widths(spec: str) -> int:
    total = 0
    for match in _SPEC_WIDTH.finditer(spec):
        for group in match.groups():
            if group:
                total += int(group) if len(group) < 20 else 1 << 64
    return total


# ---------------------------------------------------------------------------------------------
# work: operations that compare, copy or scan long text inside C, where no tick can stop them
#
# Each estimate is an upper bound on the characters the operation touches, stopped once it
# passes ``limit``; a benign operation touches a few kilobytes at most.


# One element step inside C (a pair of objects compared, one item of a tuple hashed) costs about
# 25 ns, one character compared about 0.1 ns: so a step counts as this many characters, and a
# structure that shares references (``(t, t)`` doubled thirty times: a few bytes to hold, 2**30
# steps to compare or hash) is costed by its expanded size, not its size in memory.
ELEMENT_WORK = 256


def comparison_work(operator: str, left: Any, right: Any, limit: int) -> int:
    """A bound on the characters Python compares to evaluate ``left <operator> right``, for
    Jinja's comparison operators (``eq``, ``ne``, ``lt``, ``lteq``, ``gt``, ``gteq``, ``in``,
    ``notin``)."""
    if operator in ("in", "notin"):
        return containment_work(left, right, limit)
    return _pair_work(left, right, operator in ("eq", "ne"), limit, {}, 0)


def containment_work(needle: Any, haystack: Any, limit: int) -> int:
    """A bound on the characters ``needle in haystack`` compares."""
    if isinstance(haystack, str):
        return len(haystack) + (len(needle) if isinstance(needle, str) else 0)
    if isinstance(haystack, (Mapping, Set)):  # hashing the needle, then at most one comparison
        return 2 * len(needle) + 1 if isinstance(needle, str) else hash_work(needle, limit)
    if isinstance(haystack, (list, tuple, ValuesView)):
        memo: dict[tuple[int, int], int] = {}
        total = len(haystack) * ELEMENT_WORK
        for item in haystack:
            if item is not needle:  # `in` and `==` inside containers skip identical objects
                total += _pair_work(needle, item, True, limit - total, memo, 0)
                if total > limit:
                    break
        return total
    return 1


# Comparing containers nested deeper than this is no chat template's business.
_COMPARISON_DEPTH = 100


def _pair_work(left: Any, right: Any, equality: bool, limit: int, memo: dict, depth: int) -> int:
    if isinstance(left, str):
        if not isinstance(right, str) or left is right:
            return 1
        if equality:  # unequal lengths are unequal at once
            return len(left) if len(left) == len(right) else 1
        return min(len(left), len(right))
    if isinstance(left, (list, tuple)):
        if not isinstance(right, (list, tuple)) or isinstance(left, list) != isinstance(right, list):
            return 1
        if equality and len(left) != len(right):
            return 1
        pairs: Any = zip(left, right)
    elif isinstance(left, dict):
        if not isinstance(right, dict) or len(left) != len(right):
            return 1
        pairs = ((value, right.get(key)) for key, value in left.items())
    else:
        return 1
    key = (id(left), id(right))
    known = memo.get(key)
    if known is not None:
        return known
    if depth > _COMPARISON_DEPTH:
        return limit + 1
    total = min(len(left), len(right)) * ELEMENT_WORK
    if isinstance(left, dict):
        total += sum(len(name) for name in left if isinstance(name, str))
    for one, other in pairs:
        if one is not other:
            total += _pair_work(one, other, True, limit - total, memo, depth + 1)
            if total > limit:
                break
    memo[key] = total
    return total


def hash_work(key: Any, limit: int) -> int:
    """A bound on the work of looking ``key`` up in a dict or set: hashing it (a tuple's hash is
    not cached, and walks every item), then at most one comparison with an equal-hashing key."""
    if type(key) is not tuple and not isinstance(key, (tuple, frozenset)):
        return 1  # str caches its hash; lists and dicts are unhashable and fail at once
    return 2 * expanded_work(key, limit, {}) + 1


def expanded_work(value: Any, limit: int, memo: dict) -> int:
    """A bound on the work of comparing ``value`` with anything, or hashing it: each element of
    each container on every path from ``value`` (a container reached twice counts twice, as the
    comparison walks it twice) at ``ELEMENT_WORK``, plus every string's characters. Memoized by
    identity in ``memo``, so it takes one step per distinct object, and stops once past ``limit``."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, (list, tuple, dict, set, frozenset)):
        return 1
    return _expanded(value, limit, memo, 0)


def _expanded(value: Any, limit: int, memo: dict, depth: int) -> int:
    known = memo.get(id(value))
    if known is not None:
        return known
    if depth > _COMPARISON_DEPTH:
        return limit + 1
    total = (len(value) + 1) * ELEMENT_WORK
    items: Any = itertools.chain.from_iterable(value.items()) if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple, dict, set, frozenset)):
            total += _expanded(item, limit - total, memo, depth + 1)
            if total > limit:
                break
    memo[id(value)] = total
    return total


def sorting_work(items: Any, limit: int) -> int:
    """A bound on the work of sorting ``items`` (a list or tuple): each comparison costs at most
    the expanded size of either item, and an item takes part in at most about log2(n)
    comparisons while runs merge plus up to 64 while short runs are insertion-sorted."""
    count = len(items)
    if count < 2:
        return count
    rounds = min(count, 64) + count.bit_length()
    memo: dict = {}
    total = count * ELEMENT_WORK
    for item in items:
        total += expanded_work(item, limit, memo) * rounds
        if total > limit:
            break
    return total


def striptags_work(text: str) -> int:
    """A bound on the characters MarkupSafe's ``striptags`` copies: it rebuilds the whole string
    once per comment and once per tag it removes."""
    removals = min(text.count("<"), text.count(">")) + text.count("<!--")
    return removals * len(text)


# textwrap splits words at these characters only (not at other Unicode whitespace).
_TEXTWRAP_WHITESPACE = "\t\n\x0b\x0c\r"
_WORD_CHUNK = 1 << 16


def longest_word(text: str) -> int:
    """The longest run of characters textwrap keeps together as one word (at most)."""
    longest = carry = 0
    for start in range(0, len(text), _WORD_CHUNK):
        piece = text[start : start + _WORD_CHUNK]
        for space in _TEXTWRAP_WHITESPACE:
            if space in piece:
                piece = piece.replace(space, " ")
        words = piece.split(" ")
        if len(words) == 1:
            carry += len(piece)
            longest = max(longest, carry)
            continue
        longest = max(longest, carry + len(words[0]), max(map(len, words[1:-1]), default=0))
        carry = len(words[-1])
    return max(longest, carry)


def wrap_work(text: str, width: Any, limit: int) -> int:
    """A bound on the characters textwrap copies to wrap ``text`` at ``width`` breaking long
    words: it cuts a word one line at a time, copying the rest of the word after every cut."""
    if type(width) not in (int, float) or not width > 0:
        return 0  # textwrap refuses it
    step = max(int(width), 1)
    if len(text) * len(text) // step <= limit:
        return 0
    return longest_word(text) * len(text) // step


def power_bits(base: int, exponent: int) -> int:
    """The bit length of ``base ** exponent`` (|base| > 1, exponent > 0), or one less near a
    power of two, without computing it."""
    import math

    bits = abs(base).bit_length()
    if abs(base) == 1 << (bits - 1):  # a power of two: exact
        return (bits - 1) * exponent + 1
    return int(exponent * math.log2(abs(base)) * (1 - 1e-12)) + 1
