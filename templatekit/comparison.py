"""Compare what two chat templates (or two versions of one) produce.

``diff(a, b)`` renders both sources over the same fixture conversations and classifies each
fixture: identical, whitespace-only, different, one side raised, or both raised (with the same or
a different message). For changed fixtures it keeps a unified diff of the visible renders (every
space, newline and invisible character marked, so a whitespace change is a visible line change),
the first differing character, and, when asked and both sides have a tokenizer, a diff of the
token sequences, which shows what text cannot (a marker split into several tokens, a doubled BOS).
When no fixture renders on either side the report says nothing was compared, rather than calling
two equal errors identical prompts. A source without special tokens (a bare .jinja file) renders
with lint's placeholder tokens, named in the report, so it is compared on what it prints.

``role_wrappers(source)`` renders sentinel contents in a few tiny conversations and cuts the
output around them, giving the text a template puts before and after each role's content and its
generation prompt, so many templates can be compared at a glance.

Sources are anything ``load_source`` reads, or ``git:REV:path`` (read with ``git show``, so a CI
job can compare a template against the base branch). Everything here is a pure function returning
dataclasses; nothing prints. This module is not called ``diff`` because a submodule of that name
would shadow the ``templatekit.diff`` function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import subprocess
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .behaviour import DEFAULT_SPECIAL_TOKENS
from .conversation import Conversation
from .errors import InputError
from .guards import DEFAULT_BUDGET, Budget
from .rendering import Rendering, RenderRun
from .sources import (
    ADDITIONAL_TEMPLATES_DIR,
    CHAT_TEMPLATE_FILE,
    PROCESSOR_TEMPLATE_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    TemplateSource,
    load_source,
)
from .visible import make_visible, special_token_pattern

SCHEMA_VERSION = 1
GIT_PREFIX = "git:"

# Fixture statuses, in the order a summary lists them.
IDENTICAL = "identical"
WHITESPACE_ONLY = "whitespace-only"
DIFFERENT = "different"
ONE_RAISED = "one-raised"
BOTH_RAISED_SAME = "both-raised-same"
BOTH_RAISED_DIFFERENT = "both-raised-different"
STATUSES = (IDENTICAL, WHITESPACE_ONLY, DIFFERENT, ONE_RAISED, BOTH_RAISED_SAME, BOTH_RAISED_DIFFERENT)
# Both sides failing the same way means the change did not alter what the fixture produces.
UNCHANGED_STATUSES = (IDENTICAL, BOTH_RAISED_SAME)

# How much text either side of the first differing character a report quotes.
_EXCERPT_BEFORE, _EXCERPT_AFTER = 30, 50


# ---------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass
class SideOutcome:
    """One side's render of one fixture: its text, or the failure's one-line description."""

    template_name: str
    text: str | None
    error_kind: str | None = None
    error_message: str | None = None
    error_description: str | None = None
    out_of_time: bool = False

    @classmethod
    def from_rendering(cls, rendering: Rendering) -> "SideOutcome":
        name = getattr(rendering.template, "name", "default")
        if rendering.error is None:
            return cls(name, rendering.text)
        error = rendering.error
        return cls(name, None, error.kind, error.message, error.describe(), error.out_of_time)

    @property
    def raised(self) -> bool:
        return self.text is None


@dataclasses.dataclass(frozen=True)
class FirstDifference:
    """Where two renders first part, with a short excerpt of each side from a little before."""

    offset: int
    line: int
    a_excerpt: str
    b_excerpt: str


@dataclasses.dataclass(frozen=True)
class TokenChange:
    """One non-equal stretch of the token diff (difflib's opcode on the two sequences)."""

    tag: str
    a_start: int
    a_end: int
    b_start: int
    b_end: int
    a_ids: list[int]
    b_ids: list[int]
    a_pieces: list[str]
    b_pieces: list[str]


@dataclasses.dataclass
class TokenDiff:
    """Token ids and pieces of both renders (``add_special_tokens=False``) and where they differ."""

    a_ids: list[int]
    b_ids: list[int]
    a_pieces: list[str]
    b_pieces: list[str]
    changes: list[TokenChange]

    @property
    def identical(self) -> bool:
        return not self.changes


@dataclasses.dataclass
class FixtureComparison:
    """How one fixture renders on both sides, and how the renders differ."""

    fixture: str
    status: str
    a: SideOutcome
    b: SideOutcome
    unified_diff: list[str]
    first_difference: FirstDifference | None
    raised_side: str | None = None
    tokens: TokenDiff | None = None

    @property
    def changed(self) -> bool:
        """Whether this fixture counts as a difference (text, failure, or tokens when compared)."""
        if self.status not in UNCHANGED_STATUSES:
            return True
        return self.tokens is not None and not self.tokens.identical


@dataclasses.dataclass
class DiffReport:
    """The comparison of two sources over a list of fixtures."""

    a_label: str
    b_label: str
    comparisons: list[FixtureComparison]
    special_tokens: list[str]
    token_note: str | None = None
    # The stand-in special tokens each side rendered with because its source has none (a bare
    # .jinja file), limited to those its templates mention.
    a_placeholders: dict[str, str] = dataclasses.field(default_factory=dict)
    b_placeholders: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(comparison.changed for comparison in self.comparisons)

    @property
    def compared(self) -> bool:
        """Whether any fixture rendered on at least one side.

        When every fixture fails on both sides, equal errors say nothing about the prompts: a
        change anywhere after the failing line would go unseen, so the two sources were not compared.
        """
        return any(not (comparison.a.raised and comparison.b.raised) for comparison in self.comparisons)

    @property
    def identical(self) -> bool:
        return self.compared and not self.changed

    @property
    def not_compared_reason(self) -> str | None:
        """Why nothing could be compared (the first fixture's errors), or None when something was."""
        if self.compared:
            return None
        if not self.comparisons:
            return "there was no fixture to render"
        first = self.comparisons[0]
        reason = f"every fixture failed on both sides; first error ({first.fixture}): {first.a.error_description}"
        if first.status != BOTH_RAISED_SAME:
            reason += f"; on b: {first.b.error_description}"
        return reason

    def summary(self) -> dict[str, int]:
        """Fixtures per status (every status listed, zeros included) and the number token-different."""
        counts = Counter(comparison.status for comparison in self.comparisons)
        summary = {status: counts.get(status, 0) for status in STATUSES}
        summary["token-different"] = sum(
            1 for comparison in self.comparisons if comparison.tokens is not None and not comparison.tokens.identical
        )
        summary["total"] = len(self.comparisons)
        return summary

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data (``schema_version`` says which shape)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "a": self.a_label,
            "b": self.b_label,
            "changed": self.changed,
            "compared": self.compared,
            "not_compared_reason": self.not_compared_reason,
            "placeholder_tokens": {"a": self.a_placeholders, "b": self.b_placeholders},
            "summary": self.summary(),
            "token_note": self.token_note,
            "fixtures": [_comparison_json(comparison) for comparison in self.comparisons],
        }


def _side_json(side: SideOutcome) -> dict[str, Any]:
    error = None
    if side.raised:
        error = {"kind": side.error_kind, "message": side.error_message, "description": side.error_description}
    return {"template": side.template_name, "text": side.text, "error": error}


def _comparison_json(comparison: FixtureComparison) -> dict[str, Any]:
    first = comparison.first_difference
    tokens = comparison.tokens
    return {
        "fixture": comparison.fixture,
        "status": comparison.status,
        "changed": comparison.changed,
        "raised_side": comparison.raised_side,
        "a": _side_json(comparison.a),
        "b": _side_json(comparison.b),
        "first_difference": dataclasses.asdict(first) if first is not None else None,
        "unified_diff": comparison.unified_diff,
        "tokens": None if tokens is None else {
            "identical": tokens.identical,
            "a_ids": tokens.a_ids,
            "b_ids": tokens.b_ids,
            "a_pieces": tokens.a_pieces,
            "b_pieces": tokens.b_pieces,
            "changes": [dataclasses.asdict(change) for change in tokens.changes],
        },
    }


# ---------------------------------------------------------------------------------------------
# comparing two renders


def classify(a: SideOutcome, b: SideOutcome) -> tuple[str, str | None]:
    """The fixture status for two outcomes, and which side raised when only one did."""
    if a.raised and b.raised:
        # Locations name each side's own file, so only what failed and why is compared.
        same = (a.error_kind, a.error_message) == (b.error_kind, b.error_message)
        return (BOTH_RAISED_SAME if same else BOTH_RAISED_DIFFERENT), None
    if a.raised or b.raised:
        return ONE_RAISED, "a" if a.raised else "b"
    if a.text == b.text:
        return IDENTICAL, None
    if "".join(a.text.split()) == "".join(b.text.split()):
        return WHITESPACE_ONLY, None
    return DIFFERENT, None


def visible_lines(text: str, special_tokens: list[str] = ()) -> list[str]:
    """``text`` as visible lines: each real line break becomes a ``↵`` ending its line."""
    return make_visible(text, special_tokens, color=False).split("\n")


def unified_visible_diff(a_text: str, b_text: str, a_label: str, b_label: str, context: int = 3) -> list[str]:
    """A unified diff of the visible forms, so a changed space or newline shows as a changed line."""
    return list(
        difflib.unified_diff(visible_lines(a_text), visible_lines(b_text), a_label, b_label, n=context, lineterm="")
    )


def first_difference(a_text: str, b_text: str) -> FirstDifference | None:
    """Where two texts first differ (None when equal), with visible excerpts of both sides."""
    if a_text == b_text:
        return None
    offset = len(os.path.commonprefix([a_text, b_text]))
    start = max(0, offset - _EXCERPT_BEFORE)

    def excerpt(text: str) -> str:
        return make_visible(text[start : offset + _EXCERPT_AFTER]).replace("\n", "")

    return FirstDifference(offset, a_text.count("\n", 0, offset) + 1, excerpt(a_text), excerpt(b_text))


@dataclasses.dataclass(frozen=True)
class SideBySideRow:
    """One row of a side-by-side view: a visible line of each side (None where a side has none)."""

    tag: str
    left: str | None
    right: str | None


def side_by_side(a_text: str | None, b_text: str | None) -> list[SideBySideRow]:
    """Rows pairing the visible lines of both renders; ``tag`` is difflib's equal/replace/delete/insert."""
    left = visible_lines(a_text) if a_text is not None else []
    right = visible_lines(b_text) if b_text is not None else []
    rows: list[SideBySideRow] = []
    matcher = difflib.SequenceMatcher(None, left, right, autojunk=False)
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        for index in range(max(a_end - a_start, b_end - b_start)):
            left_line = left[a_start + index] if a_start + index < a_end else None
            right_line = right[b_start + index] if b_start + index < b_end else None
            rows.append(SideBySideRow(tag, left_line, right_line))
    return rows


def compare_outcomes(
    fixture: str, a: SideOutcome, b: SideOutcome, a_label: str, b_label: str
) -> FixtureComparison:
    """Classify one fixture's two outcomes and keep the diff of their texts when both rendered."""
    status, raised_side = classify(a, b)
    diff_lines: list[str] = []
    first = None
    if not a.raised and not b.raised and a.text != b.text:
        diff_lines = unified_visible_diff(a.text, b.text, f"{a_label} ({fixture})", f"{b_label} ({fixture})")
        first = first_difference(a.text, b.text)
    return FixtureComparison(fixture, status, a, b, diff_lines, first, raised_side)


# ---------------------------------------------------------------------------------------------
# tokens


class Tokenizer:
    """A source's tokenizer.json, loaded with transformers (imported only when tokens are asked for)."""

    def __init__(self, tokenizer_file: Path) -> None:
        from transformers import PreTrainedTokenizerFast

        self.path = tokenizer_file
        try:
            self._tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
        except Exception as exc:  # noqa: BLE001 - any failure to read the file is the user's input problem
            raise InputError(tokenizer_file, f"cannot load the tokenizer: {_tokenizer_problem(exc)}") from None

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Ids and pieces of ``text`` without the tokenizer adding BOS/EOS (the template put its own)."""
        try:
            ids = list(self._tokenizer.encode(text, add_special_tokens=False))
            return ids, list(self._tokenizer.convert_ids_to_tokens(ids))
        except Exception as exc:  # noqa: BLE001 - a tokenizer that loads but cannot encode is a broken file
            raise InputError(self.path, f"cannot tokenize a render with it: {_tokenizer_problem(exc)}") from None


def _tokenizer_problem(exc: Exception) -> str:
    # The tokenizers library raises bare Exceptions; their class name says nothing.
    return str(exc) if type(exc) is Exception else f"{type(exc).__name__}: {exc}"


def tokenizer_file(source: TemplateSource) -> Path | None:
    """The tokenizer.json that belongs to a source, if it has one."""
    if source.tokenizer_dir is None:
        return None
    candidate = Path(source.tokenizer_dir) / TOKENIZER_FILE
    return candidate if candidate.is_file() else None


def token_diff(a_ids: list[int], a_pieces: list[str], b_ids: list[int], b_pieces: list[str]) -> TokenDiff:
    """Diff two token sequences; a token is its (id, piece) pair, so a renumbered piece differs too."""
    a_tokens = list(zip(a_ids, a_pieces))
    b_tokens = list(zip(b_ids, b_pieces))
    changes = []
    matcher = difflib.SequenceMatcher(None, a_tokens, b_tokens, autojunk=False)
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        if tag == "equal":
            continue
        changes.append(TokenChange(
            tag, a_start, a_end, b_start, b_end,
            a_ids[a_start:a_end], b_ids[b_start:b_end], a_pieces[a_start:a_end], b_pieces[b_start:b_end],
        ))
    return TokenDiff(a_ids, b_ids, a_pieces, b_pieces, changes)


# ---------------------------------------------------------------------------------------------
# git revisions

# The files of a model directory that change what a template renders or how it tokenizes.
_MODEL_DIR_FILES = (TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, PROCESSOR_TEMPLATE_FILE, SPECIAL_TOKENS_MAP_FILE,
                    TOKENIZER_FILE)


def is_git_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith(GIT_PREFIX)


def parse_git_spec(spec: str) -> tuple[str, str]:
    """``git:REV:path`` -> (REV, path). Ref names cannot contain a colon, so the first one splits."""
    revision, separator, path = spec[len(GIT_PREFIX):].partition(":")
    if not separator or not revision or not path:
        raise InputError(spec, "expected git:REV:PATH, for example git:HEAD:chat_template.jinja or git:main:model/")
    if revision.startswith("-"):
        # No ref name starts with "-"; git would read one as an option (git show --output=...).
        raise InputError(spec, f"{revision!r} is not a git revision (it starts with '-')")
    return revision, path


def _git(arguments: list[str], spec: str, cwd: Path) -> bytes:
    try:
        completed = subprocess.run(["git", *arguments], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise InputError(spec, "git is not installed, so a git revision cannot be read") from None
    if completed.returncode != 0:
        raise _GitFailed(completed.stderr.decode("utf-8", "replace").strip())
    return completed.stdout


class _GitFailed(Exception):
    """A git command exited non-zero; the message is its stderr."""


def materialize_git_source(spec: str, destination: Path, cwd: Path | None = None) -> Path:
    """Write the file (or model directory) ``git:REV:path`` names into ``destination``; return its path.

    A file keeps its name, so .jinja / tokenizer_config.json / chat_template.json / GGUF detection
    works as for the working copy; a config file, and a .jinja file in a model directory, bring
    their tokenizer neighbours from the same revision (the working copy's chat_template.jinja
    renders with its directory's special tokens, so the revision's must too). A directory brings
    only the files that affect rendering and tokenizing.
    """
    revision, path = parse_git_spec(spec)
    cwd = Path.cwd() if cwd is None else cwd
    try:
        _git(["rev-parse", "--show-toplevel"], spec, cwd)
    except _GitFailed:
        raise InputError(spec, f"{cwd} is not inside a git repository") from None
    try:
        _git(["rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], spec, cwd)
    except _GitFailed:
        raise InputError(spec, f"unknown git revision {revision!r}") from None
    object_name = f"{revision}:{path}"
    try:
        object_type = _git(["cat-file", "-t", object_name], spec, cwd).decode().strip()
    except _GitFailed:
        raise InputError(spec, f"no file or directory {path!r} at revision {revision!r}") from None
    name = Path(path.rstrip("/")).name or "source"
    if object_type == "tree":
        directory = destination / name
        directory.mkdir(parents=True)
        prefix = path.rstrip("/") + "/"
        # -z: without it git quotes and escapes names with unusual bytes ("a\\nb.jinja"), which
        # would then match no file; the names are bytes, decoded as the file system decodes them.
        listing = _git(["ls-tree", "-r", "-z", "--name-only", revision, "--", prefix], spec, cwd)
        for entry in (os.fsdecode(raw) for raw in listing.split(b"\0") if raw):
            relative = entry[len(prefix):] if entry.startswith(prefix) else entry
            in_additional = relative.startswith(ADDITIONAL_TEMPLATES_DIR + "/") and relative.endswith(".jinja")
            if relative in _MODEL_DIR_FILES or in_additional:
                _write_git_blob(revision, prefix + relative, directory / relative, spec, cwd)
        return directory
    if object_type != "blob":
        raise InputError(spec, f"{path!r} at {revision!r} is a {object_type}, not a file or directory")
    target = destination / name
    parent = PurePosixPath(path).parent
    neighbours: tuple[str, ...] = ()
    if name in (TOKENIZER_CONFIG_FILE, PROCESSOR_TEMPLATE_FILE):
        neighbours = _MODEL_DIR_FILES
    elif name.lower().endswith(".jinja"):
        neighbours = (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_FILE)
        if parent.name == ADDITIONAL_TEMPLATES_DIR:
            # The layout is kept so the template finds its model directory one level up.
            target = destination / ADDITIONAL_TEMPLATES_DIR / name
            parent = parent.parent
    _write_git_blob(revision, path, target, spec, cwd)
    for sibling in neighbours:
        sibling_path = str(parent / sibling)
        if sibling != name and _git_has(revision, sibling_path, spec, cwd):
            _write_git_blob(revision, sibling_path, destination / sibling, spec, cwd)
    return target


def _git_has(revision: str, path: str, spec: str, cwd: Path) -> bool:
    try:
        _git(["cat-file", "-e", f"{revision}:{path}"], spec, cwd)
    except _GitFailed:
        return False
    return True


def _write_git_blob(revision: str, path: str, target: Path, spec: str, cwd: Path) -> None:
    try:
        data = _git(["show", f"{revision}:{path}"], spec, cwd)
    except _GitFailed as failed:
        raise InputError(spec, f"git show {revision}:{path} failed: {failed}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _relabel(source: TemplateSource, local: Path, spec: str) -> TemplateSource:
    """Make the templates' paths (and so every error location) name ``git:REV:path`` instead of a temp file."""
    revision, path = parse_git_spec(spec)
    local_root = str(local)

    def renamed(original: Path) -> Path:
        text = str(original)
        if not text.startswith(local_root):
            return original
        return Path(f"{GIT_PREFIX}{revision}:{path.rstrip('/')}{text[len(local_root):]}")

    templates = {name: dataclasses.replace(template, path=renamed(template.path))
                 for name, template in source.templates.items()}
    return dataclasses.replace(source, path=renamed(source.path), templates=templates)


def open_source(spec: Any, stack: contextlib.ExitStack, cwd: Path | None = None) -> TemplateSource:
    """Load a source: a ``TemplateSource`` as it is, a ``git:REV:path``, or anything ``load_source`` reads.

    Temporary files for a git revision live until ``stack`` closes (token diffs read them late).
    """
    if isinstance(spec, TemplateSource):
        return spec
    if not is_git_spec(spec):
        return load_source(spec)
    destination = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="templatekit-git-")))
    local = materialize_git_source(spec, destination, cwd)
    try:
        source = load_source(local)
    except InputError as error:
        revision, path = parse_git_spec(spec)
        location = (error.location or "").replace(str(local), f"{GIT_PREFIX}{revision}:{path.rstrip('/')}")
        raise InputError(location or spec, error.problem) from None
    return _relabel(source, local, spec)


def source_label(spec: Any) -> str:
    if isinstance(spec, TemplateSource):
        return str(spec.path)
    return str(spec)


# ---------------------------------------------------------------------------------------------
# the diff


def _fixture_list(fixtures: Any) -> list[Conversation]:
    from .fixtures import builtin_fixtures, load_fixture

    if fixtures is None:
        return builtin_fixtures()
    chosen = []
    for item in fixtures:
        chosen.append(item if isinstance(item, Conversation) else load_fixture(item))
    return chosen


def diff(
    a: Any,
    b: Any,
    fixtures: Any = None,
    *,
    template_name: str | None = None,
    template_name_a: str | None = None,
    template_name_b: str | None = None,
    tokens: bool = False,
    special_tokens: dict[str, str] | None = None,
    variables: dict[str, Any] | None = None,
    now: datetime | None = None,
    budget: Budget = DEFAULT_BUDGET,
    cwd: Path | None = None,
) -> DiffReport:
    """Render sources ``a`` and ``b`` over the same fixtures and compare every pair of renders.

    ``a`` and ``b`` are paths (.jinja, tokenizer_config.json, chat_template.json, a model
    directory, GGUF), ``git:REV:path`` strings, or loaded ``TemplateSource`` objects. ``fixtures``
    is a list of built-in fixture names, fixture file paths or ``Conversation`` objects (default:
    every built-in). Named templates are chosen per fixture as transformers chooses them unless
    ``template_name`` (both sides) or ``template_name_a``/``template_name_b`` say otherwise.
    ``now`` pins ``strftime_now`` for both sides (default: one shared "now", so dates never differ
    between the two renders). A source with no special tokens of its own (a bare .jinja file)
    renders with the placeholders lint uses (``<s>``, ``</s>``...), since without them most
    templates fail at ``bos_token`` on every fixture; the report lists them per side.
    ``special_tokens`` adds to or overrides both sources' tokens, and ``variables`` are extra
    template variables for every render of both sides (like ``apply_chat_template``'s keyword
    arguments, they override special tokens of the same name). ``tokens=True`` also diffs token
    sequences; it needs a tokenizer.json on both sides and raises ``InputError`` otherwise. Bad
    input raises ``InputError``.

    >>> import templatekit
    >>> a = templatekit.template_from_text("{% for m in messages %}{{ m.content }}\\n{% endfor %}")
    >>> b = templatekit.template_from_text("{% for m in messages %}{{ m.content }} \\n{% endfor %}")
    >>> templatekit.diff(a, b, ["basic"]).comparisons[0].status
    'whitespace-only'
    """
    conversations = _fixture_list(fixtures)
    if variables:
        conversations = [conversation.replace(kwargs={**conversation.kwargs, **variables})
                         for conversation in conversations]
    pinned = now or datetime.now()
    name_a = template_name_a if template_name_a is not None else template_name
    name_b = template_name_b if template_name_b is not None else template_name
    a_label, b_label = source_label(a), source_label(b)
    with contextlib.ExitStack() as stack:
        source_a, placeholders_a = _with_tokens(open_source(a, stack, cwd), special_tokens, variables)
        source_b, placeholders_b = _with_tokens(open_source(b, stack, cwd), special_tokens, variables)
        tokenizers = _tokenizers(source_a, source_b, a_label, b_label) if tokens else None
        comparisons = []
        run_a, run_b = RenderRun(), RenderRun()
        for index, conversation in enumerate(conversations):
            fixture = conversation.name or f"conversation-{index + 1}"
            outcome_a = _render_side(run_a, source_a, name_a, conversation, pinned, budget)
            outcome_b = _render_side(run_b, source_b, name_b, conversation, pinned, budget)
            comparison = compare_outcomes(fixture, outcome_a, outcome_b, a_label, b_label)
            if tokenizers is not None and not outcome_a.raised and not outcome_b.raised:
                a_ids, a_pieces = tokenizers[0].encode(outcome_a.text)
                b_ids, b_pieces = tokenizers[1].encode(outcome_b.text)
                comparison.tokens = token_diff(a_ids, a_pieces, b_ids, b_pieces)
            comparisons.append(comparison)
    special = sorted(set(source_a.special_tokens.values()) | set(source_b.special_tokens.values()))
    return DiffReport(a_label, b_label, comparisons, special,
                      a_placeholders=placeholders_a, b_placeholders=placeholders_b)


def _with_tokens(
    source: TemplateSource, special_tokens: dict[str, str] | None, variables: dict[str, Any] | None = None
) -> tuple[TemplateSource, dict[str, str]]:
    """``source`` with the special tokens its renders get, and the placeholders among them worth naming.

    A source without special tokens gets lint's placeholders, so two bare .jinja files are
    compared on what they print rather than on both failing at ``bos_token``. The placeholders
    named are those the caller did not supply (as a token or a variable) and that a template of
    the source mentions: Jinja looks variables up by literal name, so an unmentioned one cannot
    change a render.
    """
    tokens = dict(source.special_tokens)
    placeholders: dict[str, str] = {}
    if not tokens:
        tokens = dict(DEFAULT_SPECIAL_TOKENS)
        supplied = set(special_tokens or ()) | set(variables or ())
        texts = [template.text for template in source.templates.values()]
        placeholders = {name: value for name, value in DEFAULT_SPECIAL_TOKENS.items()
                        if name not in supplied and any(name in text for text in texts)}
    tokens.update(special_tokens or {})
    return dataclasses.replace(source, special_tokens=tokens), placeholders


def _render_side(
    run: RenderRun, source: TemplateSource, name: str | None, conversation: Conversation, now: datetime,
    budget: Budget,
) -> SideOutcome:
    template = source.select(name, conversation.tools)
    # Each side gets its own copy: the renderer must never see the other side's mutations.
    rendering = run.render(template, conversation.replace(), special_tokens=source.special_tokens,
                           now=now, budget=budget)
    return SideOutcome.from_rendering(rendering)


def _tokenizers(a: TemplateSource, b: TemplateSource, a_label: str, b_label: str) -> tuple[Tokenizer, Tokenizer]:
    loaded = []
    for source, label in ((a, a_label), (b, b_label)):
        if source.kind == "gguf":
            raise InputError(label, "is a GGUF file: --tokens tokenizes with a tokenizer.json and does not read "
                                    "a GGUF vocabulary (give the model directory the GGUF was made from)")
        path = tokenizer_file(source)
        if path is None:
            there = Path(source.tokenizer_dir) / TOKENIZER_FILE if source.tokenizer_dir is not None else None
            if there is not None and (there.exists() or there.is_symlink()):
                raise InputError(there, "is not a readable regular file, so --tokens cannot load the tokenizer")
            raise InputError(label, "has no tokenizer.json next to it, so --tokens cannot tokenize its renders "
                                    "(give a model directory or its tokenizer_config.json)")
        loaded.append(Tokenizer(path))
    return loaded[0], loaded[1]


# ---------------------------------------------------------------------------------------------
# role wrappers

ROLES = ("system", "user", "assistant", "tool")

# Sentinel contents: unlikely in any template, free of whitespace (templates strip content) and of
# Jinja or JSON syntax (templates escape or serialise it).
SYSTEM_SENTINEL = "⟦SYSTEM-CONTENT-7⟧"
USER_SENTINEL = "⟦USER-CONTENT-1⟧"
SECOND_USER_SENTINEL = "⟦USER-CONTENT-2⟧"
ASSISTANT_SENTINEL = "⟦ASSISTANT-CONTENT-3⟧"
TOOL_RESULT_SENTINEL = "⟦TOOL-RESULT-5⟧"
TOOL_ARGUMENT_SENTINEL = "⟦TOOL-ARGUMENT-4⟧"
# Stands in for bos_token in one probe render, to tell the variable from the same text written literally.
BOS_SENTINEL = "⟦BOS-TOKEN-6⟧"
TOOL_NAME = "sentinel_tool"
# Nine alphanumeric characters: Mistral's templates reject any other tool call id.
TOOL_CALL_ID = "call00001"

# Wrapper statuses.
WRAPPER_OK = "ok"
WRAPPER_NOT_SUPPORTED = "not-supported"
WRAPPER_NOT_RENDERED = "not-rendered"
WRAPPER_UNCLEAR = "unclear"
# The render failed for a reason that says nothing about the role: it spent its budget, the
# sandbox refused something, or transformers refused the inputs.
WRAPPER_FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class Wrapper:
    """The text around one role's content. ``note`` explains a status other than "ok"."""

    prefix: str | None
    suffix: str | None
    status: str = WRAPPER_OK
    note: str | None = None


@dataclasses.dataclass
class RoleWrappers:
    """What one template puts around each role's content.

    ``start`` is what precedes the first turn (BOS, a default system prompt), ``end`` what a
    conversation ending without a generation prompt gets after its last turn (often an EOS), and
    ``generation_prompt`` the text ``add_generation_prompt=True`` appends (as its ``prefix``).
    Mid-conversation turns define the wrappers: a role's prefix is what follows the previous
    turn's suffix.
    """

    label: str
    template_name: str
    start: str | None
    end: str | None
    roles: dict[str, Wrapper]
    generation_prompt: Wrapper
    error: str | None = None
    # Stand-in special tokens the renders used because the source has none (see ``diff``).
    placeholders: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.label,
            "template": self.template_name,
            "placeholder_tokens": self.placeholders,
            "start": self.start,
            "end": self.end,
            "roles": {role: dataclasses.asdict(wrapper) for role, wrapper in self.roles.items()},
            "generation_prompt": dataclasses.asdict(self.generation_prompt),
            "error": self.error,
        }


def _strip_start(text: str, *candidates: str | None) -> tuple[str, bool]:
    """``text`` without the first non-empty candidate it starts with; and whether one matched."""
    for candidate in candidates:
        if candidate and text.startswith(candidate):
            return text[len(candidate):], True
    return text, False


def _split_at(text: str, sentinel: str) -> tuple[str, str] | None:
    """The text before and after the first occurrence of ``sentinel`` (None when it is not rendered)."""
    index = text.find(sentinel)
    if index < 0:
        return None
    return text[:index], text[index + len(sentinel):]


class _WrapperRenderer:
    """Renders the small sentinel conversations of one template, remembering failures."""

    def __init__(self, template: Any, special_tokens: dict[str, str], now: datetime, budget: Budget,
                 variables: dict[str, Any] | None = None) -> None:
        self.template = template
        self.special_tokens = special_tokens
        self.now = now
        self.budget = budget
        self.variables = dict(variables or {})
        # One run: once a probe spends its whole budget, the others fail at once instead of each
        # spending it again.
        self.run = RenderRun()

    def render(self, messages: list[dict], add_generation_prompt: bool = False, bos: str | None = None) -> Rendering:
        """Render ``messages``; ``bos`` replaces whatever ``bos_token`` would otherwise be."""
        tokens, variables = self.special_tokens, self.variables
        if bos is not None:
            tokens = {**tokens, "bos_token": bos}
            variables = {**variables, "bos_token": bos} if "bos_token" in variables else variables
        conversation = Conversation(messages=messages, add_generation_prompt=add_generation_prompt,
                                    kwargs=dict(variables))
        return self.run.render(self.template, conversation, special_tokens=tokens,
                               add_generation_prompt=add_generation_prompt, now=self.now, budget=self.budget)

    def bos(self) -> str | None:
        """The BOS text the template receives (a variable overrides the token, as in transformers)."""
        value = self.variables.get("bos_token", self.special_tokens.get("bos_token"))
        return value if isinstance(value, str) and value else None

    def starts_with_bos_variable(self, messages: list[dict]) -> bool:
        """Whether the render of ``messages`` opens with the ``bos_token`` variable.

        Only that is the conversation's BOS. The same text written literally is part of a turn:
        SmolLM2's BOS is ``<|im_start|>``, which its template writes by hand to open every turn.
        """
        if self.bos() is None:
            return False
        marked = self.render(messages, bos=BOS_SENTINEL)
        return marked.ok and marked.text.startswith(BOS_SENTINEL)


def _user(content: str) -> dict:
    return {"role": "user", "content": content}


def _tool_call_turns(with_empty_content: bool) -> list[dict]:
    call = {"id": TOOL_CALL_ID, "type": "function",
            "function": {"name": TOOL_NAME, "arguments": {"query": TOOL_ARGUMENT_SENTINEL}}}
    assistant: dict[str, Any] = {"role": "assistant", "tool_calls": [call]}
    if with_empty_content:
        assistant["content"] = ""
    tool = {"role": "tool", "tool_call_id": TOOL_CALL_ID, "name": TOOL_NAME, "content": TOOL_RESULT_SENTINEL}
    return [_user(USER_SENTINEL), assistant, tool]


def _failure_note(rendering: Rendering) -> str:
    return rendering.error.describe() if rendering.error is not None else "the render failed"


def _failed_wrapper(rendering: Rendering) -> Wrapper:
    """The wrapper of a role whose render failed: "not-supported" when the template refused the
    role (its raise_exception, or an error on the role's message), "failed" otherwise."""
    refused = rendering.error is None or rendering.error.kind in ("raised", "error")
    return Wrapper(None, None, WRAPPER_NOT_SUPPORTED if refused else WRAPPER_FAILED, _failure_note(rendering))


def role_wrappers(
    source: Any,
    template_name: str | None = None,
    *,
    special_tokens: dict[str, str] | None = None,
    variables: dict[str, Any] | None = None,
    now: datetime | None = None,
    budget: Budget = DEFAULT_BUDGET,
    cwd: Path | None = None,
) -> RoleWrappers:
    """The text a template puts before and after each role's content, and its generation prompt.

    A role the template rejects is "not-supported" (with the template's message), a role whose
    content never appears is "not-rendered" (empty wrapper), and a cut that cannot be made cleanly
    is "unclear" with a note saying why. Special tokens and ``variables`` work as for ``diff``
    (placeholders for a source without special tokens, listed in ``placeholders``).
    """
    label = source_label(source)
    with contextlib.ExitStack() as stack:
        loaded, placeholders = _with_tokens(open_source(source, stack, cwd), special_tokens, variables)
        template = loaded.select(template_name, None)
        renderer = _WrapperRenderer(template, loaded.special_tokens, now or datetime.now(), budget, variables)
        wrappers = _extract_wrappers(renderer, label, template.name, loaded.special_tokens)
        wrappers.placeholders = placeholders
        return wrappers


def _token_safe_common_prefix(first: str, second: str, special_tokens: dict[str, str]) -> str:
    """The common prefix of two texts, cut back so it never ends inside a special token.

    ``<|endoftext|>`` and ``<|assistant|>`` share ``<|``, which is not a wrapper's end.
    """
    length = len(os.path.commonprefix([first, second]))
    pattern = special_token_pattern(special_tokens.values())
    for text in (first, second):
        for match in pattern.finditer(text):
            if match.start() < length < match.end():
                length = match.start()
    return first[:length]


def _token_safe_common_suffix(first: str, second: str, special_tokens: dict[str, str]) -> str:
    """The common suffix of two texts, cut forward so it never starts inside a special token.

    ``<|eot_id|><|start_header_id|>`` and ``<|begin_of_text|><|start_header_id|>`` share ``|><|start...``.
    """
    length = len(os.path.commonprefix([first[::-1], second[::-1]]))
    pattern = special_token_pattern(special_tokens.values())
    for text in (first, second):
        cut = len(text) - length
        for match in pattern.finditer(text):
            if match.start() < cut < match.end():
                cut = match.end()
        length = min(length, len(text) - cut)
    return first[len(first) - length:] if length else ""


def _closing_text(renderer: _WrapperRenderer, before_user: str, after_user: str,
                  special_tokens: dict[str, str]) -> str:
    """What every conversation gets after its last turn, told from the turns themselves ("" when unsure).

    Used when the generation prompt cannot show where the user's turn ends, because it changes
    nothing: some templates print the assistant header whatever ``add_generation_prompt`` says.
    Between an assistant and a user turn stand the assistant's suffix and the user's prefix; the
    user's prefix also ends the text before the first user turn. So the assistant's suffix is
    known, and what follows it when the conversation ends with the assistant is the closing text.
    """
    exchange = renderer.render([_user(USER_SENTINEL), {"role": "assistant", "content": ASSISTANT_SENTINEL},
                                _user(SECOND_USER_SENTINEL)])
    answered = renderer.render([_user(USER_SENTINEL), {"role": "assistant", "content": ASSISTANT_SENTINEL}])
    if not exchange.ok or not answered.ok:
        return ""
    after_assistant = _split_at(exchange.text, ASSISTANT_SENTINEL)
    answer_end = _split_at(answered.text, ASSISTANT_SENTINEL)
    between = _split_at(after_assistant[1], SECOND_USER_SENTINEL) if after_assistant is not None else None
    if between is None or answer_end is None:
        return ""
    user_prefix = _token_safe_common_suffix(before_user, between[0], special_tokens)
    assistant_suffix = between[0][: len(between[0]) - len(user_prefix)]
    if not user_prefix or not assistant_suffix or not answer_end[1].startswith(assistant_suffix):
        return ""
    closing = answer_end[1][len(assistant_suffix):]
    return closing if after_user.endswith(closing) and len(closing) < len(after_user) else ""


def _extract_wrappers(
    renderer: _WrapperRenderer, label: str, template_name: str, special_tokens: dict[str, str]
) -> RoleWrappers:
    single_user = renderer.render([_user(USER_SENTINEL)])
    prompted_user = renderer.render([_user(USER_SENTINEL)], add_generation_prompt=True)
    if not single_user.ok or _split_at(single_user.text, USER_SENTINEL) is None:
        failed = (_failed_wrapper(single_user) if not single_user.ok
                  else Wrapper(None, None, WRAPPER_NOT_SUPPORTED, "the user's content is not rendered"))
        return RoleWrappers(label, template_name, None, None, {role: failed for role in ROLES}, failed,
                            error=failed.note)
    before_user, after_user = _split_at(single_user.text, USER_SENTINEL)

    # After the final user turn: the user suffix, then either the conversation's end or the
    # generation prompt; the part both renders share is the suffix.
    prompted_after = None
    if prompted_user.ok and _split_at(prompted_user.text, USER_SENTINEL) is not None:
        prompted_after = _split_at(prompted_user.text, USER_SENTINEL)[1]
    user_suffix = after_user
    if prompted_after is not None and prompted_after != after_user:
        user_suffix = _token_safe_common_prefix(after_user, prompted_after, special_tokens)
    else:
        closing = _closing_text(renderer, before_user, after_user, special_tokens)
        user_suffix = after_user[: len(after_user) - len(closing)]
    end = after_user[len(user_suffix):]
    generation_prompt = _generation_prompt(single_user, prompted_user, prompted_after, user_suffix)

    assistant, user_prefix = _assistant_and_user_prefix(renderer, user_suffix, end)
    if user_prefix is not None and before_user.endswith(user_prefix):
        start = before_user[: len(before_user) - len(user_prefix)]
        user = Wrapper(user_prefix, user_suffix)
    else:
        start = ""
        user = Wrapper(before_user, user_suffix, WRAPPER_UNCLEAR,
                       "no later user turn to compare with, so the prefix includes the conversation start")
    roles = {
        "system": _system_wrapper(renderer, start, user.prefix),
        "user": user,
        "assistant": assistant,
        "tool": _tool_wrapper(renderer, user, assistant, end),
    }
    return RoleWrappers(label, template_name, start, end, roles, generation_prompt)


def _generation_prompt(single: Rendering, prompted: Rendering, prompted_after: str | None, user_suffix: str) -> Wrapper:
    if not prompted.ok:
        return _failed_wrapper(prompted)
    if prompted.text.startswith(single.text):
        return Wrapper(prompted.text[len(single.text):], None)
    guess = prompted_after[len(user_suffix):] if prompted_after is not None else None
    return Wrapper(guess, None, WRAPPER_UNCLEAR,
                   "not a clean suffix: the render without a generation prompt is not a prefix of the render with "
                   "one (the template also changes earlier text, e.g. an EOS it adds only without the prompt)")


def _assistant_and_user_prefix(renderer: _WrapperRenderer, user_suffix: str, end: str) -> tuple[Wrapper, str | None]:
    """The assistant's wrapper and the user prefix of a later user turn."""
    answered = renderer.render([_user(USER_SENTINEL), {"role": "assistant", "content": ASSISTANT_SENTINEL}])
    exchange = renderer.render([_user(USER_SENTINEL), {"role": "assistant", "content": ASSISTANT_SENTINEL},
                                _user(SECOND_USER_SENTINEL)])
    if not answered.ok:
        return _failed_wrapper(answered), None
    after = _split_at(answered.text, ASSISTANT_SENTINEL)
    if after is None:
        return Wrapper("", "", WRAPPER_NOT_RENDERED, "the assistant's content is not rendered"), None
    assistant_suffix = after[1]
    if end and assistant_suffix.endswith(end):
        assistant_suffix = assistant_suffix[: len(assistant_suffix) - len(end)]
    between = _split_at(after[0], USER_SENTINEL)
    if between is None:
        return Wrapper(None, assistant_suffix, WRAPPER_UNCLEAR, "the user's content is not rendered before it"), None
    assistant_prefix, clean = _strip_start(between[1], user_suffix)
    assistant = Wrapper(assistant_prefix, assistant_suffix)
    if not clean and user_suffix:
        assistant = dataclasses.replace(assistant, status=WRAPPER_UNCLEAR,
                                        note="the user's turn ends differently before an assistant turn")
    user_prefix = None
    if exchange.ok and ASSISTANT_SENTINEL in exchange.text and SECOND_USER_SENTINEL in exchange.text:
        start = exchange.text.index(ASSISTANT_SENTINEL) + len(ASSISTANT_SENTINEL)
        between_turns = exchange.text[start: exchange.text.index(SECOND_USER_SENTINEL)]
        user_prefix, _ = _strip_start(between_turns, assistant_suffix)
    return assistant, user_prefix


def _system_wrapper(renderer: _WrapperRenderer, start: str, user_prefix: str | None) -> Wrapper:
    messages = [{"role": "system", "content": SYSTEM_SENTINEL}, _user(USER_SENTINEL)]
    rendering = renderer.render(messages)
    if not rendering.ok:
        return _failed_wrapper(rendering)
    parts = _split_at(rendering.text, SYSTEM_SENTINEL)
    if parts is None:
        return Wrapper("", "", WRAPPER_NOT_RENDERED, "the system message's content is not rendered")
    before, after = parts
    # A default system prompt in the start is replaced, not preceded, by a given one; then only
    # the BOS the template prints from bos_token goes.
    prefix, stripped = _strip_start(before, start)
    if not stripped and renderer.starts_with_bos_variable(messages):
        prefix, _ = _strip_start(before, renderer.bos())
    user_at = after.find(USER_SENTINEL)
    if user_at < 0:
        return Wrapper(prefix, None, WRAPPER_UNCLEAR, "the user's content is not rendered after a system message")
    between = after[:user_at]
    if user_prefix and between.endswith(user_prefix):
        return Wrapper(prefix, between[: len(between) - len(user_prefix)])
    return Wrapper(prefix, between, WRAPPER_UNCLEAR,
                   "the system text runs into the user's content without the usual user prefix "
                   "(merged into the first user turn?)")


def _tool_wrapper(renderer: _WrapperRenderer, user: Wrapper, assistant: Wrapper, end: str) -> Wrapper:
    rendering = renderer.render(_tool_call_turns(with_empty_content=False))
    if not rendering.ok:
        # Some templates concatenate the content of every assistant turn, so give it a string.
        rendering = renderer.render(_tool_call_turns(with_empty_content=True))
        if not rendering.ok:
            return _failed_wrapper(rendering)
    parts = _split_at(rendering.text, TOOL_RESULT_SENTINEL)
    if parts is None:
        return Wrapper("", "", WRAPPER_NOT_RENDERED, "the tool result's content is not rendered")
    before, suffix = parts
    if end and suffix.endswith(end):
        suffix = suffix[: len(suffix) - len(end)]
    # The tool turn starts after the assistant's tool call: after the last trace of the call, and
    # after the assistant's usual suffix when that follows.
    call_end = max((before.rfind(marker) + len(marker) for marker in (TOOL_ARGUMENT_SENTINEL, TOOL_NAME)
                    if marker in before), default=-1)
    if call_end >= 0:
        after_call = before[call_end:]
        if assistant.suffix and assistant.suffix in after_call:
            return Wrapper(after_call[after_call.index(assistant.suffix) + len(assistant.suffix):], suffix)
        return Wrapper(after_call, suffix, WRAPPER_UNCLEAR,
                       "the assistant's usual suffix does not follow the tool call, so the prefix runs from the call")
    # The call itself is not printed: an empty assistant turn sits between the user and the tool.
    user_at = before.find(USER_SENTINEL)
    rest = before[user_at + len(USER_SENTINEL):] if user_at >= 0 else before
    clean = True
    for expected in (user.suffix, assistant.prefix, assistant.suffix):
        rest, stripped = _strip_start(rest, expected)
        clean = clean and (stripped or not expected)
    if clean:
        return Wrapper(rest, suffix, WRAPPER_OK, "the tool call itself is not rendered")
    return Wrapper(rest, suffix, WRAPPER_UNCLEAR,
                   "the tool call is not rendered and the turns before the result do not match the usual wrappers")


def compare_wrappers(wrappers: list[RoleWrappers]) -> dict[str, list[bool]]:
    """Per row (start, each role, generation prompt, end): which templates differ from the most common value.

    Useful to spot the one model whose template differs from its family.
    """
    rows: dict[str, list[Any]] = {"start": [w.start for w in wrappers]}
    for role in ROLES:
        rows[role] = [(w.roles[role].prefix, w.roles[role].suffix, w.roles[role].status) for w in wrappers]
    rows["generation_prompt"] = [(w.generation_prompt.prefix, w.generation_prompt.status) for w in wrappers]
    rows["end"] = [w.end for w in wrappers]
    outliers = {}
    for row, values in rows.items():
        ranked = Counter(values).most_common(2)
        common, count = ranked[0]
        # Without one most common value (every value once, or a tie for first) nobody is singled out.
        has_majority = count > 1 and (len(ranked) == 1 or ranked[1][1] < count)
        outliers[row] = [has_majority and value != common for value in values]
    return outliers
