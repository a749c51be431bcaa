"""Render chat templates with real non-Python Jinja engines and compare them with transformers.

Static portability rules (TK2xx) predict where a template breaks outside Python; this package
measures it. Each engine renders a template with exactly the variables transformers would pass
(see ``compare.py``) and reports one ``EngineResult`` per job; ``compare_engines`` classifies the
results against the reference render.

Engines are optional: the minijinja Python package (``pip install minijinja``, the ``engines``
extra) and @huggingface/jinja run by node. When one is missing, ``get_engine`` raises ``EngineUnavailable``
with a one-line message saying how to install it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from ..errors import TemplatekitError

# The engines this package can run, named as in the lint registry's ENGINES vocabulary so a
# measured failure can be matched against the engines a TK2xx diagnostic names.
ENGINE_NAMES = ("minijinja", "hf-jinja")

# What an engine reports for one job.
OK = "ok"
PARSE_ERROR = "parse-error"
RUNTIME_ERROR = "runtime-error"
RAISED = "raised"  # the template called raise_exception
BUDGET_SPENT = "budget-spent"  # the render ran out of the engine's time or memory budget
SKIPPED = "skipped"  # not rendered: an earlier render of the same template spent the budget
STATUSES = (OK, PARSE_ERROR, RUNTIME_ERROR, RAISED, BUDGET_SPENT, SKIPPED)

# Engine renders get budgets like templatekit's own (guards.Budget), since a template can hide a
# bomb from Jinja2 (`{% if lipsum is not defined %}`) and show it to the engines only.
# Seconds one render may take before the template's later renders are skipped: templatekit's
# own default render budget (guards.BASE_SECONDS); real templates render in milliseconds.
RENDER_SECONDS = 2.0
# Seconds after which a render still running is stopped (its process killed): the render budget
# with room for a busy machine, so a slow but finished render keeps its result (at 5 s, a benign
# corpus render was killed once on two cores shared with test runs).
JOB_TIMEOUT = 10.0
# Seconds all renders of one template may take together before the rest are skipped.
TEMPLATE_SECONDS = 20.0
# Memory one engine process may add for rendering (node's heap cap; minijinja's address-space
# limit above what the process had before). Real templates need a few MB.
MEMORY_MEGABYTES = 512


class EngineUnavailable(TemplatekitError):
    """An optional engine is not installed; the message says how to install it."""


@dataclasses.dataclass(frozen=True)
class EngineJob:
    """One render: the template text, the variables transformers would pass, the pinned clock."""

    template: str
    variables: dict[str, Any]
    now: datetime


@dataclasses.dataclass(frozen=True)
class EngineResult:
    """What an engine did with one job: ``text`` when ``status`` is OK, else ``message``."""

    status: str
    text: str | None = None
    message: str = ""


def get_engine(name: str, **options: Any) -> Any:
    """The engine called ``name``, ready to render; ``EngineUnavailable`` when it is not installed.

    Options go to the engine's constructor (``node_modules=``, ``node=``, ``job_timeout=``,
    ``start_timeout=``, ``render_seconds=``, ``template_seconds=`` and ``heap_megabytes=`` for
    hf-jinja; ``tojson_shim=``, ``isolate=``, ``job_timeout=``, ``render_seconds=``,
    ``template_seconds=`` and ``memory_megabytes=`` for minijinja). A runner that cannot render
    at all raises ``EngineUnavailable`` from ``render_batch`` too.
    """
    if name == "minijinja":
        from .minijinja_engine import MinijinjaEngine

        return MinijinjaEngine(**options)
    if name == "hf-jinja":
        from .hfjinja_engine import HfJinjaEngine

        return HfJinjaEngine(**options)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")


def parse_engine_list(text: str) -> tuple[str, ...]:
    """``"minijinja,hf-jinja"`` as a tuple of engine names; ValueError names an unknown one."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name not in ENGINE_NAMES:
            raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")
    return names


def one_line(text: str, limit: int = 200) -> str:
    """An engine message squeezed onto one line (engines print multi-line tracebacks)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_LAZY = {
    "EngineComparison": "compare",
    "compare_engines": "compare",
    "compare_many": "compare",
    "format_comparisons": "compare",
    "static_predictions": "compare",
}

__all__ = [
    "BUDGET_SPENT", "ENGINE_NAMES", "EngineJob", "EngineResult", "EngineUnavailable", "OK", "PARSE_ERROR",
    "RAISED", "RUNTIME_ERROR", "SKIPPED", "get_engine", "parse_engine_list", *_LAZY,
]


def __getattr__(name: str) -> Any:
    # compare.py imports rendering (jinja2, transformers' preprocessing); importing it lazily keeps
    # ``import templatekit.engines`` cheap for code that only needs the engine types.
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
