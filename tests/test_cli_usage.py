"""How the command line behaves around its output rather than in it: usage mistakes, a reader
that goes away, output that must stay exact or parseable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _cli(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "templatekit", *args], capture_output=True, text=True,
                          **options)


@pytest.mark.parametrize("args, expected", [
    (("lnt",), "No such command 'lnt'. Did you mean 'lint'?"),
    (("lint", "--fial-on", "x"), "lint: No such option '--fial-on'. Did you mean '--fail-on'?"),
    (("lint", "--fail-on", "warn"), "(did you mean 'warning'?)"),
    (("lint", "--format", "sarf"), "(did you mean 'sarif'?)"),
    (("render", "--timeout", "0"), "render: Invalid value for '--timeout': budget seconds must be positive"),
    (("render", "--timeout", "nan"), "Invalid value for '--timeout': a budget must be a finite number"),
    (("render", "--max-output", "-5"), "Invalid value for '--max-output'"),
    (("diff", "a", "b", "--timeout", "-1"), "diff: Invalid value for '--timeout': budget seconds must be positive"),
    (("lint", "--engines", "", "x.jinja"), "lint: Invalid value for --engines: names no engine"),
    (("lint", "--engines", " , ", "x.jinja"), "lint: Invalid value for --engines: names no engine"),
    (("lint", "--select", "TK201", "--ignore", "TK2", "x.jinja"), "ignore (TK2) removes every rule it names"),
])
def test_a_usage_mistake_is_one_line_naming_it_and_exit_2(run, args, expected) -> None:
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("templatekit: error: ")
    assert expected in lines[0]


def test_no_arguments_still_shows_the_help(run) -> None:
    result = run()
    assert "Commands:" in result.output


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path) -> None:
    # More output than a pipe holds, so the command is still writing when `head` stops reading.
    messages = tmp_path / "long.json"
    messages.write_text(json.dumps([{"role": "user", "content": "word " * 200_000}]), encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "templatekit", "render", "--messages", str(messages), "--no-color"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(100)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_raw_render_keeps_terminal_escapes_when_piped(tmp_path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages[0].content }}", encoding="utf-8")
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "\x1b[31mred\x1b[0m"}]), encoding="utf-8")
    result = _cli("render", str(template), "--messages", str(messages), "--raw")
    assert result.returncode == 0
    assert result.stdout == "\x1b[31mred\x1b[0m"


def test_raw_render_names_the_failing_conversation_on_stderr(tmp_path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% if messages|length > 2 %}{{ raise_exception('too long') }}{% endif %}ok", encoding="utf-8")
    result = _cli("render", str(template), "-f", "basic", "-f", "multi-turn", "--raw")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["==> basic <==", "ok", "==> multi-turn <=="]
    assert result.stderr.startswith("templatekit: multi-turn: ")
    assert "too long" in result.stderr


@pytest.fixture
def minijinja_installed():
    pytest.importorskip("minijinja")


def test_engine_renders_go_inside_the_json_document(minijinja_installed, tmp_path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content|tojson }}{% endfor %}", encoding="utf-8")
    result = _cli("lint", str(template), "--engines", "minijinja", "--format", "json", "--no-cache")
    payload = json.loads(result.stdout)  # one document: nothing appended after it
    cells = payload["files"][0]["engine_renders"]
    assert {cell["engine"] for cell in cells} == {"minijinja"}
    assert {cell["fixture"] for cell in cells} >= {"basic", "markup-in-content"}
    # minijinja's tojson escapes quotes and angle brackets that transformers keeps.
    assert any(cell["breaks"] and cell["outcome"] == "different" for cell in cells)


def test_engine_renders_leave_sarif_parseable_and_go_to_stderr(minijinja_installed, tmp_path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content|tojson }}{% endfor %}", encoding="utf-8")
    result = _cli("lint", str(template), "--engines", "minijinja", "--format", "sarif", "--no-cache")
    assert json.loads(result.stdout)["runs"]
    assert "minijinja" in result.stderr and "fixtures break" in result.stderr


def test_without_engines_the_json_has_no_engine_renders(run, tmp_path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages[0].content }}", encoding="utf-8")
    payload = json.loads(run("lint", str(template), "--format", "json", "--static", "--no-cache").output)
    assert "engine_renders" not in payload["files"][0]


def test_a_dash_reads_the_template_from_standard_input() -> None:
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content|trim }}{% endfor %}"
    rendered = _cli("render", "-", "-f", "basic", "--raw", input=template)
    assert rendered.returncode == 0
    assert rendered.stdout.startswith("[user] What is the capital")
    linted = _cli("lint", "-", "--select", "TK201", "--no-cache", input=template.replace("|trim", ".strip()"))
    assert linted.returncode == 0  # TK201 is an info finding, below the default --fail-on
    assert "TK201" in linted.stdout
    empty = _cli("render", "-", input="")
    assert empty.returncode == 2
    assert empty.stderr.count("\n") == 1 and "empty" in empty.stderr
