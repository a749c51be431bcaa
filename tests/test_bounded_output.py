"""What a template controls stays bounded and visible on the terminal and in CI logs.

A one-line template of a megabyte used to be printed whole under every finding; a render error
quoting an 8 MB value was printed whole; a right-to-left override built at render time reached
the terminal raw and reordered the error line. Snippets are now a window around the finding
with the caret still under the right character, messages are cut in the middle with a note of
how much, and format characters print as ``⟨U+202E⟩``.
"""

from __future__ import annotations

import json

import pytest

from templatekit.errors import RenderFailure, clip_middle, one_line
from templatekit.lint.model import Diagnostic
from templatekit.lint.runner import FileReport
from templatekit.report import MESSAGE_LIMIT, format_reports
from templatekit.report.text import format_diagnostic, snippet
from templatekit.visible import first_lone_surrogate, make_visible

RLO = "\u202e"


def _caret_target(block: str) -> str:
    """The printed characters the caret of a text finding points at."""
    lines = block.split("\n")
    source, caret = lines[2], lines[3]
    source = source[source.index("| ") + 2:]
    caret = caret[caret.index("| ") + 2:]
    start = caret.index("^")
    return source[start:start + caret.count("^")]


def _diagnostic(excerpt: str, column: int, end_column: int | None = None, message: str = "m") -> Diagnostic:
    return Diagnostic("TK901", "underscore-attribute", "error", message, 1, column, 1 if end_column else None,
                      end_column, location=f"t.jinja:1:{column}", path="t.jinja", excerpt=excerpt)


def test_lint_shows_a_long_line_as_a_window_around_the_finding(run, tmp_path):
    left, right = "a" * 200_000, "b" * 200_000
    path = tmp_path / "long.jinja"
    path.write_text(left + "{{ ''.__class__ }}" + right, encoding="utf-8")
    result = run("lint", "--no-cache", "--no-color", "--static", "--select", "TK901", str(path))
    assert result.exit_code == 1, result.output
    assert len(result.output) < 2_000  # was 400 KB: the whole line
    block = result.output.split("\n\n")[0]
    source_line = block.split("\n")[2]
    assert source_line.startswith("1 | …aaa") and source_line.endswith("bbb…")
    assert _caret_target(block).startswith("_")
    assert block.split("\n")[0].startswith(f"{path}:1:{200_000 + 7}:")


def test_a_short_line_is_shown_whole():
    text, offset, width = snippet("{{ x.__class__ }}", 6, 9)
    assert (text, offset, width) == ("{{ x.__class__ }}", 5, 9)


@pytest.mark.parametrize("column", [1, 50, 5_000, 9_990, 10_000])
def test_the_window_keeps_the_caret_on_its_character(column):
    line = "".join(chr(ord("a") + i % 26) for i in range(10_000))
    text, offset, width = snippet(line, column)
    assert len(text) <= 2 + 160
    assert text[offset] == line[column - 1] and width == 1
    assert text.startswith("…") == (column > 81)
    assert text.endswith("…") == (column + 79 < len(line))


def test_a_span_is_cut_with_the_window():
    text, offset, width = snippet("x" * 1_000 + "y" * 100_000, 1_001, 100_000)
    assert text[offset:offset + width] == "y" * width and width <= 80 and text.endswith("…")


def test_invisible_characters_before_the_column_keep_the_caret_aligned():
    # U+202E and NEL print wider than one character; the caret follows what is printed.
    excerpt = f"{RLO}\x85\x1b{{{{ x.__class__ }}}}"
    block = format_diagnostic(_diagnostic(excerpt, 9, 18))
    assert RLO not in block and "\x85" not in block and "\x1b" not in block
    assert "⟨U+202E⟩\\x85␛{{ x.__class__ }}" in block
    assert _caret_target(block) == "__class__"


def test_a_format_character_under_the_caret_is_underlined_whole():
    block = format_diagnostic(_diagnostic(f"ab{RLO}cd", 3))
    assert _caret_target(block) == "⟨U+202E⟩"


def test_one_line_shows_format_characters_by_code_point():
    assert one_line(f"raised: {RLO}gnp.exe\u200b") == "raised: ⟨U+202E⟩gnp.exe⟨U+200B⟩"
    assert one_line("plain, ü, 中, 😀") == "plain, ü, 中, 😀"


def test_clip_middle_keeps_both_ends_and_says_how_much_is_cut():
    text = "start " + "x" * 10_000 + " end"
    clipped = clip_middle(text, 400)
    assert clipped.startswith("start xx") and clipped.endswith("xx end")
    assert f"…[{len(text) - 400:,} characters cut]…" in clipped
    assert len(clipped) < 450
    assert clip_middle("short", 400) == "short"


def test_a_render_failure_is_described_cut_but_keeps_its_exact_message():
    message = "'dict object' has no attribute '" + "x" * 8_000_000 + "'"
    failure = RenderFailure("error", message, exception_type="UndefinedError", location="t.jinja:1")
    line = failure.describe()
    assert line.startswith("t.jinja:1: render error (UndefinedError): 'dict object' has no attribute 'xxx")
    assert line.endswith("xx'") and "characters cut]" in line and len(line) < 600
    assert failure.message == message  # parity with transformers compares the message itself


def test_render_prints_a_huge_error_value_cut(run, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{{ messages[0]['x' * 1000000].y }}", encoding="utf-8")
    result = run("render", str(path), "-f", "basic")
    assert result.exit_code == 1
    assert len(result.output) < 1_000  # was over a megabyte
    assert "has no attribute 'xxx" in result.output and "characters cut]" in result.output


BIDI_RAISE = "{{ raise_exception('%c'|format(8238) ~ 'gnp.exe') }}{% for m in messages %}{{ m.content }}{% endfor %}"


def test_a_bidi_control_built_at_render_time_is_shown_in_the_error_line(run, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(BIDI_RAISE, encoding="utf-8")
    result = run("render", str(path), "-f", "basic")
    assert result.exit_code == 1
    assert RLO not in result.output
    assert "template raised: ⟨U+202E⟩gnp.exe" in result.output


def test_capabilities_notes_show_a_bidi_control_built_at_render_time(run, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(BIDI_RAISE, encoding="utf-8")
    result = run("capabilities", str(path))
    assert RLO not in result.output
    assert "⟨U+202E⟩gnp.exe" in result.output


def _huge_report() -> FileReport:
    diagnostic = _diagnostic("y" * 500_000, 400_001, message="raised: " + "z" * 1_000_000)
    diagnostic = Diagnostic(**{**diagnostic.__dict__, "file_line": 1, "file_column": 400_001})
    return FileReport("t.jinja", [diagnostic], notes=["n" * 1_000_000], templates=1)


@pytest.mark.parametrize("output_format", ["text", "json", "sarif", "github"])
def test_no_format_embeds_a_megabyte_per_finding(output_format):
    output = format_reports([_huge_report()], output_format)
    assert len(output) < 3 * MESSAGE_LIMIT + 60_000  # SARIF describes the rule once
    assert "characters cut]" in output


def test_sarif_and_json_keep_exact_positions():
    sarif = json.loads(format_reports([_huge_report()], "sarif"))
    region = sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 1, "startColumn": 400_001}
    document = json.loads(format_reports([_huge_report()], "json"))
    assert document["diagnostics"][0]["column"] == 400_001


def test_a_lone_surrogate_is_shown_by_code_point():
    assert make_visible("a\ud800b") == "a⟨U+D800⟩b"
    assert first_lone_surrogate("ok\udfffx\ud800") == (2, 0xDFFF)
    assert first_lone_surrogate("ok 😀") is None


def test_render_text_view_shows_a_lone_surrogate_by_code_point(run, tmp_path):
    config = tmp_path / "tokenizer_config.json"
    config.write_text('{"chat_template": "\\ud800{{ messages[0].content }}"}', encoding="utf-8")
    result = run("render", str(config), "-f", "basic")
    assert result.exit_code == 0, result.output
    assert "⟨U+D800⟩What" in result.output
