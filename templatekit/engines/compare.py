"""Render with real engines and classify each (template, fixture) against transformers.

Every engine receives the variables transformers itself would pass (``rendering.prepare_variables``: None
keys dropped, plain JSON types, reasoning aliased, tools converted, special tokens and kwargs
merged, the continuation tag), the same pinned clock, and a ``raise_exception`` whose raise is told
apart from engine errors. The reference is ``render_template`` with the same clock.

Outcomes, per engine and cell:

- ``identical``, ``whitespace-only`` (equal once all whitespace is removed), ``different``;
- ``parse-error`` / ``runtime-error``: the engine failed where the reference did not;
- ``budget-spent``: the engine's render ran out of its time or memory budget (hung, or a bomb
  only the engines see); the template's later renders in that engine are ``not-run``;
- ``raised-same``: both raised with the same message (the template's own guard, portable);
- ``raised-differs``: one side raised and the other did not, or the messages differ;
- ``reference-failed``: transformers fails (not a template raise) but the engine renders;
- ``both-failed``: both fail (a continuation both sides' output cannot be cut at included);
  ``not-run``: transformers rejects the inputs before rendering, or its render spends its whole
  time or output budget (an endless loop: the engine would only spend its own too, and a probe
  render that does so skips every fixture of that template), or the engine skipped the render
  after an earlier one of the template spent the engine's budget.

``EngineComparison.breaks`` is the measured portability failure: the reference rendered and the
engine did not give the identical text (a ``not-run`` cell measured nothing, so never breaks). ``missing_capabilities`` names what the fixture needs that
the template does not support (probed as the behaviour checks probe it, or declared): such a cell
feeds the template input it was not written for (a list of content parts to a text-only template,
whose Python repr transformers prints), so it says nothing about portability and ``evaluated`` is
false for it. ``breaks`` still says what happened in such a cell; ``format_comparisons`` counts it
only as not evaluated, never among the outcomes or the breaks.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..behaviour import DEFAULT_SPECIAL_TOKENS, Behaviour
from ..conversation import Conversation
from ..errors import RenderFailure
from ..rendering import Rendering, cut_at_continue_tag, prepare_variables, render_template
from . import (
    BUDGET_SPENT,
    ENGINE_NAMES,
    OK,
    PARSE_ERROR,
    RAISED,
    RUNTIME_ERROR,
    SKIPPED,
    EngineJob,
    EngineResult,
    get_engine,
    one_line,
)

IDENTICAL = "identical"
WHITESPACE_ONLY = "whitespace-only"
DIFFERENT = "different"
RAISED_SAME = "raised-same"
RAISED_DIFFERS = "raised-differs"
REFERENCE_FAILED = "reference-failed"
BOTH_FAILED = "both-failed"
NOT_RUN = "not-run"
OUTCOMES = (IDENTICAL, WHITESPACE_ONLY, DIFFERENT, PARSE_ERROR, RUNTIME_ERROR, BUDGET_SPENT, RAISED_SAME,
            RAISED_DIFFERS, REFERENCE_FAILED, BOTH_FAILED, NOT_RUN)
# Outcomes where the engine did not give transformers' result: never next to a "portable" verdict.
_MISMATCHES = (WHITESPACE_ONLY, DIFFERENT, PARSE_ERROR, RUNTIME_ERROR, BUDGET_SPENT, RAISED_DIFFERS)

_SEVERITY_ORDER = ("info", "warning", "error")
# The clock every side reads, so templates that print today's date compare equal.
PINNED_NOW = datetime(2025, 1, 15, 10, 30)


@dataclasses.dataclass
class EngineComparison:
    """One engine's render of one (template, fixture), classified against the reference."""

    engine: str
    engine_version: str
    template: str  # where the template lives (path, path[name], or "<string>")
    fixture: str
    outcome: str
    message: str  # one line saying what differs or failed; "" when identical
    reference_text: str | None
    engine_text: str | None
    predicted_by: tuple[str, ...] = ()  # TK2xx codes whose findings name this engine (template-level)
    predicted_severity: str | None = None  # the highest severity among those findings
    warned_by: tuple[str, ...] = ()  # those codes with a warning or error finding (the predictions that count)
    missing_capabilities: tuple[str, ...] = ()  # what the fixture needs that the template lacks

    @property
    def breaks(self) -> bool:
        """The reference rendered and this engine did not reproduce it exactly."""
        return self.reference_text is not None and self.outcome not in (IDENTICAL, NOT_RUN)

    @property
    def evaluated(self) -> bool:
        """The template supports everything the fixture needs, so the cell is a portability test."""
        return not self.missing_capabilities

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["breaks"] = self.breaks
        data["predicted_by"] = list(self.predicted_by)
        data["warned_by"] = list(self.warned_by)
        data["missing_capabilities"] = list(self.missing_capabilities)
        data["evaluated"] = self.evaluated
        return data


@dataclasses.dataclass
class _Cell:
    label: str
    text: str
    fixture: str
    reference: Rendering
    job: EngineJob | None  # None when transformers rejected the inputs (nothing to compare)
    continued: Any  # the continued final message, when the fixture continues one
    predictions: list  # TK2xx diagnostics of this template
    missing: tuple[str, ...]  # capabilities the fixture needs and the template lacks


def compare_engines(
    source_or_template: Any,
    fixtures: Sequence[Conversation] | None = None,
    engines: Iterable[str] = ENGINE_NAMES,
    *,
    template_name: str | None = None,
    special_tokens: dict[str, str] | None = None,
    now: datetime = PINNED_NOW,
    diagnostics: list | None = None,
    engine_options: dict[str, dict] | None = None,
) -> list[EngineComparison]:
    """Render ``source_or_template`` with each fixture in each engine and classify the results.

    ``source_or_template`` is a ``TemplateSource``, a ``ChatTemplate``, a path (anything
    ``load_source`` reads) or template text (a ``str`` that is not an existing path). A source picks
    its template per fixture as transformers does (``tool_use`` when the fixture has tools).
    ``fixtures`` defaults to the built-ins. ``diagnostics`` are the lint findings to credit as
    predictions; by default the TK2xx rules are run here. The special tokens are the source's and
    ``special_tokens``, over the stand-ins lint's behavioural renders use where neither gives one
    (``behaviour.DEFAULT_SPECIAL_TOKENS``): without them a bare template that prints ``eos_token``
    fails in every engine alike, and the comparison would say nothing. Raises ``EngineUnavailable`` (one line,
    with the install command) when an engine is not installed. Results are ordered by fixture, then
    engine.
    """
    from ..sources import TemplateSource, load_source, template_from_text

    if isinstance(source_or_template, Path) or (
        isinstance(source_or_template, str) and "\n" not in source_or_template and os.path.exists(source_or_template)
    ):
        source_or_template = load_source(source_or_template)
    elif isinstance(source_or_template, str):
        source_or_template = template_from_text(source_or_template)
    if isinstance(source_or_template, TemplateSource):
        tokens = {**DEFAULT_SPECIAL_TOKENS, **source_or_template.special_tokens, **(special_tokens or {})}
        conversations = _fixtures(fixtures)
        items = [(source_or_template.select(template_name, conversation.tools), tokens, [conversation])
                 for conversation in conversations]
    else:
        items = [(source_or_template, {**DEFAULT_SPECIAL_TOKENS, **(special_tokens or {})}, _fixtures(fixtures))]
    return compare_many(items, engines, now=now, diagnostics=diagnostics, engine_options=engine_options)


def compare_many(
    items: Iterable[tuple[Any, dict[str, str], Sequence[Conversation]]],
    engines: Iterable[str] = ENGINE_NAMES,
    *,
    now: datetime = PINNED_NOW,
    diagnostics: list | None = None,
    engine_options: dict[str, dict] | None = None,
) -> list[EngineComparison]:
    """``compare_engines`` over many templates at once: each engine renders everything in one batch
    (one node process for hf-jinja). ``items`` are ``(ChatTemplate or text, special_tokens,
    fixtures)``. ``diagnostics``, when given, apply to every template (use it for one template)."""
    engines = tuple(engines)
    # Engines first: a missing engine should fail before minutes of reference renders.
    runners = {name: get_engine(name, **(engine_options or {}).get(name, {})) for name in engines}
    predictions_by_text: dict[str, list] = {}
    behaviour_by_text: dict[str, Behaviour] = {}
    cells: list[_Cell] = []
    for template, tokens, conversations in items:
        text = template if isinstance(template, str) else template.text
        label = template.location() if hasattr(template, "location") else "<string>"
        if text not in predictions_by_text:
            predictions_by_text[text] = diagnostics if diagnostics is not None else static_predictions(text)
            behaviour_by_text[text] = Behaviour(text, tokens)
        behaviour = behaviour_by_text[text]
        for conversation in conversations:
            missing = tuple(behaviour.capabilities.missing(conversation.requires))
            # When the probe spent a whole budget, every render would spend it again, in
            # transformers and in each engine: the probe's failure stands for the fixture's render.
            cells.append(_cell(template, text, label, tokens, conversation, now, predictions_by_text[text], missing,
                               reference=behaviour.spent_budget))
    results: dict[str, list[EngineResult | None]] = {}
    for name, runner in runners.items():
        runnable = [cell.job for cell in cells if cell.job is not None]
        rendered = iter(runner.render_batch(runnable))
        results[name] = [next(rendered) if cell.job is not None else None for cell in cells]
    comparisons = []
    for position, cell in enumerate(cells):
        for name, runner in runners.items():
            outcome, message, engine_text = _classify(cell, results[name][position])
            naming = [d for d in cell.predictions if name in getattr(d, "engines", ())]
            predicted = tuple(sorted({d.code for d in naming}))
            severity = max((d.severity for d in naming), key=_SEVERITY_ORDER.index, default=None)
            warned = tuple(sorted({d.code for d in naming if d.severity != "info"}))
            comparisons.append(EngineComparison(
                engine=name, engine_version=getattr(runner, "version", ""), template=cell.label,
                fixture=cell.fixture, outcome=outcome, message=message, reference_text=cell.reference.text,
                engine_text=engine_text, predicted_by=predicted, predicted_severity=severity,
                missing_capabilities=cell.missing, warned_by=warned,
            ))
    return comparisons


def _fixtures(fixtures: Sequence[Conversation] | None) -> list[Conversation]:
    if fixtures is not None:
        return list(fixtures)
    from ..fixtures import builtin_fixtures

    return builtin_fixtures()


def _cell(template: Any, text: str, label: str, tokens: dict, conversation: Conversation, now: datetime,
          predictions: list, missing: tuple[str, ...], reference: Rendering | None = None) -> _Cell:
    """The cell of one fixture: its reference render (``reference`` when already known) and the
    engines' job, None when there is nothing to render (see ``_classify``)."""
    if reference is None:
        reference = render_template(template, conversation, special_tokens=tokens, now=now)
    if reference.error is not None and reference.error.spent_budget:
        return _Cell(label, text, conversation.name or "<conversation>", reference, None, None, predictions, missing)
    generation_prompt = conversation.wants_generation_prompt()
    try:
        # The very function render_template builds its variables with: same context by construction.
        variables, continued = prepare_variables(text, conversation, special_tokens=tokens,
                                                 add_generation_prompt=generation_prompt)
        job = EngineJob(text, variables, now)
    except RenderFailure:
        job, continued = None, None
    return _Cell(label, text, conversation.name or "<conversation>", reference, job, continued, predictions, missing)


def _classify(cell: _Cell, result: EngineResult | None) -> tuple[str, str, str | None]:
    reference = cell.reference
    if result is None:
        if reference.error is not None and reference.error.spent_budget:
            return NOT_RUN, (f"transformers' render spends its whole budget, so the engine's would spend its own "
                             f"({one_line(reference.error.describe_unplaced())})"), None
        return NOT_RUN, f"transformers rejects the inputs: {one_line(reference.error)}", None
    if result.status == SKIPPED:
        return NOT_RUN, result.message, None
    text = result.text
    failure = reference.error
    if result.status == OK and cell.continued is not None:
        try:
            text = cut_at_continue_tag(text, cell.continued)
        except RenderFailure as cut:
            if failure is None:
                return DIFFERENT, f"continuation cut fails on the engine's output: {one_line(cut)}", result.text
            if failure.kind != "raised":
                # transformers' own render could not be cut either: both refuse the continuation.
                if one_line(failure.message)[:80] in one_line(cut, 10_000):  # the same refusal
                    return BOTH_FAILED, f"both refuse the continuation: {one_line(failure.message)}", None
                return BOTH_FAILED, (f"transformers: {one_line(failure.message)}; engine: continuation cut fails "
                                     f"on its output: {one_line(cut)}"), None
            return RAISED_DIFFERS, f"transformers raises {one_line(failure.message)!r}; engine renders", result.text
    if failure is None:
        if result.status == OK:
            if text == reference.text:
                return IDENTICAL, "", text
            if "".join(text.split()) == "".join(reference.text.split()):
                return WHITESPACE_ONLY, first_difference(reference.text, text), text
            return DIFFERENT, first_difference(reference.text, text), text
        if result.status == RAISED:
            return RAISED_DIFFERS, f"engine raised {result.message!r}; transformers renders", None
        return result.status, result.message, None
    if failure.kind == "raised":
        if result.status == RAISED:
            if result.message == failure.message:
                return RAISED_SAME, "", None
            return RAISED_DIFFERS, f"engine raised {result.message!r}; transformers raised {failure.message!r}", None
        if result.status == OK:
            return RAISED_DIFFERS, f"transformers raises {one_line(failure.message)!r}; engine renders", text
        return result.status, result.message, None
    if result.status == OK:
        return REFERENCE_FAILED, f"transformers fails ({failure.kind}: {one_line(failure.message)}); engine renders", text
    return BOTH_FAILED, f"transformers: {one_line(failure.message)}; engine: {result.message}", None


def first_difference(expected: str, actual: str) -> str:
    """Where two texts first differ, as one line: ``line L col C: transformers '…' vs engine '…'``."""
    index = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    line = expected.count("\n", 0, index) + 1
    column = index - (expected.rfind("\n", 0, index) + 1) + 1
    start = max(0, index - 10)
    return (f"line {line} col {column}: transformers {expected[start:index + 30]!r} "
            f"vs engine {actual[start:index + 30]!r}")


def static_predictions(text: str) -> list:
    """The TK2xx (portability) diagnostics for ``text``, every engine kept (no config filtering)."""
    from ..lint.config import LintConfig
    from ..lint.engine import run_rules
    from ..lint.registry import all_rules
    from ..lint.target import LintTarget

    config = LintConfig()
    rules = [rule(config.options_for(rule)) for rule in all_rules() if rule.code.startswith("TK2")]
    return run_rules(LintTarget(text, config=config), rules)


def format_comparisons(comparisons: Sequence[EngineComparison], *, verbose: bool = False) -> str:
    """A text report: per template and engine, the outcome counts, then one line per cell that is
    not identical (every cell with ``verbose``), with the TK2xx rules that predicted it."""
    lines: list[str] = []
    by_template: dict[str, list[EngineComparison]] = {}
    for comparison in comparisons:
        by_template.setdefault(comparison.template, []).append(comparison)
    for template, group in by_template.items():
        lines.append(template)
        for engine in dict.fromkeys(c.engine for c in group):
            cells = [c for c in group if c.engine == engine]
            version = cells[0].engine_version
            # A cell the template was not written for measures nothing: it is counted apart, never
            # as identical (portable) or as a break.
            evaluated = [c for c in cells if c.evaluated]
            skipped = len(cells) - len(evaluated)
            counts = Counter(c.outcome for c in evaluated)
            summary = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
            broken = sum(c.breaks for c in evaluated)
            if not evaluated:
                line = "nothing evaluated (every fixture needs input the template does not support)"
            else:
                if all(c.outcome in (NOT_RUN, BOTH_FAILED) for c in evaluated):
                    # Neither side rendered anything to hold the other to: not evidence of portability.
                    verdict = "nothing compared (transformers fails or refuses every evaluated fixture)"
                elif broken:
                    verdict = f"{broken} of {len(evaluated)} fixtures break"
                elif any(c.outcome in _MISMATCHES for c in evaluated):
                    # Only where transformers itself fails: no break, but not the same behaviour either.
                    verdict = "no rendered fixture breaks"
                else:
                    verdict = "portable"
                line = f"{verdict} ({summary})"
                if skipped:
                    line += f"; {skipped} not evaluated (input the template does not support)"
            lines.append(f"  {engine} {version}: {line}")
            width = max(len(c.fixture) for c in cells)
            for cell in cells:
                if cell.outcome == IDENTICAL and not verbose:
                    continue
                message = f": {cell.message}" if cell.message else ""
                if not cell.evaluated:
                    lacks = ", ".join(cell.missing_capabilities)
                    lines.append(f"    {cell.fixture:<{width}}  not evaluated (the template lacks {lacks}): "
                                 f"{cell.outcome}{message}")
                    continue
                note = ""
                if cell.breaks:
                    note = f"  [predicted by {', '.join(cell.predicted_by)}]" if cell.predicted_by else "  [not predicted]"
                lines.append(f"    {cell.fixture:<{width}}  {cell.outcome}{message}{note}")
    return "\n".join(lines)
