"""The ``templatekit`` command line: the only place that prints and chooses exit codes.

Exit codes (all commands): 0 clean; 1 the template failed or findings at/above the threshold;
2 usage, configuration or input error, always one line naming the file and the problem.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from .errors import TemplatekitError, one_line
from .report import json_text

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2
# What a shell reports for a process its closed pipe ended (128 + SIGPIPE), as `git log | head` gets.
EXIT_BROKEN_PIPE = 141

# The template `templatekit render` uses when given no source.
DEFAULT_TEMPLATE = "chatml"

_OUTPUT_ERRORS = "templatekit-escape"


def _escape_unencodable(error: UnicodeError) -> tuple[str | bytes, int]:
    """Codec error handler for stdout and stderr: what the terminal's encoding cannot hold.

    A lone surrogate is valid in JSON (``"\\ud800"``) and so can reach a template, a message or a
    rendered prompt, and UTF-8 refuses to encode it. The surrogates Python uses for the bytes of
    a non-UTF-8 file name go out as those bytes (as ``surrogateescape`` does), so the name still
    matches the file; anything else becomes a ``\\uXXXX`` escape.
    """
    if not isinstance(error, UnicodeEncodeError):
        raise error
    code = ord(error.object[error.start])
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00]), error.start + 1
    escape = f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return escape, error.start + 1


codecs.register_error(_OUTPUT_ERRORS, _escape_unencodable)


def _tolerant_output_streams() -> None:
    """Make stdout and stderr write unencodable characters as escapes instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors=_OUTPUT_ERRORS)
            except (ValueError, OSError):  # a detached or closed stream: nothing to protect
                pass


def _fail_input(message: str) -> NoReturn:
    click.echo(f"templatekit: error: {one_line(message)}", err=True)
    sys.exit(EXIT_INPUT)


def _fail_usage(error: click.UsageError) -> NoReturn:
    """A usage mistake (unknown option or command, bad value) as one line and exit 2, like every
    other input error, instead of click's usage block."""
    where = ""
    if error.ctx is not None and error.ctx.parent is not None:
        where = f"{error.ctx.info_name}: "
    _fail_input(where + error.format_message())


def _leave_quietly_on_closed_pipe() -> NoReturn:
    """The reader of the output went away (``| head``): stop without a message. Output still
    buffered would fail again when Python flushes it at exit, so it goes to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


class _Choice(click.Choice):
    """click.Choice whose refusal names the closest valid value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as error:
            from .lint.config import _suggest

            suggestion = _suggest(value, self.choices)
            if not suggestion:
                raise
            self.fail(f"{error.message.rstrip('.')}{suggestion}", param, ctx)


class _Group(click.Group):
    """Turns every templatekit error into one line and exit 2, never a traceback."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            _fail_usage(error)

    def invoke(self, ctx: click.Context) -> Any:
        _tolerant_output_streams()
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            _fail_usage(error)
        except BrokenPipeError:
            _leave_quietly_on_closed_pipe()
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except TemplatekitError as exc:
            _fail_input(str(exc))
        except KeyboardInterrupt:
            click.echo("templatekit: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - a bug in templatekit, not in the user's input
            if os.environ.get("TEMPLATEKIT_DEBUG"):
                raise
            _fail_input(f"internal error: {type(exc).__name__}: {exc} (set TEMPLATEKIT_DEBUG=1 for a traceback)")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="templatekit")
def main() -> None:
    """Author, render, lint, diff and validate LLM chat templates."""


# ---------------------------------------------------------------------------------------------
# shared option parsing


def _parse_var(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="--var")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected an ISO date-time like 2025-01-15T10:30:00, got {text!r}", param_hint="--now") from None


def _budget_options(command: Any) -> Any:
    """The --timeout and --max-output options of the commands that render with a chosen budget."""
    command = click.option("--max-output", type=int, metavar="CHARS",
                           help="Output-size budget per render (default 8 MiB).")(command)
    return click.option("--timeout", type=float, metavar="SECONDS",
                        help="Wall-time budget per render (default 2 s, more for long conversations).")(command)


def _budget(timeout: float | None, max_output: int | None) -> Any:
    from .guards import DEFAULT_BUDGET, Budget

    budget = DEFAULT_BUDGET
    for field, value, option in (("seconds", timeout, "--timeout"), ("max_output", max_output, "--max-output")):
        if value is None:
            continue
        if not math.isfinite(value):
            raise click.BadParameter("a budget must be a finite number", param_hint=f"'{option}'")
        try:
            budget = Budget(**{**budget.__dict__, field: value})
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None
    return budget


def _conversations(fixtures: tuple[str, ...], messages_file: str | None) -> list:
    from .conversation import Conversation, read_structured_file
    from .fixtures import builtin_fixtures, load_fixture

    chosen = [load_fixture(name) for name in fixtures]
    if messages_file:
        path = Path(messages_file)
        data = read_structured_file(path)
        conversation = Conversation.from_mapping({"messages": data} if isinstance(data, list) else data, path)
        conversation.name = conversation.name or path.stem
        conversation.origin = str(path)
        chosen.append(conversation)
    return chosen or builtin_fixtures()


# The standard input as a source: read once through its device path, as any pipe is.
STDIN_SOURCE = "/dev/stdin"


def _source_path(spec: str) -> str:
    """``-`` means a template read from standard input."""
    return STDIN_SOURCE if spec == "-" else spec


def _load_source(spec: str | None) -> Any:
    from .sources import load_source

    if spec is not None:
        spec = _source_path(spec)
    if spec is None:
        from importlib import resources

        spec = str(resources.files("templatekit.canonical").joinpath(f"{DEFAULT_TEMPLATE}.jinja"))
    return load_source(spec)


def _use_color(option: bool | None) -> bool:
    if option is not None:
        return option
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# ---------------------------------------------------------------------------------------------
# render


@main.command()
@click.argument("source", required=False)
@click.option("--fixture", "-f", "fixtures", multiple=True, metavar="NAME|PATH",
              help="Built-in fixture name or a YAML/JSON conversation file (repeatable). Default: all built-ins.")
@click.option("--messages", "messages_file", metavar="FILE",
              help="A JSON/YAML file holding a list of messages or a whole conversation.")
@click.option("--add-generation-prompt/--no-add-generation-prompt", default=None,
              help="Override the fixtures' add_generation_prompt.")
@click.option("--continue-final-message", "continue_final", is_flag=False, flag_value="content", default=None,
              metavar="[FIELD]", help="Continue (prefill) the final message, or the named field of it.")
@click.option("--template-name", "-t", metavar="NAME", help="Which named template of the source to use.")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="Extra template variable; VALUE is JSON if it parses (true, 3, [..]), else a string.")
@click.option("--now", metavar="ISO-DATETIME", help="Pin the clock strftime_now() reads (default: local time).")
@click.option("--format", "output_format", type=_Choice(["text", "json", "raw"]), default=None,
              help="text: visible whitespace and highlighted tokens (default); json: text, generation spans and "
                   "errors as JSON; raw: the prompt exactly, without markers (with several conversations, each "
                   "after a '==> NAME <==' line).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--raw", is_flag=True, help="Same as --format raw.")
@click.option("--color/--no-color", default=None, help="Highlight special tokens (default: when a terminal).")
@_budget_options
def render(
    source: str | None, fixtures: tuple[str, ...], messages_file: str | None, add_generation_prompt: bool | None,
    continue_final: str | None, template_name: str | None, variables: tuple[str, ...], now: str | None,
    output_format: str | None, as_json: bool, raw: bool, color: bool | None, timeout: float | None,
    max_output: int | None,
) -> None:
    """Render SOURCE (default: the bundled ChatML template) as transformers would.

    SOURCE is a .jinja file, tokenizer_config.json, chat_template.json, a model directory, a
    GGUF file, or - for a template read from standard input. Spaces (·), tabs (→), newlines (↵)
    and invisible characters are shown; use --format raw for the exact text. Exits 1 when a render
    fails (including the template's own raise_exception).
    """
    from .rendering import RenderRun
    from .visible import first_lone_surrogate, make_visible

    output_format = _render_format(output_format, as_json, raw)
    template_source = _load_source(source)
    conversations = _conversations(fixtures, messages_file)
    extra = dict(_parse_var(item) for item in variables)
    pinned = _parse_now(now)
    budget = _budget(timeout, max_output)
    chosen = []
    for conversation in conversations:
        if extra:
            conversation.kwargs = {**conversation.kwargs, **extra}
        if continue_final is not None:
            conversation.continue_final_message = True if continue_final == "content" else continue_final
            if add_generation_prompt is None:
                conversation.add_generation_prompt = False
        # Every template is chosen before the first render, so a bad --template-name stops the
        # command before any output rather than halfway through it.
        chosen.append((template_source.select(template_name, conversation.tools), conversation))
    run = RenderRun()
    # Lazily: the text and raw formats print each prompt as soon as it is rendered.
    results = (run.render(template, conversation, special_tokens=template_source.special_tokens,
                          add_generation_prompt=add_generation_prompt, now=pinned, budget=budget)
               for template, conversation in chosen)
    several = len(chosen) > 1
    failures = 0
    if output_format == "json":
        rendered = list(results)
        failures = sum(not result.ok for result in rendered)
        click.echo(json_text([_rendering_json(result) for result in rendered]))
    elif output_format == "raw":
        for result in results:
            name = one_line(result.conversation.name or "conversation")
            if several:
                click.echo(f"==> {name} <==")
            surrogate = first_lone_surrogate(result.text) if result.ok else None
            if surrogate is not None:
                # UTF-8 cannot carry it, and raw output that silently differs is worse than none.
                failures += 1
                which = f"{name}: " if several else ""
                click.echo(f"templatekit: {which}the prompt holds a lone surrogate U+{surrogate[1]:04X} at offset "
                           f"{surrogate[0]}, which UTF-8 output cannot carry; --format json escapes it", err=True)
            elif result.ok:
                # color=True: click would otherwise strip ANSI escapes from a piped prompt, and
                # raw means exactly the text (tool output often carries colour codes).
                click.echo(result.text, nl=several, color=True)
            else:
                failures += 1
                which = f"{name}: " if several else ""
                click.echo(f"templatekit: {which}{_failure_line(result, template_source.special_tokens)}", err=True)
    else:
        use_color = _use_color(color)
        tokens = list(template_source.special_tokens.values())
        for result in results:
            click.echo(_heading(result), color=use_color)
            if result.ok:
                click.echo(make_visible(result.text, tokens, color=use_color), color=use_color)
            else:
                failures += 1
                click.echo(_failure_line(result, template_source.special_tokens))
            click.echo()
        ok = len(chosen) - failures
        click.echo(f"{ok} of {len(chosen)} rendered" + (f", {failures} failed" if failures else ""))
    failed = failures > 0
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _render_format(output_format: str | None, as_json: bool, raw: bool) -> str:
    """The one output format --format, --json and --raw ask for together; two different ones
    are a usage error rather than one silently winning."""
    asked = [(f"--format {output_format}", output_format)] if output_format else []
    asked += [(option, name) for option, name, given in (("--json", "json", as_json), ("--raw", "raw", raw)) if given]
    formats = {name for _option, name in asked}
    if len(formats) > 1:
        raise click.UsageError(f"{' and '.join(option for option, _name in asked)} ask for different output "
                               "formats; give one")
    return formats.pop() if formats else "text"


def _failure_line(result: Any, special_tokens: dict[str, str] | None = None) -> str:
    """A failed render in one line. A failure with no place in the template (transformers refusing
    the inputs: an empty conversation, a message to continue that has no such field) is put on
    the conversation, named by its file when it came from one. Given the source's
    ``special_tokens``, an undefined special token the source does not define gets a hint."""
    line = result.error.describe() + (_TIMEOUT_HINT if result.error.out_of_time else "")
    missing = result.error.undefined_special_token() if special_tokens is not None else None
    if missing and missing not in special_tokens and missing not in result.conversation.kwargs:
        line += (f"; no {missing} is passed, as the source defines none (its tokenizer files name none, and "
                 "neither do the defaults of its tokenizer class that templatekit knows): "
                 f"give one with --var {missing}=TEXT")
    if result.error.location:
        return line
    conversation = result.conversation
    where = conversation.origin or f"fixture {conversation.name or 'conversation'}"
    return f"{one_line(where)}: {line}"


# Only the commands with a --timeout option say so; lint's per-render budget is fixed.
_TIMEOUT_HINT = "; allow more with --timeout SECONDS"


def _heading(result: Any) -> str:
    name = result.conversation.name or "conversation"
    template = getattr(result.template, "name", "default")
    settings = f"add_generation_prompt={result.add_generation_prompt}"
    if result.conversation.continue_final_message:
        settings += f", continue_final_message={result.conversation.continue_final_message!r}"
    return one_line(f"── {name} · template {template} · {settings} ──")


def _rendering_json(result: Any) -> dict:
    error = None
    if result.error is not None:
        error = {
            "kind": result.error.kind,
            "message": result.error.message,
            "exception_type": result.error.exception_type,
            "location": result.error.location,
            "line": result.error.line,
        }
    return {
        "fixture": result.conversation.name,
        "template": getattr(result.template, "name", None),
        "add_generation_prompt": result.add_generation_prompt,
        "continue_final_message": result.conversation.continue_final_message,
        "text": result.text,
        "generation_spans": [list(span) for span in result.spans],
        "error": error,
    }


# ---------------------------------------------------------------------------------------------
# fixtures


@main.command()
@click.argument("names", nargs=-1)
@click.option("--format", "output_format", type=_Choice(["text", "json"]), default="text", show_default=True,
              help="json: a list of whole fixtures (every built-in one, or those named), each loadable as a "
                   "fixture file.")
def fixtures(names: tuple[str, ...], output_format: str) -> None:
    """List the built-in fixture conversations, or show the named ones (or files) as YAML."""
    import yaml

    from .fixtures import builtin_fixtures, load_fixture

    if output_format == "json":
        chosen = [load_fixture(name) for name in names] if names else builtin_fixtures()
        click.echo(json_text([_fixture_json(conversation) for conversation in chosen]))
        return
    if not names:
        for conversation in builtin_fixtures():
            needs = f"  [needs: {', '.join(conversation.requires)}]" if conversation.requires else ""
            click.echo(f"{conversation.name:28s} {conversation.description or ''}{needs}")
        return
    for index, name in enumerate(names):
        if index:
            click.echo("---")
        conversation = load_fixture(name)
        click.echo(yaml.safe_dump(conversation.to_mapping(), allow_unicode=True, sort_keys=False, width=100), nl=False)


def _fixture_json(conversation: Any) -> dict:
    """A fixture as its file's mapping, so one copied out loads with -f as it is. The keys a
    script reads are always there (tools and documents null when it has none, as the schema
    allows); a name or description only when the fixture has one, since the schema has no null
    for them (every built-in has both)."""
    mapping = conversation.to_mapping()
    data = {key: mapping[key] for key in ("name", "description") if key in mapping}
    data.update({"requires": list(conversation.requires), "messages": conversation.messages,
                 "tools": conversation.tools, "documents": conversation.documents})
    data.update((key, value) for key, value in mapping.items() if key not in data)
    return data


# ---------------------------------------------------------------------------------------------
# authoring round trip


@main.command()
@click.argument("source")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="File (one template) or directory (several named templates) to write.")
@click.option("--force", is_flag=True, help="Overwrite existing files that differ.")
def extract(source: str, output: Path | None, force: bool) -> None:
    """Write the chat template(s) of SOURCE out as .jinja files for editing."""
    from .authoring import extract as extract_templates

    for path in extract_templates(source, output, overwrite=force):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("jinja_file", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--name", "-n", metavar="NAME", help="Which named template of TARGET to replace.")
@click.option("--force", is_flag=True, help="Embed the template even when it does not compile.")
def embed(jinja_file: Path, target: Path, name: str | None, force: bool) -> None:
    """Write JINJA_FILE back into TARGET (tokenizer_config.json or chat_template.json), keeping
    every other byte of TARGET as it was. A template that does not compile is refused unless
    --force is given. GGUF files are not supported as targets."""
    from .authoring import embed as embed_template

    changed = embed_template(jinja_file, target, name=name, force=force)
    click.echo(f"updated {target}" if changed else f"{target} already up to date")


# ---------------------------------------------------------------------------------------------
# lint


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--format", "output_format", type=_Choice(["text", "json", "sarif", "github"]), default="text",
              show_default=True, help="Output format.")
@click.option("--fix", is_flag=True, help="Apply safe fixes (rendered output stays byte-identical).")
@click.option("--unsafe-fixes", is_flag=True, help="Also apply fixes that change what the template renders.")
@click.option("--diff", "show_diff", is_flag=True, help="Show what --fix (or --unsafe-fixes) would change, as a diff, and write nothing (for a template "
                   "inside JSON, a diff of the template's own lines).")
@click.option("--select", "selects", multiple=True, metavar="RULES",
              help="Only these rules (codes, prefixes like TK2, names; comma-separated or repeated).")
@click.option("--ignore", "ignores", multiple=True, metavar="RULES", help="Skip these rules (added to the config's).")
@click.option("--fail-on", type=_Choice(["error", "warning", "info", "never"]),
              help="Lowest severity that makes the exit code 1 (default: config, else warning).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config file (default: nearest "
              "templatekit.toml or pyproject.toml with [tool.templatekit]).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the on-disk result cache.")
@click.option("--statistics", is_flag=True, help="Also count findings per rule.")
@click.option("--quiet", "-q", is_flag=True, help="Findings only: no excerpts, notes or summary.")
@click.option("--color/--no-color", default=None, help="Colour the text output (default: when a terminal).")
@click.option("--static", "static_only", is_flag=True,
              help="Skip the rules that render the template against the fixtures (TK5xx tokenizer, TK6xx behaviour).")
@click.option("--engines", "render_engines", metavar="LIST",
              help="Also render every fixture in these real engines (minijinja,hf-jinja) and report what differs "
                   "from transformers.")
@click.option("--node-modules", type=click.Path(path_type=Path),
              help="node_modules holding @huggingface/jinja (default: $TEMPLATEKIT_NODE_MODULES, ./node_modules "
                   "upwards, ~/.cache/templatekit/node).")
@click.option("--jobs", "-j", type=click.IntRange(min=0), metavar="N",
              help="Worker processes when linting several files (default: config, else 0 = one per CPU; 1 = none).")
def lint(paths: tuple[str, ...], output_format: str, fix: bool, unsafe_fixes: bool, show_diff: bool,
         selects: tuple[str, ...], ignores: tuple[str, ...], fail_on: str | None, config_path: Path | None,
         no_cache: bool, statistics: bool, quiet: bool, color: bool | None, static_only: bool,
         render_engines: str | None, node_modules: Path | None, jobs: int | None) -> None:
    """Lint chat templates: .jinja files, tokenizer_config.json, chat_template.json, model
    directories and GGUF files (default: the current directory; - reads a template from standard
    input).

    Exit codes: 0 clean, 1 findings at or above --fail-on, 2 unreadable input or bad configuration.
    """
    from .lint.config import _check_selectors, _check_something_selected, load_config
    from .lint.model import severity_rank
    from .lint.runner import lint_paths
    from .report import format_reports

    config = load_config(config_path)
    if static_only:
        config.static_only = True
    if selects:
        config.select = _split_selectors(selects)
        _check_selectors(config.select, "--select", "command line")
    if ignores:
        config.ignore = tuple(config.ignore) + _split_selectors(ignores)
        _check_selectors(config.ignore, "--ignore", "command line")
    if selects or ignores:
        _check_something_selected(config, "command line")
    threshold = fail_on or config.fail_on
    if show_diff and not (fix or unsafe_fixes):
        fix = True
    # Checked before linting, which can take minutes on a directory: a misspelt engine or a
    # missing node should not wait for the whole report.
    engine_names = _engines_to_render(render_engines, node_modules) if render_engines is not None else ()
    sources = [_source_path(path) for path in paths] or ["."]
    reports = lint_paths(sources, config, fix=fix, unsafe_fixes=unsafe_fixes, diff=show_diff,
                         use_cache=not no_cache, jobs=jobs)
    if engine_names:
        _render_in_engines(reports, engine_names, node_modules)
    output = format_reports(reports, output_format, color=_use_color(color), statistics=statistics, quiet=quiet)
    if output:
        click.echo(output, color=_use_color(color))
    if engine_names and output_format != "json":
        # JSON carries the comparisons per file; SARIF and GitHub annotations have no place for
        # them, and their stdout must stay one parseable document, so the table goes to stderr.
        from .engines.compare import format_comparisons

        table = "\n".join(format_comparisons(report.engine_renders) for report in reports if report.engine_renders)
        if table:
            click.echo(table, err=output_format != "text")
    if any(report.error for report in reports):
        sys.exit(EXIT_INPUT)
    diagnostics = [d for report in reports for d in report.diagnostics]
    if show_diff and any(report.fixed for report in reports):
        sys.exit(EXIT_FAILED)
    if threshold != "never" and any(severity_rank(d.severity) >= severity_rank(threshold) for d in diagnostics):
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)


def _engine_options(node_modules: Path | None) -> dict | None:
    return {"hf-jinja": {"node_modules": node_modules}} if node_modules else None


def _engines_to_render(engine_list: str, node_modules: Path | None) -> tuple[str, ...]:
    """The engine names of ``--engines``, each checked to be known and installed."""
    from .engines import EngineUnavailable, get_engine, parse_engine_list

    try:
        names = parse_engine_list(engine_list)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--engines") from None
    if not names:
        # An empty variable in a CI script would otherwise turn the engine check off unnoticed.
        raise click.BadParameter("names no engine; give minijinja, hf-jinja or both", param_hint="--engines")
    options = _engine_options(node_modules) or {}
    for name in names:
        try:
            get_engine(name, **options.get(name, {}))
        except EngineUnavailable as exc:
            _fail_input(str(exc))
    return names


def _render_in_engines(reports: list, names: tuple[str, ...], node_modules: Path | None) -> None:
    """Render each linted source in the real engines; each report keeps its comparisons."""
    from .engines import EngineUnavailable
    from .engines.compare import compare_engines

    options = _engine_options(node_modules)
    for report in reports:
        if report.error or not report.templates:
            continue
        try:
            report.engine_renders = compare_engines(report.path, engines=names, diagnostics=report.diagnostics,
                                                    engine_options=options)
        except EngineUnavailable as exc:
            _fail_input(str(exc))


def _split_selectors(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


@main.command()
@click.argument("source")
@click.option("--template-name", "-t", metavar="NAME",
              help="Which named template of the source to probe (default: every one).")
@click.option("--format", "output_format", type=_Choice(["text", "json"]), default="text", show_default=True)
def capabilities(source: str, template_name: str | None, output_format: str) -> None:
    """Probe what a chat template supports (system role, tools, tool calls, documents, reasoning,
    typed content, ...) by rendering needle conversations, as llama.cpp's minja does.

    A source with several named templates gets a table for each, or for the one --template-name
    names.

    Exit codes: 0 probed; 1 probing stopped because a render spent its whole time, output or
    memory budget (the table then says only what was found before); 2 input error."""
    from .behaviour import Behaviour
    from .capabilities import capabilities_data, format_capabilities
    from .lint.config import load_config
    from .rendering import compile_failure
    from .sources import load_source

    config = load_config(None)
    loaded = load_source(Path(_source_path(source)))
    chosen = [loaded.select(template_name)] if template_name is not None else list(loaded.templates.values())
    for template in chosen:
        # Every probe of a template that does not compile fails: a table of "no" would say
        # the template supports nothing, where the truth is that it cannot render at all.
        failure = compile_failure(template)
        if failure is not None:
            _fail_input(f"{template.location(failure.line)}: the template does not compile: {failure.message}")
    entries = []
    any_stopped = False
    for template in chosen:
        behaviour = Behaviour(template.text, loaded.special_tokens, config.capabilities)
        stopped = None
        if behaviour.spent_budget is not None:
            stopped = {"probe": behaviour.spent_budget_probe,
                       "message": behaviour.spent_budget.error.placed(template.location).describe()}
            any_stopped = True
        if output_format == "json":
            data = capabilities_data(behaviour.capabilities, behaviour.not_evaluated(),
                                     probing_stopped=stopped is not None, locate=template.location)
            entries.append({"template": template.name, **data, "probing_stopped": stopped})
        else:
            if len(chosen) > 1:
                click.echo(f"== {one_line(template.name)}")
            click.echo(format_capabilities(behaviour.capabilities, behaviour.not_evaluated(), template.location))
        if stopped is not None:
            # The "no"s only mean the probing stopped, not that the template lacks them.
            click.echo(f"templatekit: {template.location()}: probing stopped at '{stopped['probe']}': "
                       f"{stopped['message']}", err=True)
    if output_format == "json":
        payload = {"schema_version": 1, "source": source, "templates": entries}
        click.echo(json_text(payload))
    if any_stopped:
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("source")
@click.option("--examples", "-n", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="How many conversations to draw.")
@click.option("--seed", type=click.IntRange(min=0), metavar="S", help="Seed for a repeatable run (default: random, "
              "printed).")
@click.option("--template-name", "-t", metavar="NAME", help="Which named template of the source to fuzz.")
@click.option("--output", "-o", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the minimal failing conversation here as a fixture file (FILE-2.yaml, ... for more).")
@click.option("--format", "output_format", type=_Choice(["text", "json"]), default="text", show_default=True,
              help="json: the run and each broken invariant with its minimal conversation as data.")
def fuzz(source: str, examples: int, seed: int | None, template_name: str | None, output: Path | None,
         output_format: str) -> None:
    """Search for conversations that break SOURCE's behavioural invariants (TK6xx, render errors).

    Conversations are drawn with hypothesis in the shapes SOURCE supports; a failure is shrunk to
    a minimal conversation, printed as a fixture file that `templatekit render SOURCE -f FILE`
    loads. Exit codes: 0 nothing broken, 1 an invariant broken (or nothing fuzzed: the template's
    capability probe spent a whole render budget), 2 input error.
    """
    from .fuzz import describe_shape, fuzz_template, write_fixture
    from .lint.config import load_config

    config = load_config(None)
    result = fuzz_template(_source_path(source), examples=examples, seed=seed, template_name=template_name,
                           config_capabilities=config.capabilities)
    written = []
    if output is not None:
        for index, failure in enumerate(result.failures, start=1):
            path = output if index == 1 else output.with_name(f"{output.stem}-{index}{output.suffix or '.yaml'}")
            write_fixture(failure, path)
            written.append(path)
    nothing_checked = bool(result.tested) and result.declined + result.over_budget == result.tested
    if result.stopped is not None:
        click.echo(f"templatekit: {result.source}: not fuzzed: the capability probe's render "
                   f"'{result.stopped['probe']}' failed: {result.stopped['message']}; every example would "
                   f"spend that whole budget again", err=True)
    if output_format == "json":
        payload = result.to_json()
        for index, entry in enumerate(payload["broken"]):
            entry["fixture_file"] = str(written[index]) if index < len(written) else None
        click.echo(json_text(payload))
    else:
        _fuzz_text(result, written, describe_shape(result.shape))
    if nothing_checked and result.ok:
        click.echo("warning: the template declined or went over budget on every example, so nothing was "
                   "checked", err=True)
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


def _fuzz_text(result: Any, written: list[Path], shape: str) -> None:
    click.echo(f"fuzzing {result.source} (template {result.template_name}): {result.examples} examples, "
               f"seed {result.seed}")
    click.echo(f"conversations {shape}")
    click.echo(f"invariants: {', '.join(result.invariants)}")
    for index, failure in enumerate(result.failures):
        click.echo()
        click.echo(f"FAILED {failure.invariant}: {failure.summary}" + (" (flaky)" if failure.flaky else ""))
        click.echo(f"  {failure.explanation}")
        click.echo("  minimal failing conversation:")
        click.echo(failure.fixture_text, nl=False)
        if index < len(written):
            click.echo(f"wrote {written[index]}")
    declined = f", {result.declined} declined by the template's raise_exception" if result.declined else ""
    if result.over_budget:
        declined += f", {result.over_budget} over the render budget"
    click.echo()
    if result.stopped is not None:
        click.echo("no example run")
    elif result.failures:
        click.echo(f"{len(result.failures)} invariant(s) broken after {result.tested} example(s){declined}; "
                   f"rerun with --seed {result.seed}")
    else:
        click.echo(f"no invariant broken in {result.tested} example(s){declined}")


@main.command()
@click.option("--format", "output_format", type=_Choice(["text", "markdown", "json"]), default="text",
              show_default=True)
def rules(output_format: str) -> None:
    """List every lint rule."""
    from .lint.docs import rules_json, rules_markdown, rules_text

    render_list = {"text": rules_text, "markdown": rules_markdown, "json": rules_json}[output_format]
    click.echo(render_list())


@main.command()
@click.argument("code")
def rule(code: str) -> None:
    """Explain one rule: what it finds, why it matters, a bad and a good example."""
    from .lint.docs import rule_page
    from .lint.registry import all_rules, find_rule

    found = find_rule(code)
    if found is None:
        import difflib

        names = [r.code for r in all_rules()] + [r.name for r in all_rules()]
        close = difflib.get_close_matches(code, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        _fail_input(f"no rule named '{code}'{hint}; 'templatekit rules' lists them")
    click.echo(rule_page(found))


# ---------------------------------------------------------------------------------------------
# validate


@main.command()
@click.argument("model")
@click.option("--template", "template_spec", metavar="SOURCE",
              help="Validate this template (.jinja, tokenizer_config.json, model directory, GGUF) instead of the "
                   "model's own, against the model's tokenizer and weights.")
@click.option("--template-name", "-t", metavar="NAME", help="Which named template to use.")
@click.option("--fixture", "-f", "fixtures", multiple=True, metavar="NAME|PATH",
              help="Built-in fixture name or a YAML/JSON conversation file (repeatable). Default: every built-in "
                   "fixture the template supports that ends with a turn for the assistant to answer.")
@click.option("--probes/--no-probes", default=True, show_default=True,
              help="Also generate after the built-in short-answer prompts.")
@click.option("--device", type=_Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: CUDA when torch sees a GPU, else the CPU.")
@click.option("--dtype", type=_Choice(["auto", "bfloat16", "float32"]), default="auto", show_default=True,
              help="auto: bfloat16 on a GPU that supports it, else float32.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, show_default=True,
              help="Tokens generated per prompt at most.")
@click.option("--max-turn-probability", type=click.FloatRange(0, 1, min_open=True), default=0.01, show_default=True,
              help="A prompt fails when P(first generated token is a turn token) is at least this.")
@click.option("--min-answered", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Fail when fewer than this fraction of prompts get a non-empty answer ending with end-of-turn.")
@click.option("--min-role-margin", type=float, default=0.05, show_default=True,
              help="Fail when the replies are not at least this much likelier (median nats per token) after the "
                   "generation prompt than at the start of the user's next turn.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N",
              help="Prompts per generate call (default: all in one batch).")
@click.option("--format", "output_format", type=_Choice(["text", "json"]), default="text", show_default=True)
@click.option("--color/--no-color", default=None, help="Colour the text output (default: when a terminal).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress bar on stderr while loading and generating (default: when stderr is a terminal).")
def validate(model: str, template_spec: str | None, template_name: str | None, fixtures: tuple[str, ...],
             probes: bool, device: str, dtype: str, max_new_tokens: int, max_turn_probability: float,
             min_answered: float, min_role_margin: float, batch_size: int | None, output_format: str,
             color: bool | None, show_progress: bool | None) -> None:
    """Generate with MODEL to prove its chat template makes it answer as the assistant and stop.

    MODEL is a model directory, a GGUF file or a Hugging Face Hub id (downloaded only when the
    environment allows it). Structural checks on the tokenizer run first, then one batched greedy
    generation over the fixtures and short-answer prompts. Needs torch and accelerate (the validate extra).

    Exit codes: 0 pass, 1 fail, 2 input error.
    """
    from .fixtures import load_fixture
    from .validate import Thresholds, report_text, validate as validate_model

    chosen = [load_fixture(name) for name in fixtures] or None
    thresholds = Thresholds(max_turn_probability=max_turn_probability, min_answered_fraction=min_answered,
                            min_role_margin=min_role_margin)
    enabled = sys.stderr.isatty() if show_progress is None else show_progress
    progress = _ProgressLine() if enabled else None
    try:
        report = validate_model(model, template=template_spec, template_name=template_name, fixtures=chosen,
                                probes=probes, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                                thresholds=thresholds, batch_size=batch_size, progress=progress)
    finally:
        if progress:
            progress.close()
    if output_format == "json":
        click.echo(json_text(report.to_json()))
    else:
        use_color = _use_color(color)
        click.echo(report_text(report, color=use_color), color=use_color)
    sys.exit(EXIT_OK if report.passed else EXIT_FAILED)


class _ProgressLine:
    """One redrawn stderr line per stage: label, bar and count."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.label: str | None = None

    def __call__(self, label: str, completed: int, total: int) -> None:
        if label != self.label and self.label is not None:
            click.echo(err=True)
        self.label = label
        filled = int(self.width * completed / total) if total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        click.echo(f"\r{label} [{bar}] {completed}/{total}", err=True, nl=False)

    def close(self) -> None:
        if self.label is not None:
            click.echo(err=True)
            self.label = None


# ---------------------------------------------------------------------------------------------
# diff

_DIFF_COLORS = {"-": "\x1b[31m", "+": "\x1b[32m", "@": "\x1b[36m"}
_BOLD, _RESET = "\x1b[1m", "\x1b[0m"


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--fixture", "-f", "fixtures", multiple=True, metavar="NAME|PATH",
              help="Built-in fixture name or a YAML/JSON conversation file (repeatable). Default: all built-ins.")
@click.option("--template-name", "-t", metavar="NAME", help="Named template to use on every side.")
@click.option("--template-name-a", metavar="NAME", help="Named template of A (overrides --template-name).")
@click.option("--template-name-b", metavar="NAME", help="Named template of B (overrides --template-name).")
@click.option("--side-by-side", "-y", is_flag=True, help="Show changed fixtures in two columns.")
@click.option("--wrappers", is_flag=True,
              help="Print the text each SOURCE (any number) puts around each role's content, instead of a diff.")
@click.option("--tokens", is_flag=True, help="Also diff token ids and pieces (needs tokenizer.json on both sides).")
@click.option("--format", "output_format", type=_Choice(["text", "json"]), default="text", show_default=True)
@click.option("--color/--no-color", default=None, help="Colour the text output (default: when a terminal).")
@click.option("--now", metavar="ISO-DATETIME", help="Pin the clock strftime_now() reads on both sides.")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="Extra template variable for every render on every side; VALUE is JSON if it parses "
                   "(true, 3, [..]), else a string. --var bos_token=... replaces a placeholder token.")
@_budget_options
def diff(sources: tuple[str, ...], fixtures: tuple[str, ...], template_name: str | None,
         template_name_a: str | None, template_name_b: str | None, side_by_side: bool, wrappers: bool,
         tokens: bool, output_format: str, color: bool | None, now: str | None, variables: tuple[str, ...],
         timeout: float | None, max_output: int | None) -> None:
    """Compare what two templates (or two versions of one) render: diff A B.

    A and B are .jinja files, tokenizer_config.json, chat_template.json, model directories, GGUF
    files or git:REV:PATH (read with git show, e.g. git:origin/main:chat_template.jinja). Every
    fixture is rendered on both sides; changed ones get a unified diff with whitespace and special
    tokens visible. With --wrappers, any number of sources get a table of their role wrappers.
    A source without special tokens (a bare .jinja file) renders with placeholders (bos_token <s>,
    eos_token </s>, ...), named in the output.

    Exit codes: 0 every fixture renders identically, 1 any differs or no fixture rendered on
    either side (nothing compared), 2 input error.
    """
    from .comparison import compare_wrappers, diff as diff_sources, role_wrappers

    pinned = _parse_now(now) or datetime.now()
    extra = dict(_parse_var(item) for item in variables)
    budget = _budget(timeout, max_output)
    use_color = _use_color(color) and output_format == "text"
    if wrappers:
        found = [role_wrappers(spec, template_name, variables=extra, now=pinned, budget=budget) for spec in sources]
        if output_format == "json":
            payload = {"schema_version": 1, "wrappers": [item.to_json() for item in found]}
            click.echo(json_text(payload))
        else:
            click.echo(_wrappers_table(found, compare_wrappers(found), use_color), color=use_color)
        sys.exit(EXIT_OK)
    if len(sources) != 2:
        raise click.UsageError(f"diff compares exactly two sources (got {len(sources)}); use --wrappers for more")
    chosen = [_diff_fixture(name) for name in fixtures] or None
    report = diff_sources(sources[0], sources[1], chosen, template_name=template_name,
                          template_name_a=template_name_a, template_name_b=template_name_b,
                          tokens=tokens, variables=extra, now=pinned, budget=budget)
    if output_format == "json":
        click.echo(json_text(report.to_json()))
    else:
        click.echo(_diff_text(report, side_by_side, use_color), color=use_color)
    sys.exit(EXIT_OK if report.identical else EXIT_FAILED)


def _diff_fixture(name: str) -> Any:
    from .fixtures import load_fixture

    return load_fixture(name)


def _paint(text: str, code: str, use_color: bool) -> str:
    return f"{code}{text}{_RESET}" if use_color else text


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _placeholder_note(placeholders: dict[str, str], subject: str = "this source has") -> str:
    named = ", ".join(f"{name}={value}" for name, value in placeholders.items())
    return (f"{subject} no special tokens, so placeholders stand in: {named} "
            "(--var NAME=VALUE gives the real value)")


def _diff_text(report: Any, side_by_side: bool, use_color: bool) -> str:
    from .comparison import BOTH_RAISED_SAME, ONE_RAISED, side_by_side as side_by_side_rows

    lines = []
    for side, label, placeholders in (("a", report.a_label, report.a_placeholders),
                                      ("b", report.b_label, report.b_placeholders)):
        lines.append(_paint(f"{side}: {label}", _BOLD, use_color))
        if placeholders:
            lines.append(f"   {_placeholder_note(placeholders)}")
    for comparison in report.comparisons:
        status = comparison.status
        if status == ONE_RAISED:
            status = f"only {comparison.raised_side} raised"
        # Equal errors when nothing rendered at all are no evidence of equal prompts.
        marker = "≠" if comparison.changed else ("=" if report.compared else "?")
        lines.append(f"{marker} {comparison.fixture}: {status}")
        if comparison.a.raised or comparison.b.raised:
            for side, outcome in (("a", comparison.a), ("b", comparison.b)):
                if outcome.raised and (comparison.changed or side == "a"):
                    hint = _TIMEOUT_HINT if outcome.out_of_time else ""
                    lines.append(f"    {side} raised: {outcome.error_description}{hint}")
        first = comparison.first_difference
        if first is not None:
            lines.append(f"    first difference at character {first.offset} (line {first.line}):")
            lines.append(f"      a: {first.a_excerpt}")
            lines.append(f"      b: {first.b_excerpt}")
        if comparison.unified_diff:
            if side_by_side:
                lines.extend(_side_by_side_lines(side_by_side_rows(comparison.a.text, comparison.b.text), use_color))
            else:
                for line in comparison.unified_diff:
                    lines.append("    " + _paint(line, _DIFF_COLORS.get(line[:1], ""), use_color)
                                 if line[:1] in _DIFF_COLORS else "    " + line)
        if comparison.tokens is not None and not comparison.tokens.identical:
            lines.extend(_token_lines(comparison.tokens, use_color))
    summary = report.summary()
    counted = ", ".join(f"{count} {status}" for status, count in summary.items() if count and status != "total")
    if not report.compared:
        verdict = f"nothing could be compared: {report.not_compared_reason}"
    elif report.changed:
        verdict = "renders differ"
    else:
        verdict = "renders identical"
        if summary[BOTH_RAISED_SAME]:
            verdict += (f" ({_counted(summary[BOTH_RAISED_SAME], 'fixture')} raised the same error on both sides, "
                        "so only the error was compared)")
    lines.append(f"{_counted(summary['total'], 'fixture')}: {counted or 'none'} — {verdict}")
    return "\n".join(lines)


def _token_lines(tokens: Any, use_color: bool) -> list[str]:
    lines = [f"    tokens: a has {len(tokens.a_ids)}, b has {len(tokens.b_ids)}; "
             f"{_counted(len(tokens.changes), 'change')}"]
    for change in tokens.changes:
        removed = " ".join(f"{piece!r}={token_id}" for piece, token_id in zip(change.a_pieces, change.a_ids))
        added = " ".join(f"{piece!r}={token_id}" for piece, token_id in zip(change.b_pieces, change.b_ids))
        lines.append(f"      @ a[{change.a_start}:{change.a_end}] b[{change.b_start}:{change.b_end}] {change.tag}")
        if removed:
            lines.append("      " + _paint(f"- {removed}", _DIFF_COLORS["-"], use_color))
        if added:
            lines.append("      " + _paint(f"+ {added}", _DIFF_COLORS["+"], use_color))
    return lines


def _side_by_side_lines(rows: list, use_color: bool) -> list[str]:
    import shutil

    width = max(20, (shutil.get_terminal_size((160, 24)).columns - 7) // 2)
    lines = []
    for row in rows:
        marker = {"equal": " ", "replace": "|", "delete": "<", "insert": ">"}[row.tag]
        left, right = row.left or "", row.right or ""
        # Long lines wrap inside their column rather than being cut, so no character is hidden.
        chunks = max(1, -(-len(left) // width), -(-len(right) // width))
        for index in range(chunks):
            left_part = left[index * width:(index + 1) * width].ljust(width)
            right_part = right[index * width:(index + 1) * width]
            line = f"    {left_part} {marker if index == 0 else ' '} {right_part}"
            color = {"replace": "\x1b[33m", "delete": _DIFF_COLORS["-"], "insert": _DIFF_COLORS["+"]}.get(row.tag)
            lines.append(_paint(line, color, use_color) if color else line)
    return lines


def _one_line_visible(text: str | None) -> str:
    """Visible text on one line (each ↵ stays, the real line break goes); an empty wrapper says so."""
    from .visible import make_visible

    if text is None:
        return ""
    return make_visible(text).replace("\n", "") or "(empty)"


def _wrappers_table(found: list, outliers: dict[str, list[bool]], use_color: bool) -> str:
    from .comparison import ROLES, WRAPPER_OK

    width = max(len(item.label) for item in found)
    lines = [f"content is shown as …; ≠ marks a value that differs from most of the {len(found)} sources"
             if len(found) > 1 else "content is shown as …"]
    with_placeholders = [item for item in found if item.placeholders]
    if len(found) > 1 and len(with_placeholders) == len(found) and all(
            item.placeholders == found[0].placeholders for item in found):
        lines.append(_placeholder_note(found[0].placeholders, "every source has"))
    else:
        lines.extend(f"{item.label}: {_placeholder_note(item.placeholders)}" for item in with_placeholders)
    rows = [("start", lambda item: _one_line_visible(item.start) if item.start is not None else "(n/a)")]
    for role in ROLES:
        rows.append((role, lambda item, role=role: _wrapper_cell(item.roles[role], WRAPPER_OK)))
    rows.append(("generation_prompt", lambda item: _wrapper_cell(item.generation_prompt, WRAPPER_OK, content=False)))
    rows.append(("end", lambda item: _one_line_visible(item.end) if item.end is not None else "(n/a)"))
    for row, cell in rows:
        lines.append(_paint(row, _BOLD, use_color))
        for item, odd in zip(found, outliers[row]):
            mark = "≠" if odd else " "
            text = f"  {mark} {item.label.ljust(width)}  {cell(item)}"
            lines.append(_paint(text, "\x1b[33m", use_color) if odd else text)
    return "\n".join(lines)


def _wrapper_cell(wrapper: Any, ok: str, content: bool = True) -> str:
    if wrapper.prefix is None and wrapper.suffix is None:
        return f"({wrapper.status}: {wrapper.note})" if wrapper.note else f"({wrapper.status})"
    text = _one_line_visible(wrapper.prefix) + ("…" + _one_line_visible(wrapper.suffix) if content else "")
    if wrapper.status != ok:
        text += f"   ({wrapper.status}: {wrapper.note})"
    return text
