"""Budgets that stop hostile templates without changing what benign ones render.

A chat template is untrusted code. The sandbox already blocks attribute escapes; what it does not
block is work: nested loops, recursion, and values that grow without bound (``'a' * 4000000000``,
``s.replace`` chains, a list repeated inside a list whose repr is astronomically long). Every such
path runs through one of the hooks in ``environment.py``, and each hook asks the active
``RenderGuard`` before the expensive step happens:

- ``tick()`` on every loop iteration and call: wall-time deadline, and periodically memory;
- ``check_text(n)`` / ``check_items(n)`` before a string or container of that size is built;
- ``text_size_estimate(value)`` to bound what ``str()``/``repr()``/``json.dumps`` would produce
  without producing it (memoised by identity, so shared references cost nothing to measure).

The limits sit far above anything a real prompt needs, so a benign template renders exactly as in
transformers; a hostile one ends with ``BudgetExceeded`` and one clear message.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from .errors import BudgetExceeded, OutOfTime

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits for one render. Defaults are far above any real prompt and far below harm."""

    seconds: float = 2.0
    """Wall time for the render itself (compilation excluded)."""
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

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"budget {field.name} must be positive")


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

    def __init__(self, budget: Budget = DEFAULT_BUDGET, *, timed: bool = True) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.seconds if timed else float("inf")
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
            raise OutOfTime(
                f"render took longer than {self.budget.seconds:g} s (time budget; "
                "nested loops or recursion that never finishes?)"
            )
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
            raise BudgetExceeded(
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

    def output_exceeded(self) -> BudgetExceeded:
        return BudgetExceeded(f"rendered output exceeds the output budget of {self.budget.max_output:,} characters")


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


def text_size_estimate(value: Any, limit: int, memo: "SizeMemo | None" = None) -> int:
    """An upper bound on ``len(str(value))`` that stops counting once it passes ``limit``.

    Containers are measured by their repr. Each distinct object is measured once, so
    ``[[big] * 1000] * 1000`` costs a few thousand steps to find out it would print 10^12
    characters. Cycles count as a short placeholder (Python prints ``[...]`` for them). A
    ``SizeMemo`` carries measurements from one call to the next within a render.
    """
    kind = type(value)
    if kind is str or isinstance(value, str):
        return len(value)
    if value is None or kind is bool or kind is float:
        return 24
    if kind is int:
        return _int_digits(value) + 1
    return (memo if memo is not None else SizeMemo()).measure(value, limit)


class SizeMemo:
    """Repr sizes of containers, remembered for the rest of a render.

    Sound because the immutable sandbox cannot change a list, dict or tuple, and every measured
    object is kept alive here so its id cannot be reused by another object. Namespaces are the
    one mutable container, so neither they nor anything holding one is remembered.
    """

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.pinned: list[Any] = []

    def measure(self, value: Any, limit: int) -> int:
        return self._repr_size(value, 0, limit, set())[0]

    def _repr_size(self, item: Any, depth: int, limit: int, in_progress: set[int]) -> tuple[int, bool]:
        """(size, stable): stable is False when the size may change later (a namespace inside)."""
        kind = type(item)
        if kind is str:
            return _quoted_str_size(item), True
        if item is None or kind is bool or kind is float:
            return 24, True
        if kind is int:
            return _int_digits(item) + 1, True
        key = id(item)
        known = self.sizes.get(key)
        if known is not None:
            return known, True
        if key in in_progress or depth > 200:
            return 5, False
        in_progress.add(key)
        try:
            size, stable, complete = self._container_size(item, depth, limit, in_progress)
        finally:
            in_progress.discard(key)
        if stable and complete:
            self.sizes[key] = size
            self.pinned.append(item)
        return size, stable

    def _container_size(self, item: Any, depth: int, limit: int, in_progress: set[int]) -> tuple[int, bool, bool]:
        """(size, stable, complete): complete is False when counting stopped at ``limit``."""
        stable = True
        if isinstance(item, Mapping):
            total = 2
            for key, val in item.items():
                key_size, key_stable = self._repr_size(key, depth + 1, limit, in_progress)
                val_size, val_stable = self._repr_size(val, depth + 1, limit, in_progress)
                total += key_size + val_size + 4
                stable = stable and key_stable and val_stable
                if total > limit:
                    return total, stable, False
            return total, stable, True
        if isinstance(item, (list, tuple, set, frozenset)) or type(item).__name__ in (
            "dict_keys", "dict_values", "dict_items",
        ):
            total = 16
            for element in item:
                size, element_stable = self._repr_size(element, depth + 1, limit, in_progress)
                total += size + 2
                stable = stable and element_stable
                if total > limit:
                    return total, stable, False
            return total, stable, True
        attrs = _namespace_attrs(item)
        if attrs is not None:
            return 16 + self._repr_size(attrs, depth + 1, limit, in_progress)[0], False, True
        if isinstance(item, str):  # str subclasses such as Markup
            return _quoted_str_size(item), True, True
        return 128, True, True


def _quoted_str_size(text: str) -> int:
    if text.isascii() and text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count("'")
    # Non-printable characters repr as escapes of up to 10 characters.
    return 10 * len(text) + 2


def _int_digits(number: int) -> int:
    # bit_length * log10(2), rounded up; never materialises the digits.
    return number.bit_length() * 30103 // 100000 + 2


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
