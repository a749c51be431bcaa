"""Lint files: find the templates in each source, run the selected rules, fix, cache.

Data flows one way: source (sources.py) -> LintTarget -> rules -> suppressions -> config
(severity, per-file ignores) -> ``FileReport``. Nothing here prints; cli.py does.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import jinja2

from .. import __version__
from ..errors import InputError
from ..guards import DEFAULT_BUDGET
from .config import LintConfig
from .engine import run_rules
from .fixes import fix_until_stable
from .model import Diagnostic, Fix
from .registry import Rule, all_rules
from .target import LintTarget

# Files a directory is searched for; a directory holding one of the first three is a model dir.
MODEL_FILES = ("chat_template.jinja", "tokenizer_config.json", "chat_template.json")
CARRIAGE_RETURN_RULE = "TK104"
TEMPLATE_SUFFIXES = (".jinja", ".j2", ".gguf")


@lru_cache(maxsize=None)
def installed_code_fingerprint(package_dir: str | None = None) -> str:
    """The name, size and modification time of every file of templatekit's installed code.

    Cached results are keyed by it as well as by the version: templatekit is installed from a
    checkout (``pip install -e .``), where ``git pull`` changes the rules, the fixtures and the
    renderer without changing the version, and a cache keyed by the version alone would keep
    answering with the old code's findings.
    """
    root = package_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entries = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if name != "__pycache__")
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(directory, name)
            try:
                status = os.stat(path)
            except OSError:
                continue
            entries.append(f"{os.path.relpath(path, root)}\0{status.st_size}\0{status.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()


@dataclasses.dataclass
class FileReport:
    """The outcome of linting one source (a file, a model directory or a GGUF file)."""

    path: str
    diagnostics: list[Diagnostic] = dataclasses.field(default_factory=list)
    error: str | None = None  # the one-line input error, when the source could not be read
    fixed: int = 0  # fixes applied (or, with diff only, that would be applied)
    diff: str = ""  # unified diff of the fixes, when asked for
    notes: list[str] = dataclasses.field(default_factory=list)
    templates: int = 0
    # ``engines.compare.EngineComparison``s, when the source was also rendered in real engines.
    engine_renders: list | None = None


class NotRegularFile(type(Path())):  # type: ignore[misc]
    """A file a directory search found under a template's name that is not a regular file (a
    FIFO, socket or device). It is reported, never opened: a FIFO without a writer would make
    the whole lint wait for ever. A pipe named on the command line (``<(...)``) is read as given."""


def discover(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Each path as given; directories that are not model directories holding a chat template
    are searched for sources (see ``_search``)."""
    for raw in paths:
        path = Path(raw)
        if not _is_dir(path) or _holds_chat_template(path):
            yield path
            continue
        found = sorted(_search(path), key=lambda source: source.parts)
        yield from found or [path]  # with nothing found, lint_path says why there is nothing to lint


# Directories a search never enters: installed packages and caches hold other projects' templates.
SKIPPED_DIRECTORIES = frozenset({"node_modules", "site-packages", "dist-packages", "__pycache__"})


def _search(root: Path) -> Iterator[Path]:
    """The sources below ``root``: model directories that hold a chat template
    (as one source each) and template files (.jinja, .j2, .gguf) that are not such a directory's
    own template files. Hidden directories, virtual environments and package folders are left out."""
    holding: dict[Path, bool] = {}  # each directory's answer, asked again by its subdirectories

    def holds(directory: Path) -> bool:
        if directory not in holding:
            holding[directory] = _holds_chat_template(directory)
        return holding[directory]

    unreadable: list[Path] = []

    def cannot_list(error: OSError) -> None:
        # Reported as that directory's input error (loading it says why), while the walk goes on.
        if error.filename is not None and Path(error.filename) != root:
            unreadable.append(Path(error.filename))

    for directory, subdirectories, files in os.walk(root, onerror=cannot_list):
        yield from unreadable
        unreadable.clear()
        here = Path(directory)
        subdirectories[:] = sorted(name for name in subdirectories if _searched(here / name))
        model_dir = here != root and holds(here)
        if model_dir:
            yield here
        # A model directory's own templates are linted with it: its chat_template.jinja and
        # everything in its additional_chat_templates folder.
        additional = here != root and here.name == "additional_chat_templates" and holds(here.parent)
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix not in TEMPLATE_SUFFIXES:
                continue
            if name.endswith(".jinja") and (additional or (model_dir and name == "chat_template.jinja")):
                continue
            yield here / name if _regular_or_unknown(here / name) else NotRegularFile(here / name)
    yield from unreadable


def _regular_or_unknown(path: Path) -> bool:
    """False only for a path that is certainly not a regular file (links are followed; a link
    that leads nowhere is left for loading to explain)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return True
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False  # not looked at here: loading it names the problem


def _searched(directory: Path) -> bool:
    if directory.name.startswith(".") or directory.name in SKIPPED_DIRECTORIES:
        return False
    try:
        return not (directory / "pyvenv.cfg").is_file()
    except OSError:
        return True  # an unreadable directory is entered, so the walk reports it


def _is_model_dir(path: Path) -> bool:
    try:
        return any((path / name).is_file() for name in MODEL_FILES)
    except OSError:
        return True  # cannot look inside: loading it says so


def _holds_chat_template(path: Path) -> bool:
    """A model directory with a chat template where transformers looks for one (a base model's
    directory has tokenizer files but none). A JSON file that does not parse counts, and so do a
    template name that is not a regular file and a directory that cannot be looked into, so
    that loading it explains the problem (as render does)."""
    from ..sources import is_regular_file

    try:
        if not path.is_dir() or not _is_model_dir(path):
            return False
        if is_regular_file(path / "chat_template.jinja") or any(
                is_regular_file(file) for file in (path / "additional_chat_templates").glob("*.jinja")):
            return True
        return any(is_regular_file(path / name) and _has_chat_template_key(path / name)
                   for name in ("tokenizer_config.json", "chat_template.json")) or bool(_skipped_template_files(path))
    except OSError:
        return True


def _skipped_template_files(path: Path) -> list[str]:
    """Where a model directory holds a template file that is not a regular file (a directory
    named chat_template.jinja, say). Such a directory is no base model: loading it says what was
    skipped, as render says it."""
    from ..sources import is_regular_file

    try:
        candidates = [path / "chat_template.jinja", path / "chat_template.json",
                      *(path / "additional_chat_templates").glob("*.jinja")]
        return [file.name for file in candidates if file.exists() and not is_regular_file(file)]
    except OSError:
        return []


class Linter:
    """Lints sources with one configuration; reusable across files (rules are built once)."""

    def __init__(self, config: LintConfig | None = None, *, use_cache: bool = True) -> None:
        self.config = config or LintConfig()
        self.use_cache = use_cache and self.config.cache
        self._cache_dir = cache_directory() if self.use_cache else None

    def rules_for(self, path: Path | None) -> list[Rule]:
        return [
            rule(self.config.options_for(rule))
            for rule in all_rules()
            if self.config.is_selected(rule, path)
        ]

    # -- one template text --------------------------------------------------------------------
    def lint_text(self, text: str, *, template: object = None, source_text: str | None = None,
                  special_tokens: dict | None = None, path: Path | None = None,
                  vocabulary: object = None) -> list[Diagnostic]:
        """Diagnostics for one template text (locations filled in from ``template``)."""
        rules = self.rules_for(path)
        key = self._cache_key(text, source_text, special_tokens, rules, vocabulary, getattr(template, "name", ""))
        cached = self._cache_read(key)
        if cached is not None:
            found = cached
        else:
            target = LintTarget(text, template=template, source_text=source_text,
                                special_tokens=special_tokens, config=self.config, vocabulary=vocabulary)
            found = run_rules(target, rules)
            self._cache_write(key, found)
        lines = text.split("\n")
        anchor = _file_anchor(template)
        return [self._finish(d, template, path, lines, anchor) for d in found if self._targets_engine(d)]

    def _targets_engine(self, diagnostic: Diagnostic) -> bool:
        """Portability findings name the engines they break in; keep those the user targets."""
        return not diagnostic.engines or bool(set(diagnostic.engines) & set(self.config.engines))

    def _finish(self, diagnostic: Diagnostic, template: object, path: Path | None, lines: list[str],
                anchor: tuple[int, int] | None) -> Diagnostic:
        severity = self.config.severity_of(diagnostic.code, diagnostic.severity)
        location = template.location(diagnostic.line, diagnostic.column) if hasattr(template, "location") else ""
        file_line, file_column = anchor if anchor is not None else (diagnostic.line, diagnostic.column)
        return dataclasses.replace(
            diagnostic,
            severity=severity,
            location=location or f"<template>:{diagnostic.line}:{diagnostic.column}",
            path=str(path) if path is not None else "",
            template_name=getattr(template, "name", "") if getattr(template, "embedded", False) else "",
            excerpt=lines[diagnostic.line - 1] if 0 < diagnostic.line <= len(lines) else "",
            file_line=file_line,
            file_column=file_column,
        )

    # -- whole sources ------------------------------------------------------------------------
    def lint_path(self, path: Path, *, fix: bool = False, unsafe_fixes: bool = False, diff: bool = False) -> FileReport:
        from ..sources import load_source

        report = FileReport(path=str(path))
        if isinstance(path, NotRegularFile):
            from ..sources import file_type_name

            report.error = str(InputError(path, f"not a regular file ({file_type_name(path)}); a directory search "
                                                "reads regular files only, so it was not opened"))
            return report
        if path.suffix == ".json" and _is_file(path) and not _has_chat_template_key(path):
            report.notes.append("no chat_template in this file; nothing to lint")
            return report
        if _is_dir(path) and _is_model_dir(path) and not _holds_chat_template(path):
            report.notes.append("a model directory without a chat template (a base model?); nothing to lint")
            return report
        try:
            source = load_source(path)
        except InputError as exc:
            report.error = str(exc)
            return report
        # transformers never reads these keys; the file's other templates are linted.
        report.notes += [f"{why}; not linted as a template" for why in source.skipped.values()]
        try:
            vocabulary = self._vocabulary(source)
        except InputError as exc:
            # render reads only the template and its special tokens, and so does transformers'
            # apply_chat_template: a tokenizer file it cannot read costs the checks that need
            # the tokenizer (TK5xx), not the whole source. It is still a broken model repository,
            # so it is the source's input error (exit 2), beside the other rules' findings.
            report.error = f"{exc} (the tokenizer checks, TK5xx, did not run; the other rules did)"
            vocabulary = None
        report.notes += getattr(vocabulary, "notes", [])
        for template in source.templates.values():
            if len(template.text) > DEFAULT_BUDGET.max_template:
                # Nothing can render it, and the static rules would take minutes on it: say why
                # it is not linted, once, and go on with the source's other templates.
                report.error = report.error or str(InputError(
                    template.location(), f"template of {len(template.text):,} characters exceeds the template "
                                         f"size budget of {DEFAULT_BUDGET.max_template:,}; not linted"))
                continue
            report.templates += 1
            source_text = _raw_text(template)
            if fix or unsafe_fixes:
                self._fix_template(template, source_text, source.special_tokens, report, unsafe_fixes, diff, vocabulary)
            else:
                report.diagnostics += self.lint_text(template.text, template=template, source_text=source_text,
                                                     special_tokens=source.special_tokens, path=Path(template.path),
                                                     vocabulary=vocabulary)
        report.diagnostics.sort(key=Diagnostic.sort_key)
        return report

    def _vocabulary(self, source) -> object:
        """The source's tokenizer (``vocabulary.load_vocabulary``), read only when a selected rule uses it."""
        if not any((getattr(rule, "needs_vocabulary", False)
                    or (getattr(rule, "judges_other_rules", False) and not self.config.static_only))
                   and self.config.is_selected(rule, Path(template.path))
                   for template in source.templates.values() for rule in all_rules()):
            return None
        from ..vocabulary import load_vocabulary

        return load_vocabulary(source)

    def _fix_template(self, template, source_text, special_tokens, report, unsafe, diff_only, vocabulary=None) -> None:
        path = Path(template.path)
        rules = self.rules_for(path)

        def lint(text: str) -> list[Diagnostic]:
            raw = source_text if text == template.text and source_text is not None else None
            return run_rules(LintTarget(text, template=template, source_text=raw, special_tokens=special_tokens,
                                        config=self.config, vocabulary=vocabulary), rules)

        fixed_text, applied = fix_until_stable(template.text, lint, unsafe=unsafe)
        # A .jinja file's CRLF never reaches the template text (it is read with newline
        # translation), so TK104's fix is applied here: the file is written back with LF.
        if source_text is not None and "\r" in source_text and any(rule.code == CARRIAGE_RETURN_RULE for rule in rules):
            applied += 1
            source_text = None
        if applied:
            try:
                written = self._write_fix(template, source_text, fixed_text, report, diff_only)
                report.fixed += applied
            except InputError as exc:
                # The file cannot take the fix (a pipe, a read-only file): this file's findings,
                # and every other file's, are still reported.
                report.error = str(exc)
                written = False
            if not written:
                fixed_text = template.text
        lines, anchor = fixed_text.split("\n"), _file_anchor(template)
        report.diagnostics += [self._finish(d, template, path, lines, anchor) for d in lint(fixed_text)
                               if self._targets_engine(d)]

    def _write_fix(self, template, source_text, fixed_text: str, report: FileReport, diff_only: bool) -> bool:
        from ..authoring import embedded_file_text, write_atomically

        path = Path(template.path)
        if template.kind == "gguf":
            report.notes.append(f"{path}: fixes cannot be written into a GGUF file; extract the template, fix it, and convert again")
            report.fixed = 0
            return False
        before = _read_untranslated(path) if path.is_file() else ""
        if template.kind in ("jinja",):
            after = _keep_newline_style(source_text, template.text, fixed_text)
        else:
            name = None if not template.embedded or template.name == "default" and _single_template(path) else template.name
            after = embedded_file_text(fixed_text, path, name, stem=path.stem)
            if after is None:
                return False
        if diff_only:
            label = str(path)
            if template.kind != "jinja":
                # The file holds the template as one JSON string: a diff of that line would show the
                # whole template twice, so the template text's own lines are compared instead.
                before, after = template.text, fixed_text
                label = f"{path}[{template.name}]"
            report.diff += "".join(difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True),
                fromfile=f"a/{label}", tofile=f"b/{label}"))
            return False
        write_atomically(path, after.encode("utf-8"))
        return True

    # -- cache ---------------------------------------------------------------------------------
    def _cache_key(self, text: str, source_text: str | None, special_tokens: dict | None, rules: list[Rule],
                   vocabulary: object = None, template_name: str = "") -> str:
        digest = hashlib.sha256()
        # The template's name too: transformers uses a template named tool_use only with tools,
        # so the behavioural rules render the same text differently under that name.
        # The vocabulary's fingerprint hashes the tokenizer files, so editing them invalidates results.
        # Jinja's version too: it parses every template and renders the behavioural checks' fixtures.
        for part in (__version__, installed_code_fingerprint(), jinja2.__version__, self.config.fingerprint(),
                     ",".join(r.code for r in rules),
                     json.dumps(sorted((special_tokens or {}).items())), getattr(vocabulary, "fingerprint", ""),
                     template_name, "\0", text, "\0", source_text or ""):
            digest.update(part.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def _cache_read(self, key: str) -> list[Diagnostic] | None:
        if self._cache_dir is None:
            return None
        try:
            data = json.loads((self._cache_dir / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
            return [_diagnostic_from_json(item) for item in data]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _cache_write(self, key: str, diagnostics: list[Diagnostic]) -> None:
        if self._cache_dir is None:
            return
        try:
            folder = self._cache_dir / key[:2]
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{key}.{os.getpid()}.tmp"
            temporary.write_text(json.dumps([dataclasses.asdict(d) for d in diagnostics]), encoding="utf-8")
            os.replace(temporary, folder / f"{key}.json")
        except OSError:
            self._cache_dir = None  # an unwritable cache only costs speed


def cache_directory() -> Path:
    """``$TEMPLATEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/templatekit``, else ``~/.cache/templatekit``."""
    explicit = os.environ.get("TEMPLATEKIT_CACHE_DIR")
    if explicit:
        return Path(explicit) / "lint"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "templatekit" / "lint"


def _diagnostic_from_json(item: dict) -> Diagnostic:
    fix = item.get("fix")
    if fix is not None:
        from .model import Edit

        fix = Fix(fix["description"], tuple(Edit(**edit) for edit in fix["edits"]), fix["safe"])
    return Diagnostic(**{**item, "fix": fix, "engines": tuple(item.get("engines", ()))})


def _file_anchor(template: object) -> tuple[int, int] | None:
    """Where an embedded template's text starts in its file (line, column), None when the
    template's lines are the file's own lines."""
    if not getattr(template, "embedded", False):
        return None
    path = Path(getattr(template, "path", ""))
    if getattr(template, "kind", "") == "gguf" or not path.is_file():
        return (1, 1)
    from ..sources import JsonDocument

    try:
        raw = path.read_text(encoding="utf-8")
        document = JsonDocument(raw)
        member = document.last_member("chat_template")
        start = member.value_start
        if raw[start] == "{":
            named = document.last_member(template.name, start)
            start = named.value_start if named is not None else start
        elif raw[start] == "[":
            for item_start, _ in document.array_items(start):
                named = document.last_member("name", item_start)
                if named is not None and document.value(named) == template.name:
                    inner = document.last_member("template", item_start)
                    start = inner.value_start if inner is not None else item_start
    except Exception:  # noqa: BLE001 - a position hint is optional; the finding still stands
        return (1, 1)
    line = raw.count("\n", 0, start) + 1
    return line, start - (raw.rfind("\n", 0, start) + 1) + 1


def _has_chat_template_key(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return True  # let load_source explain what is wrong with the file
    return not isinstance(data, dict) or "chat_template" in data


def _single_template(path: Path) -> bool:
    try:
        return not isinstance(json.loads(path.read_text(encoding="utf-8")).get("chat_template"), (list, dict))
    except (OSError, ValueError, AttributeError, RecursionError):
        return True


def _raw_text(template: object) -> str | None:
    """A .jinja file's text without newline translation (so CRLF is visible to whitespace rules)."""
    if getattr(template, "kind", "") != "jinja":
        return None
    try:
        raw = _read_untranslated(Path(template.path))
    except (OSError, UnicodeDecodeError):
        return None
    return raw if raw != template.text else None


def _read_untranslated(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def _keep_newline_style(source_text: str | None, original: str, fixed: str) -> str:
    """Write a fixed .jinja file with the line endings it had, unless the fix was about them."""
    if source_text is None or fixed == original:
        return fixed if source_text is None else source_text
    if source_text.replace("\r\n", "\n") == original and "\r\n" in source_text:
        return fixed.replace("\n", "\r\n")
    return fixed


# Below this many sources, starting worker processes costs more than it saves.
PARALLEL_MINIMUM = 4


def lint_paths(paths: Iterable[str | os.PathLike], config: LintConfig | None = None, *,
               jobs: int | None = None, **options: bool) -> list[FileReport]:
    """Lint every source under ``paths`` (the Python API behind ``templatekit lint``).

    Reports come back in discovery order. With several sources they are linted in ``jobs`` worker
    processes (default: the config's ``jobs``; 0 means one per CPU, 1 none); a template's lint is
    independent of every other file's, so the result is the same as in one process.
    """
    use_cache = bool(options.pop("use_cache", True))
    linter = Linter(config, use_cache=use_cache)
    sources = list(discover(paths))
    workers = _worker_count(linter.config.jobs if jobs is None else jobs, len(sources))
    if workers <= 1:
        return [linter.lint_path(path, **options) for path in sources]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork shares the already imported rules with the workers; elsewhere each worker imports them.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                             initializer=_start_worker, initargs=(linter, options, os.getpid())) as pool:
        # Small chunks: one slow template (a long tool-calling format) must not hold back a whole batch.
        return list(pool.map(_lint_in_worker, sources, chunksize=2))


def _worker_count(jobs: int, sources: int) -> int:
    if sources < PARALLEL_MINIMUM:
        return 1
    if jobs == 0:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(jobs, sources))


_worker_state: tuple[Linter, dict] | None = None

# Net container allocations between young-generation collections in a lint worker (see below).
YOUNG_COLLECTION_THRESHOLD = 20_000


def _start_worker(linter: Linter, options: dict, parent: int) -> None:
    global _worker_state
    _worker_state = (linter, options)
    from ..processes import end_with_parent

    end_with_parent(parent)  # a killed lint leaves no worker rendering on
    # What the worker starts with (modules, rules, the linter) lives as long as the worker does:
    # kept out of the full collections that linting's many short-lived trees trigger, which
    # would otherwise walk it again each time (about 2% of a corpus lint's CPU).
    gc.freeze()
    # Linting allocates and frees containers by the million (tokens, nodes, render frames); a
    # young-generation collection every 700 net allocations, Python's default, runs thousands of
    # times per template. Every 20,000 still bounds the cyclic garbage a render can pile up to
    # a few megabytes, and a memory-hungry template still meets its memory budget.
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def _lint_in_worker(path: Path) -> FileReport:
    assert _worker_state is not None, "worker used before _start_worker"
    linter, options = _worker_state
    return linter.lint_path(path, **options)
