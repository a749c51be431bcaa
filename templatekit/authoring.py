"""The authoring round trip: take templates out of any source as .jinja files, and put them back.

``extract`` writes each template as a ``.jinja`` file holding exactly the text transformers would
compile. ``embed`` writes a ``.jinja`` file's text back into ``tokenizer_config.json`` or
``chat_template.json`` by rewriting only the span of the one JSON string that holds the template,
so every other byte of the file (key order, indentation, escaping, line endings) stays as it was.

Default output names: a template that already lives in a ``.jinja`` file stays where it is (there
is nothing to extract). A template inside another file is written next to that file, named after
it: ``tokenizer_config.json.jinja``, ``model.gguf.jinja``; several named templates go into a
directory named ``<file>.templates`` holding ``<name>.jinja`` each. These names never collide
with ``chat_template.jinja``, which transformers would start loading instead of the JSON template.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, clipped
from .sources import (
    PROCESSOR_TEMPLATE_FILE,
    ChatTemplate,
    JsonDocument,
    JsonMember,
    TemplateSource,
    is_gguf,
    load_source,
    read_json_file,
    read_template_file,
)

TEMPLATE_KEY = "chat_template"
_NOWHERE_TO_WRITE = "a template given as a string has no file to write next to"


# --- extract -------------------------------------------------------------------------------


def extract(spec: str | os.PathLike, output: Path | None = None, overwrite: bool = False) -> list[Path]:
    """Write the templates of ``spec`` as .jinja files and return their paths, in template order.

    A source holding one plain template writes one file (``output`` names it; an existing
    directory receives the default file name). Named templates are written as ``<name>.jinja``
    into the directory ``output``. A file that already holds the same template is left untouched;
    one holding something else is replaced only with ``overwrite=True``. Nothing is written unless
    every file can be.
    """
    source = load_source(spec)
    plan = _extraction_plan(source, Path(output) if output is not None else None)
    encoded = {path: _utf8(text, template) for (path, text), template in zip(plan, source.templates.values())}
    pending = [(path, text) for path, text in plan if not _holds_template(path, text, overwrite)]
    for path, _ in pending:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(path.parent, f"cannot create the directory: {error.strerror or error}") from None
        write_atomically(path, encoded[path])
    return [path for path, _ in plan]


def _utf8(text: str, template: ChatTemplate) -> bytes:
    """The template as the UTF-8 a .jinja file holds; a lone surrogate (valid in a JSON string
    as ``"\\ud800"``, impossible in UTF-8) is an InputError naming where it is."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        before = text[: error.start]
        line, column = before.count("\n") + 1, error.start - (before.rfind("\n") + 1) + 1
        code = ord(text[error.start])
        raise InputError(template.location(line, column), f"holds a lone surrogate U+{code:04X}, which no UTF-8 "
                                                          "file can hold; fix it in the source first") from None


def _extraction_plan(source: TemplateSource, output: Path | None) -> list[tuple[Path, str]]:
    """(file to write, template text) for every template of ``source``."""
    templates = list(source.templates.values())
    if source.single:
        return [(_single_output(templates[0], output), templates[0].text)]
    if output is None:
        plan = [(_default_named_output(template), template.text) for template in templates]
    else:
        plan = [(_named_file(output, template.name, source.path), template.text) for template in templates]
    written: dict[Path, str] = {}
    for (path, _), template in zip(plan, templates):
        if path in written:
            raise InputError(source.path, f"templates {clipped(written[path])} and {clipped(template.name)} would both "
                                          f"be written to {path}")
        written[path] = template.name
    return plan


def _single_output(template: ChatTemplate, output: Path | None) -> Path:
    if output is None:
        return _default_single_output(template)
    if not output.is_dir():
        return output
    if template.kind == "string":
        return output / f"{template.name}.jinja"
    return output / _default_single_output(template).name


def _default_single_output(template: ChatTemplate) -> Path:
    if template.kind == "string":
        raise InputError(template.path, f"{_NOWHERE_TO_WRITE}; give an output path")
    if not template.embedded:
        return template.path
    return template.path.with_name(template.path.name + ".jinja")


def _default_named_output(template: ChatTemplate) -> Path:
    if template.kind == "string":
        raise InputError(template.path, f"{_NOWHERE_TO_WRITE}; give an output directory")
    if not template.embedded:
        return template.path
    directory = template.path.with_name(template.path.name + ".templates")
    return _named_file(directory, template.name, template.path)


def _named_file(directory: Path, name: str, origin: Path) -> Path:
    """``directory/<name>.jinja``, with the name made safe as a file name (``safe_file_stem``)."""
    if not name:
        raise InputError(origin, f"a template with an empty name cannot be written as a file in {directory} "
                                 "(it would be the hidden file .jinja); give it a name in the source")
    return directory / f"{safe_file_stem(name)}.jinja"


# Longest name kept whole, in UTF-8 bytes: file systems allow 255, and ".jinja", a hash and
# an editor's backup suffix must still fit.
_MAX_NAME_BYTES = 200


def safe_file_stem(name: str) -> str:
    """A file name for template ``name`` that stays in its directory and prints as itself.

    Template names come from untrusted files. A name that is printable, holds no path separator,
    does not start with a dot (no ``..``, no hidden file) and is not over-long is used as it is,
    so ``tool_use`` stays ``tool_use.jinja``. Any other name has each offending character (path
    separators, control and format characters such as ESC, newlines and bidi overrides, leading
    dots) replaced by ``_`` and gets the first 8 hex digits of its SHA-256 appended, so the
    result is the same on every run and two names that clean up alike still get two files.
    """
    cleaned = "".join("_" if char in "/\\" or not char.isprintable() or unicodedata.category(char) == "Cf"
                      else char for char in name)
    stripped = cleaned.lstrip(".")
    cleaned = "_" * (len(cleaned) - len(stripped)) + stripped
    if cleaned == name and len(name.encode("utf-8", "surrogatepass")) <= _MAX_NAME_BYTES:
        return name
    while len(cleaned.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        cleaned = cleaned[:-1]
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def _holds_template(path: Path, text: str, overwrite: bool) -> bool:
    """Whether ``path`` already holds ``text`` as transformers reads it; raise if it holds other text."""
    if path.is_dir():
        raise InputError(path, "is a directory; cannot write a template there")
    if not path.exists():
        return False
    try:
        current = read_template_file(path)
    except InputError:
        current = None
    if current == text:
        return True
    if overwrite:
        return False
    raise InputError(path, "already exists with different content; not replaced (use --force, or overwrite=True "
                           "from Python)")


# --- embed ---------------------------------------------------------------------------------


def embed(jinja_path: str | os.PathLike, target: str | os.PathLike, name: str | None = None,
          force: bool = False) -> bool:
    """Write the template in ``jinja_path`` into the JSON file ``target``; return whether it changed.

    The template is stored as transformers would read the .jinja file (newlines translated).
    For a list of named templates, ``name`` says which one to replace; without it the .jinja file's
    stem is used when it names an existing template. A file without a template gets the key
    appended at the end of its top-level object, in the file's own layout. A template that does
    not compile is refused (every tokenizer loading ``target`` would then fail to apply it)
    unless ``force`` is set.
    """
    jinja_path = Path(jinja_path)
    text = read_template_file(jinja_path)
    if not force:
        _refuse_uncompilable(text, jinja_path)
    return embed_text(text, target, name, stem=jinja_path.stem)


def _refuse_uncompilable(text: str, jinja_path: Path) -> None:
    from .guards import DEFAULT_BUDGET
    from .rendering import compile_failure

    # Only what transformers' own compile would reject: templatekit's size guard is no reason to refuse.
    budget = dataclasses.replace(DEFAULT_BUDGET, max_template=max(len(text), DEFAULT_BUDGET.max_template))
    failure = compile_failure(text, budget)
    if failure is None:
        return
    where = f"{jinja_path}:{failure.line}" if failure.line else str(jinja_path)
    problem = failure.describe_unplaced()
    raise InputError(where, f"{problem}; not embedded (--force embeds it anyway)")


def embed_text(text: str, target: str | os.PathLike, name: str | None = None, *, stem: str = "") -> bool:
    """Write template ``text`` into the JSON file ``target`` (as ``embed`` does for a file's
    content); return whether the file changed. ``stem`` is the fallback name for a named list."""
    target = Path(target)
    updated = embedded_file_text(text, target, name, stem=stem)
    if updated is None:
        return False
    write_atomically(target, updated.encode("utf-8"))
    return True


def embedded_file_text(text: str, target: str | os.PathLike, name: str | None = None, *, stem: str = "") -> str | None:
    """What ``embed_text`` would write to ``target`` (None when it already holds ``text``)."""
    target = Path(target)
    if target.is_file() and is_gguf(target):
        raise InputError(target, "GGUF files are not supported as embed targets (embed writes tokenizer_config.json "
                                 "or chat_template.json); gguf's own tool writes a copy with a new template: "
                                 "gguf-new-metadata IN.gguf OUT.gguf --chat-template-file TEMPLATE.jinja")
    raw, config = read_json_file(target)
    if not isinstance(config, dict):
        raise InputError(target, "expected a JSON object at the top level")
    document = EditableJson(raw)
    style = EscapeStyle.detect(raw, ascii_by_default=target.name == PROCESSOR_TEMPLATE_FILE)
    return _embedded_text(document, config, target, text, name, stem, style)


def _embedded_text(
    document: EditableJson, config: dict, target: Path, text: str, name: str | None, stem: str, style: EscapeStyle
) -> str | None:
    """The new file text, or None when the file already holds ``text`` where it would go."""
    current = config.get(TEMPLATE_KEY)
    member = document.last_member(TEMPLATE_KEY)
    unnamed = name in (None, "default")
    if isinstance(current, list) and target.name != PROCESSOR_TEMPLATE_FILE:
        return _replace_named(document, current, member, target, text, name, stem, style)
    if isinstance(current, dict) and current and target.name != PROCESSOR_TEMPLATE_FILE:
        return _replace_in_object(document, current, member, target, text, name, stem, style)
    if current is not None and not isinstance(current, str):
        shape = "a string, a list of {name, template} objects or an object of name: template"
        if target.name == PROCESSOR_TEMPLATE_FILE:
            shape = "a string"
        raise InputError(target, f"chat_template must be {shape}")
    if not unnamed and (current is not None or target.name == PROCESSOR_TEMPLATE_FILE):
        raise InputError(target, f"holds a single unnamed chat template, not one named {name!r}")
    if current is not None:
        return None if current == text else document.replace(member.value_start, member.value_end, style.encode(text))
    value = style.encode(text) if unnamed else _named_list_literal(document, name, text, style)
    if member is not None:
        return document.replace(member.value_start, member.value_end, value)
    return document.append_member(TEMPLATE_KEY, value)


def _replace_named(
    document: EditableJson,
    items: list,
    member: JsonMember,
    target: Path,
    text: str,
    name: str | None,
    stem: str,
    style: EscapeStyle,
) -> str | None:
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    chosen = _choose_name(names, name, stem, target)
    # The last item with the name is the one transformers keeps, as with any repeated dict key.
    index = len(names) - 1 - names[::-1].index(chosen)
    item_start, _ = document.array_items(member.value_start)[index]
    return _replace_template(document, document.last_member("template", item_start), items[index].get("template"),
                             text, style, f"{target}[chat_template][{index}]")


def _replace_in_object(
    document: EditableJson,
    templates: dict,
    member: JsonMember,
    target: Path,
    text: str,
    name: str | None,
    stem: str,
    style: EscapeStyle,
) -> str | None:
    """Replace one template of the ``{name: template}`` form (the member json.loads keeps)."""
    chosen = _choose_name(list(templates), name, stem, target)
    return _replace_template(document, document.last_member(chosen, member.value_start), templates[chosen],
                             text, style, f"{target}[chat_template][{chosen!r}]")


def _replace_template(document: EditableJson, template_member: JsonMember | None, current: object, text: str,
                      style: EscapeStyle, where: str) -> str | None:
    """The document with one template string replaced by ``text`` (None when it holds it already)."""
    if template_member is None or not isinstance(current, str):
        raise InputError(where, "template must be a string")
    if current == text:
        return None
    return document.replace(template_member.value_start, template_member.value_end, style.encode(text))


def _choose_name(names: list, name: str | None, stem: str, target: Path) -> str:
    available = ", ".join(repr(item) for item in names if isinstance(item, str))
    if name is not None:
        if name not in names:
            raise InputError(target, f"has no chat template named {name!r}; available: {available}")
        return name
    if stem in names:
        return stem
    if stem == "chat_template" and "default" in names:
        return "default"
    problem = f"holds named chat templates ({available}); say which one to replace"
    problem += f" (the file name {stem!r} matches none)"
    raise InputError(target, problem)


def _named_list_literal(document: EditableJson, name: str, text: str, style: EscapeStyle) -> str:
    """A one-item ``[{"name": ..., "template": ...}]`` in the file's own layout."""
    layout = document.layout()
    name_pair = f'"name"{layout.colon}{style.encode(name)}'
    template_pair = f'"template"{layout.colon}{style.encode(text)}'
    if layout.indent is None:
        return f"[{{{name_pair}{layout.comma}{template_pair}}}]"
    unit, newline = layout.indent, layout.newline
    item = (
        f"{unit * 2}{{{newline}{unit * 3}{name_pair},{newline}"
        f"{unit * 3}{template_pair}{newline}{unit * 2}}}"
    )
    return f"[{newline}{item}{newline}{unit}]"


# --- splicing into JSON text --------------------------------------------------------------


@dataclass(frozen=True)
class JsonLayout:
    """How a file lays out its top-level object: indentation unit (None when on one line) and separators."""

    indent: str | None
    newline: str
    colon: str
    comma: str


class EditableJson(JsonDocument):
    """A JSON text that can be changed by splicing literals into it, leaving every other byte alone."""

    def replace(self, start: int, end: int, literal: str) -> str:
        return self.text[:start] + literal + self.text[end:]

    def layout(self) -> JsonLayout:
        """The top-level object's layout, read from the whitespace around its first two members."""
        members = self.members()
        if not members:
            return JsonLayout(indent=None, newline="\n", colon=": ", comma=", ")
        first = members[0]
        colon = self.text[first.key_end : first.value_start]
        opening = self.text[self.root + 1 : first.key_start]
        if len(members) > 1:
            comma = self.text[first.value_end : members[1].key_start]
        else:
            comma = "," + opening if "\n" in opening else ("," if colon == ":" else ", ")
        if "\n" not in opening:
            return JsonLayout(indent=None, newline="\n", colon=colon, comma=comma)
        newline = "\r\n" if "\r\n" in opening else "\n"
        return JsonLayout(indent=opening.rsplit("\n", 1)[1], newline=newline, colon=colon, comma=comma)

    def append_member(self, key: str, literal: str) -> str:
        """The text with ``"key": literal`` added as the last member of the top-level object."""
        members = self.members()
        layout = self.layout()
        pair = f'"{key}"{layout.colon}{literal}'
        if not members:
            return self.replace(self.root + 1, self.root + 1, pair)
        end = members[-1].value_end
        return self.replace(end, end, layout.comma + pair)


# --- string escaping that matches the file -------------------------------------------------

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


@dataclass(frozen=True)
class EscapeStyle:
    """How a JSON file spells string contents, so new strings look like the ones already there.

    ``ensure_ascii``: non-ASCII characters as ``\\uXXXX`` (Python's default, used for
    chat_template.json) rather than raw UTF-8 (used for tokenizer_config.json); ``upper_hex``:
    ``\\u00E9`` rather than ``\\u00e9``; ``escaped_ascii``: printable ASCII characters the file
    writes as ``\\u`` escapes (Go escapes ``<``, ``>`` and ``&``); ``slash``: ``\\/`` for ``/``.
    """

    ensure_ascii: bool = False
    upper_hex: bool = False
    escaped_ascii: frozenset[str] = frozenset()
    slash: bool = False

    @classmethod
    def detect(cls, raw: str, ascii_by_default: bool = False) -> EscapeStyle:
        """Read the style off the escapes in ``raw``; a file that shows no preference gets the default.

        Backslashes occur only inside JSON strings, so scanning escape pairs over the whole file is
        exact for a valid document.
        """
        escapes = [match.group(1) for match in _ESCAPE.finditer(raw)]
        codes = [escape[1:] for escape in escapes if len(escape) == 5]
        if not raw.isascii():
            ensure_ascii = False
        elif any(int(code, 16) >= 0x80 for code in codes):
            ensure_ascii = True
        else:
            ensure_ascii = ascii_by_default
        lettered = [code for code in codes if any(char.isalpha() for char in code)]
        upper_hex = bool(lettered) and all(code == code.upper() for code in lettered)
        escaped_ascii = frozenset(
            chr(int(code, 16)) for code in codes if 0x20 <= int(code, 16) < 0x7F and chr(int(code, 16)) not in '"\\'
        )
        slash = "/" in escapes
        return cls(ensure_ascii, upper_hex, escaped_ascii, slash)

    def encode(self, text: str) -> str:
        """``text`` as a JSON string literal in this style."""
        return '"' + "".join(self._escape(char) for char in text) + '"'

    def _escape(self, char: str) -> str:
        if char in _SHORT_ESCAPES:
            return _SHORT_ESCAPES[char]
        code = ord(char)
        if code < 0x20 or char in self.escaped_ascii:
            return self._unicode_escape(code)
        if char == "/" and self.slash:
            return "\\/"
        # Python's ensure_ascii escapes DEL as well: it keeps only ' ' through '~' literal.
        if code < 0x7F or not self.ensure_ascii:
            return char
        if code > 0xFFFF:
            code -= 0x10000
            return self._unicode_escape(0xD800 + (code >> 10)) + self._unicode_escape(0xDC00 + (code & 0x3FF))
        return self._unicode_escape(code)

    def _unicode_escape(self, code: int) -> str:
        return f"\\u{code:04X}" if self.upper_hex else f"\\u{code:04x}"


# --- writing -------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new one, never a mix.

    A symlink is followed so the link stays a link; an existing file keeps its permission bits.
    """
    given = Path(path)
    if given.exists() and not (given.is_file() or given.is_dir()):
        # A pipe (<(...)), socket or device: there is no file to replace, and realpath names a
        # pseudo-path such as /proc/123/fd/pipe:[456].
        raise InputError(given, "is a pipe or device, not a file that can be rewritten")
    path = Path(os.path.realpath(given))
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_current_umask()
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise InputError(path, f"cannot write: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(path, f"cannot write: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    # The umask can only be read by setting it; it is put back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
