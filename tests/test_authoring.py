"""The authoring round trip: extract templates to .jinja files and embed them back byte for byte."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from templatekit.authoring import EscapeStyle, embed, extract
from templatekit.errors import InputError
from templatekit.sources import load_source, template_from_text

# Everything a template can hold that JSON escapes: quotes, backslashes, newlines, tabs, DEL,
# non-ASCII, an astral-plane character (a surrogate pair under ensure_ascii) and a slash.
TRICKY = (
    "{%- for m in messages -%}\n"
    "{{ '<|im_start|>' + m['role'] + \"\\n\" }}\t{{ m.content | trim }}</s>\n"
    "{%- endfor -%}{# café ✓ 🤖 \x7f \u2028 #}"
)
CONFIG = {
    "add_bos_token": False,
    "bos_token": "<s>",
    "chat_template": TRICKY,
    "eos_token": "</s>",
    "model_max_length": 8192,
    "unk_token": "⁇",
}

STYLES = {
    "indent 2, raw UTF-8": {"indent": 2, "ensure_ascii": False},
    "indent 4, ensure_ascii": {"indent": 4, "ensure_ascii": True},
    "compact, raw UTF-8": {"indent": None, "ensure_ascii": False},
    "minified, ensure_ascii": {"separators": (",", ":"), "ensure_ascii": True},
    "tabs, raw UTF-8": {"indent": "\t", "ensure_ascii": False},
}


def named(**templates: str) -> list[dict]:
    """A ``chat_template`` list of named templates."""
    return [{"name": name, "template": template} for name, template in templates.items()]


def dump(value, style: dict) -> bytes:
    return (json.dumps(value, **style) + "\n").encode("utf-8")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# --- extract then embed, unchanged ---------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_round_trip_of_an_unchanged_string_template_is_byte_identical(tmp_path, style):
    target = write(tmp_path / "tokenizer_config.json", dump(CONFIG, STYLES[style]))
    before = target.read_bytes()
    [jinja] = extract(target)
    assert jinja == tmp_path / "tokenizer_config.json.jinja"
    assert jinja.read_bytes() == TRICKY.encode("utf-8")
    assert embed(jinja, target) is False
    assert target.read_bytes() == before


@pytest.mark.parametrize("style", STYLES)
def test_round_trip_of_unchanged_named_templates_is_byte_identical(tmp_path, style):
    config = {**CONFIG, "chat_template": named(default=TRICKY, tool_use="tools 🛠")}
    target = write(tmp_path / "tokenizer_config.json", dump(config, STYLES[style]))
    before = target.read_bytes()
    written = extract(target)
    folder = tmp_path / "tokenizer_config.json.templates"
    assert written == [folder / "default.jinja", folder / "tool_use.jinja"]
    assert [path.read_text("utf-8") for path in written] == [TRICKY, "tools 🛠"]
    assert [embed(path, target) for path in written] == [False, False]
    assert target.read_bytes() == before


# --- edits land in the right place ---------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_an_edit_rewrites_only_the_template_string(tmp_path, style):
    target = write(tmp_path / "tokenizer_config.json", dump(CONFIG, STYLES[style]))
    [jinja] = extract(target)
    edited = TRICKY.replace("trim", "trim }}{{ '→ \"done\" 🚀'")
    jinja.write_text(edited, encoding="utf-8")
    assert embed(jinja, target) is True
    # The file is exactly what the tool that wrote it would have written with the new template.
    assert target.read_bytes() == dump({**CONFIG, "chat_template": edited}, STYLES[style])
    assert load_source(target).select().text == edited


@pytest.mark.parametrize("style", STYLES)
def test_an_edit_to_a_named_template_changes_only_that_item(tmp_path, style):
    items = named(default=TRICKY, rag="R", tool_use="T")
    target = write(tmp_path / "tokenizer_config.json", dump({**CONFIG, "chat_template": items}, STYLES[style]))
    jinja = write(tmp_path / "rag.jinja", "documents: ü\n")
    assert embed(jinja, target) is True
    items[1]["template"] = "documents: ü\n"
    assert target.read_bytes() == dump({**CONFIG, "chat_template": items}, STYLES[style])


def test_crlf_template_files_are_embedded_as_transformers_reads_them(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", dump(CONFIG, STYLES["indent 2, raw UTF-8"]))
    jinja = write(tmp_path / "edited.jinja", b"line one\r\nline two\r\n")
    assert embed(jinja, target) is True
    assert json.loads(target.read_text("utf-8"))["chat_template"] == "line one\nline two\n"


def test_processor_chat_template_json_keeps_ascii_escapes(tmp_path):
    target = write(tmp_path / "chat_template.json", json.dumps({"chat_template": "plain"}, indent=2, sort_keys=True) + "\n")
    jinja = write(tmp_path / "new.jinja", "héllo 🤖")
    assert embed(jinja, target) is True
    assert target.read_text("utf-8") == json.dumps({"chat_template": "héllo 🤖"}, indent=2, sort_keys=True) + "\n"


def test_new_strings_follow_unusual_escaping(tmp_path):
    # Written by a Go-style serialiser: uppercase hex, HTML characters escaped, slashes escaped.
    raw = '{\r\n  "chat_template": "\\u003Cs\\u003E caf\\u00E9 a\\/b",\r\n  "eos_token": "\\u003C/s\\u003E \\u0026"\r\n}\r\n'
    target = write(tmp_path / "tokenizer_config.json", raw)
    jinja = write(tmp_path / "new.jinja", "<b> & é/x ")
    assert embed(jinja, target) is True
    assert target.read_bytes().decode("utf-8") == (
        '{\r\n  "chat_template": "\\u003Cb\\u003E \\u0026 \\u00E9\\/x ",\r\n'
        '  "eos_token": "\\u003C/s\\u003E \\u0026"\r\n}\r\n'
    )


def test_escape_style_matches_json_dumps():
    for ensure_ascii in (False, True):
        style = EscapeStyle(ensure_ascii=ensure_ascii)
        assert style.encode(TRICKY) == json.dumps(TRICKY, ensure_ascii=ensure_ascii)
        controls = "".join(map(chr, range(0x20)))
        assert style.encode(controls) == json.dumps(controls, ensure_ascii=ensure_ascii)


def test_null_template_is_replaced(tmp_path):
    style = STYLES["indent 2, raw UTF-8"]
    target = write(tmp_path / "tokenizer_config.json", dump({**CONFIG, "chat_template": None}, style))
    assert embed(write(tmp_path / "t.jinja", "T"), target) is True
    assert target.read_bytes() == dump({**CONFIG, "chat_template": "T"}, style)


def test_repeated_key_replaces_the_value_json_keeps(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", '{"chat_template": "first", "chat_template": "second"}')
    assert embed(write(tmp_path / "t.jinja", "third"), target) is True
    assert target.read_text() == '{"chat_template": "first", "chat_template": "third"}'


# --- a file without a template gets the key appended ---------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_missing_key_is_appended_in_the_files_layout(tmp_path, style):
    config = {key: value for key, value in CONFIG.items() if key != "chat_template"}
    target = write(tmp_path / "tokenizer_config.json", dump(config, STYLES[style]))
    assert embed(write(tmp_path / "chat_template.jinja", TRICKY), target) is True
    assert target.read_bytes() == dump({**config, "chat_template": TRICKY}, STYLES[style])


@pytest.mark.parametrize("name, ensure_ascii", [("tokenizer_config.json", False), ("chat_template.json", True)])
def test_a_file_showing_no_escaping_preference_gets_what_transformers_writes(tmp_path, name, ensure_ascii):
    # save_pretrained writes tokenizer_config.json with ensure_ascii=False, processors chat_template.json with True.
    target = write(tmp_path / name, '{\n  "chat_template": "plain"\n}')
    assert embed(write(tmp_path / "t.jinja", "é"), target) is True
    assert target.read_text("utf-8") == json.dumps({"chat_template": "é"}, indent=2, ensure_ascii=ensure_ascii)


@pytest.mark.parametrize("style", STYLES)
def test_missing_key_with_a_name_appends_a_named_list(tmp_path, style):
    config = {key: value for key, value in CONFIG.items() if key != "chat_template"}
    target = write(tmp_path / "tokenizer_config.json", dump(config, STYLES[style]))
    assert embed(write(tmp_path / "x.jinja", "R"), target, name="rag") is True
    assert target.read_bytes() == dump({**config, "chat_template": [{"name": "rag", "template": "R"}]}, STYLES[style])


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("{}", '{"chat_template": "T"}'),
        ('{"a": 1}', '{"a": 1, "chat_template": "T"}'),
        ('{\n  "a": 1\n}', '{\n  "a": 1,\n  "chat_template": "T"\n}'),
    ],
)
def test_append_to_small_objects(tmp_path, raw, expected):
    target = write(tmp_path / "tokenizer_config.json", raw)
    assert embed(write(tmp_path / "t.jinja", "T"), target) is True
    assert target.read_text() == expected


# --- embed refuses what it cannot do -------------------------------------------------------


def embed_error(jinja: Path, target: Path, name: str | None = None) -> str:
    with pytest.raises(InputError) as error:
        embed(jinja, target, name)
    return str(error.value)


def test_embed_needs_a_name_for_named_lists(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": named(default="D", rag="R")}))
    jinja = write(tmp_path / "edited.jinja", "X")
    assert embed_error(jinja, target) == (
        f"{target}: holds named chat templates ('default', 'rag'); say which one to replace"
        " (the file name 'edited' matches none)"
    )
    problem = "has no chat template named 'tool_use'; available: 'default', 'rag'"
    assert embed_error(jinja, target, "tool_use") == f"{target}: {problem}"
    assert embed(write(tmp_path / "chat_template.jinja", "D2"), target) is True
    assert load_source(target).select().text == "D2"


def test_embed_refuses_a_name_for_a_single_template(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "S"}))
    problem = "holds a single unnamed chat template, not one named 'rag'"
    assert embed_error(write(tmp_path / "t.jinja", "X"), target, "rag") == f"{target}: {problem}"


def test_embed_refuses_a_wrongly_shaped_template(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": 3}))
    assert embed_error(write(tmp_path / "t.jinja", "X"), target) == (
        f"{target}: chat_template must be a string, a list of {{name, template}} objects or an object of name: template"
    )


def test_embed_reports_bad_json_with_its_position(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", '{"chat_template": "x",}')
    problem = "invalid JSON: Expecting property name enclosed in double quotes"
    assert embed_error(write(tmp_path / "t.jinja", "X"), target) == f"{target}:1:23: {problem}"


def test_embed_reports_a_bad_jinja_file(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "S"}))
    jinja = write(tmp_path / "t.jinja", b"")
    assert embed_error(jinja, target) == f"{jinja}: empty file: there is no template text"


def test_embed_refuses_a_template_that_does_not_compile_unless_forced(tmp_path):
    """Embedding used to write an unparsable template with exit 0: every tokenizer loading the
    file would then fail in apply_chat_template."""
    original = json.dumps({"chat_template": "S"})
    target = write(tmp_path / "tokenizer_config.json", original)
    jinja = write(tmp_path / "t.jinja", "{{ bos_token }}\n{% for %}\n")
    assert embed_error(jinja, target) == (f"{jinja}:2: syntax error: Expected an expression, got 'end of statement "
                                          "block'; not embedded (--force embeds it anyway)")
    assert target.read_text() == original
    assert embed(jinja, target, force=True) is True
    assert json.loads(target.read_text())["chat_template"] == "{{ bos_token }}\n{% for %}\n"


def test_embed_command_refuses_a_broken_template_with_exit_2_and_forces_with_force(tmp_path, run):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "S"}))
    jinja = write(tmp_path / "bad.jinja", "{% if messages %}unclosed")
    result = run("embed", str(jinja), str(target))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert f"{jinja}:1: syntax error: Unexpected end of template" in result.output
    assert json.loads(target.read_text())["chat_template"] == "S"
    result = run("embed", str(jinja), str(target), "--force")
    assert result.exit_code == 0 and json.loads(target.read_text())["chat_template"] == "{% if messages %}unclosed"


def test_embed_says_gguf_targets_are_not_supported(tmp_path, run):
    from tests.test_sources import write_gguf

    gguf = write_gguf(tmp_path / "model.gguf", templates="T")
    before = gguf.read_bytes()
    jinja = write(tmp_path / "c.jinja", "X")
    problem = embed_error(jinja, gguf)
    assert problem.startswith(f"{gguf}: GGUF files are not supported as embed targets")
    assert "not UTF-8" not in problem and "gguf-new-metadata" in problem
    result = run("embed", str(jinja), str(gguf))
    assert result.exit_code == 2 and "GGUF files are not supported as embed targets" in result.output
    assert gguf.read_bytes() == before


# --- writes are atomic and keep the file's mode and links ----------------------------------


def test_embed_keeps_mode_and_leaves_no_temporary_files(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "S"}))
    os.chmod(target, 0o640)
    assert embed(write(tmp_path / "t.jinja", "X"), target) is True
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.jinja", "tokenizer_config.json"]


def test_embed_writes_through_a_symlink(tmp_path):
    real = write(tmp_path / "blobs" / "abc123", json.dumps({"chat_template": "S"}))
    link = tmp_path / "tokenizer_config.json"
    link.symlink_to(real)
    assert embed(write(tmp_path / "t.jinja", "X"), link) is True
    assert link.is_symlink() and json.loads(real.read_text())["chat_template"] == "X"


# --- extract: where files go and when they are left alone ----------------------------------


def test_extract_is_byte_exact_without_a_trailing_newline(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "no newline at end"}))
    [jinja] = extract(target, tmp_path / "out" / "mine.jinja")
    assert jinja == tmp_path / "out" / "mine.jinja" and jinja.read_bytes() == b"no newline at end"


def test_extract_into_an_existing_directory(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "T"}))
    (tmp_path / "out").mkdir()
    assert extract(target, tmp_path / "out") == [tmp_path / "out" / "tokenizer_config.json.jinja"]


def test_extract_named_templates_into_a_chosen_directory(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": named(default="D", rag="R")}))
    folder = tmp_path / "templates"
    assert extract(target, folder) == [folder / "default.jinja", folder / "rag.jinja"]



def test_extract_refuses_a_template_with_an_empty_name(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": named(default="D", **{"": "E"})}))
    with pytest.raises(InputError, match="empty name cannot be written as a file"):
        extract(target, tmp_path / "out")
    assert not (tmp_path / "out" / ".jinja").exists() and not (tmp_path / "out" / "default.jinja").exists()

def test_extract_gguf(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "model.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_chat_template("{{ 'gguf' }}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    [jinja] = extract(path)
    assert jinja == tmp_path / "model.gguf.jinja" and jinja.read_text() == "{{ 'gguf' }}"


def test_extract_leaves_file_based_templates_where_they_are(tmp_path):
    directory = tmp_path / "model"
    default = write(directory / "chat_template.jinja", b"D\r\n")
    rag = write(directory / "additional_chat_templates" / "rag.jinja", "R")
    assert extract(directory) == [default, rag]
    assert default.read_bytes() == b"D\r\n"


def test_extract_from_a_model_directory_with_a_json_template(tmp_path):
    directory = tmp_path / "model"
    target = write(directory / "tokenizer_config.json", dump(CONFIG, STYLES["indent 2, raw UTF-8"]))
    [jinja] = extract(directory)
    assert jinja == directory / "tokenizer_config.json.jinja"
    assert embed(jinja, target) is False


def test_extract_refuses_to_overwrite_different_content(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": "new"}))
    existing = write(tmp_path / "tokenizer_config.json.jinja", "old")
    with pytest.raises(InputError) as error:
        extract(target)
    assert str(error.value) == f"{existing}: already exists with different content; not replaced (use --force, or overwrite=True from Python)"
    assert existing.read_text() == "old"
    assert extract(target, overwrite=True) == [existing] and existing.read_text() == "new"


def test_extract_writes_nothing_unless_everything_can_be_written(tmp_path):
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": named(a="A", b="B")}))
    write(tmp_path / "out" / "b.jinja", "other")
    with pytest.raises(InputError):
        extract(target, tmp_path / "out")
    assert not (tmp_path / "out" / "a.jinja").exists()


@pytest.mark.parametrize("name, stem", [
    ("../escape", "___escape"),
    ("a/../b", "a_.._b"),
    ("x\n\u001b[2J\u202eevil", "x__[2J_evil"),
    ("back\\slash", "back_slash"),
    (".hidden", "_hidden"),
    ("\u2066isolate\u2069", "_isolate_"),
])
def test_extract_makes_untrusted_template_names_safe_file_names(tmp_path, name, stem):
    """Names come from untrusted files: a name with path separators, a leading dot, control or
    bidi characters becomes a cleaned name plus a hash of the original, so nothing lands outside
    the output directory, no directory is created, and printing the path repaints no terminal."""
    import hashlib

    templates = [{"name": "default", "template": "D"}, {"name": name, "template": "E"}]
    target = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": templates}))
    out = tmp_path / "out"
    expected = out / f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.jinja"
    assert extract(target, out) == [out / "default.jinja", expected]
    assert sorted(path.name for path in out.iterdir()) == sorted(["default.jinja", expected.name])
    assert expected.read_text() == "E" and expected.name.isprintable()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "tokenizer_config.json"]


def test_extract_keeps_ordinary_names_as_they_are(tmp_path):
    target = write(tmp_path / "tokenizer_config.json",
                   json.dumps({"chat_template": named(default="D", tool_use="T", **{"rag v2.1": "R", "日本語": "J"})}))
    assert [path.name for path in extract(target, tmp_path / "out")] == [
        "default.jinja", "tool_use.jinja", "rag v2.1.jinja", "日本語.jinja"]


def test_extract_of_a_gguf_name_with_a_path_leaves_no_stray_directory(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "model.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_chat_template("D")
    writer.add_string("tokenizer.chat_template.a/../b c\n\x1b[31m", "E")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    written = extract(path, tmp_path / "out")
    assert [file.parent for file in written] == [tmp_path / "out"] * 2
    assert all(file.name.isprintable() for file in written)
    assert sorted(file.name for file in (tmp_path / "out").iterdir()) == sorted(file.name for file in written)


def test_extract_a_string_template_needs_an_output(tmp_path, monkeypatch):
    import templatekit.authoring as authoring

    monkeypatch.setattr(authoring, "load_source", lambda spec: template_from_text("T"))
    with pytest.raises(InputError) as error:
        extract("<string>")
    assert str(error.value) == "<string>: a template given as a string has no file to write next to; give an output path"
    assert extract("<string>", tmp_path / "t.jinja") == [tmp_path / "t.jinja"]


def test_processor_json_holds_only_an_unnamed_string(tmp_path):
    target = write(tmp_path / "chat_template.json", json.dumps({"chat_template": "P"}))
    jinja = write(tmp_path / "t.jinja", "X")
    assert embed_error(jinja, target, "rag") == f"{target}: holds a single unnamed chat template, not one named 'rag'"
    write(target, json.dumps({"chat_template": [{"name": "default", "template": "D"}]}))
    assert embed_error(jinja, target) == f"{target}: chat_template must be a string"


def test_embed_replaces_one_template_of_the_object_form(tmp_path):
    # {"chat_template": {name: template}} is loaded as transformers loads it; embed edits the one
    # member named, leaving every other byte alone.
    from templatekit.authoring import embed_text

    target = tmp_path / "tokenizer_config.json"
    target.write_text('{"chat_template": {"default": "D", "tool_use": "T"}, "eos_token": "</s>"}')
    assert embed_text("NEW", target, "tool_use") is True
    assert target.read_text() == '{"chat_template": {"default": "D", "tool_use": "NEW"}, "eos_token": "</s>"}'
