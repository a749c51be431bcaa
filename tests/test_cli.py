"""The command line: output a user reads, exit codes, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def chatml(tmp_path):
    path = tmp_path / "chatml.jinja"
    path.write_text(CHATML, encoding="utf-8")
    return path


def test_render_default_uses_bundled_chatml_and_all_builtin_fixtures(run):
    from templatekit.fixtures import builtin_names

    result = run("render", "--no-color")
    assert result.exit_code == 0
    assert f"{len(builtin_names())} of {len(builtin_names())} rendered" in result.output
    assert "<|im_start|>user↵" in result.output


def test_render_shows_whitespace_visibly(run, chatml, tmp_path):
    conversation = tmp_path / "c.yaml"
    conversation.write_text("messages:\n  - {role: user, content: \" a\\tb \\r\"}\n", encoding="utf-8")
    result = run("render", str(chatml), "--fixture", str(conversation), "--no-color")
    assert "<|im_start|>user↵\n·a→b·␍<|im_end|>↵\n<|im_start|>assistant↵" in result.output


def test_render_raw_prints_exact_text(run, chatml):
    result = run("render", str(chatml), "--fixture", "basic", "--raw")
    assert result.exit_code == 0
    assert result.output.startswith("<|im_start|>user\n")
    assert result.output.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_render_of_a_bare_template_says_how_to_give_an_undefined_special_token(run, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{{ bos_token + messages[0]['content'] }}", encoding="utf-8")
    failed = run("render", str(template), "-f", "basic")
    assert failed.exit_code == 1
    assert "'bos_token' is undefined; no bos_token is passed, as the source defines none" in failed.output
    assert "--var bos_token=TEXT" in failed.output
    given = run("render", str(template), "-f", "basic", "--var", "bos_token=<s>", "--raw")
    assert given.exit_code == 0 and given.output.startswith("<s>")
    # A token the template reads under another name is the template's business: no hint.
    template.write_text("{{ bos + messages[0]['content'] }}", encoding="utf-8")
    assert "--var" not in run("render", str(template), "-f", "basic").output


def test_render_json_has_text_spans_and_errors(run, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}", encoding="utf-8")
    result = run("render", str(template), "--fixture", "basic", "--json")
    payload = json.loads(result.output)
    assert payload[0]["fixture"] == "basic"
    assert payload[0]["error"] is None
    start, end = payload[0]["generation_spans"][0]
    assert payload[0]["text"][start:end] == payload[0]["text"]


def test_template_raise_is_reported_with_location_and_exit_1(run, tmp_path):
    template = tmp_path / "strict.jinja"
    template.write_text("ok\n{{ raise_exception('System role not supported') }}", encoding="utf-8")
    result = run("render", str(template), "--fixture", "basic", "--no-color")
    assert result.exit_code == 1
    assert f"{template}:2: template raised: System role not supported" in result.output


def test_engine_errors_name_file_and_line(run, tmp_path):
    template = tmp_path / "broken.jinja"
    template.write_text("a\n{% if %}", encoding="utf-8")
    result = run("render", str(template), "--fixture", "basic")
    assert result.exit_code == 1
    assert f"{template}:2: syntax error:" in result.output


def test_embedded_template_errors_name_the_template_and_its_line(run, tmp_path):
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": [{"name": "default", "template": "x"},
                                                     {"name": "tool_use", "template": "a\n{{ raise_exception('no') }}"}]}), encoding="utf-8")
    result = run("render", str(config), "--fixture", "tool-definitions", "--no-color")
    assert result.exit_code == 1
    assert f"{config}[tool_use]:2: template raised: no" in result.output


def test_vars_now_and_generation_prompt_options(run, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{{ flag }}|{{ n + 1 }}|{{ strftime_now('%Y-%m-%d') }}|{{ add_generation_prompt }}", encoding="utf-8")
    result = run("render", str(template), "-f", "basic", "--var", "flag=true", "--var", "n=41",
                 "--now", "2024-07-26T10:00:00", "--no-add-generation-prompt", "--raw")
    assert result.output == "True|42|2024-07-26|False"


def test_continue_final_message_option(run, chatml, tmp_path):
    conversation = tmp_path / "c.json"
    conversation.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Once upon"}]}))
    result = run("render", str(chatml), "--messages", str(conversation), "--continue-final-message", "--raw")
    assert result.exit_code == 0
    assert result.output == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nOnce upon"


def test_messages_file_may_be_a_plain_list(run, chatml, tmp_path):
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps([{"role": "user", "content": "Yo"}]))
    assert run("render", str(chatml), "--messages", str(messages), "--raw").output.startswith("<|im_start|>user\nYo")


@pytest.mark.parametrize(
    "args, message",
    [
        (["render", "missing.jinja"], "missing.jinja: no such file"),
        (["render", "--fixture", "no-such-fixture"], "no-such-fixture: no built-in fixture or file with this name"),
        (["render", "--now", "yesterday"], "expected an ISO date-time"),
        (["render", "--var", "novalue"], "expected KEY=VALUE"),
        (["render", "--timeout", "0"], "budget seconds must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_bad_conversation_file_names_message_index_and_field(run, chatml, tmp_path):
    conversation = tmp_path / "c.yaml"
    conversation.write_text("messages:\n  - {role: user, content: hi}\n  - {role: assistant, content: 5}\n", encoding="utf-8")
    result = run("render", str(chatml), "--fixture", str(conversation))
    assert result.exit_code == 2
    assert result.output.strip() == f"templatekit: error: {conversation}: messages[1].content: must be string or array or null, got number"


def test_unknown_conversation_key_suggests_the_right_one(run, chatml, tmp_path):
    conversation = tmp_path / "c.yaml"
    conversation.write_text("messages: [{role: user, content: hi}]\nadd_generation_promt: true\n", encoding="utf-8")
    result = run("render", str(chatml), "--fixture", str(conversation))
    assert result.exit_code == 2
    assert "unknown key 'add_generation_promt' (did you mean 'add_generation_prompt'?)" in result.output


def test_fixtures_lists_and_shows(run):
    listing = run("fixtures")
    assert listing.exit_code == 0
    assert listing.output.splitlines()[0].startswith("basic")
    shown = run("fixtures", "basic")
    assert shown.output.startswith("name: basic\n")
    assert "messages:" in shown.output


def test_extract_then_embed_round_trip_from_the_command_line(run, tmp_path):
    config = tmp_path / "tokenizer_config.json"
    original = json.dumps({"bos_token": "<s>", "chat_template": CHATML, "model_max_length": 4096}, indent=2).encode()
    config.write_bytes(original)
    out = tmp_path / "edit.jinja"
    assert run("extract", str(config), "-o", str(out)).exit_code == 0
    assert out.read_text(encoding="utf-8") == CHATML
    result = run("embed", str(out), str(config))
    assert result.exit_code == 0 and "already up to date" in result.output
    assert config.read_bytes() == original
    out.write_text(CHATML.replace("<|im_start|>assistant\n{%", "<|im_start|>assistant\n\n{%"), encoding="utf-8")
    assert "updated" in run("embed", str(out), str(config)).output
    edited = json.loads(config.read_text())
    assert edited["chat_template"] == out.read_text(encoding="utf-8") != CHATML
    assert list(edited) == ["bos_token", "chat_template", "model_max_length"]


def test_no_traceback_for_a_binary_source():
    completed = subprocess.run([sys.executable, "-m", "templatekit", "render", sys.executable],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


# --- hostile and broken input on the command line ------------------------------------------------


def _templatekit(*args, **kwargs) -> subprocess.CompletedProcess:
    """The real command in a child process: real stdout/stderr encodings, no test harness between."""
    return subprocess.run([sys.executable, "-m", "templatekit", *map(str, args)], capture_output=True,
                          timeout=120, **kwargs)


def test_a_lone_surrogate_prints_as_an_escape_not_an_internal_error(tmp_path):
    """JSON may spell a lone surrogate ("\\ud800"), which UTF-8 cannot encode: printing the render
    or a lint finding used to end in 'internal error: UnicodeEncodeError'."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text('{"chat_template": "\\ud800{{ messages[0].content }}"}')
    conversation = tmp_path / "c.json"
    conversation.write_text('[{"role": "user", "content": "x\\udfff"}]')
    rendered = _templatekit("render", model, "--messages", conversation, "--raw")
    # Raw output is the exact text, which UTF-8 cannot carry: refused, not written as an escape.
    assert rendered.returncode == 1 and rendered.stdout == b""
    assert b"lone surrogate U+D800 at offset 0" in rendered.stderr and b"Traceback" not in rendered.stderr
    shown = _templatekit("render", model, "--messages", conversation)
    assert shown.returncode == 0 and "⟨U+D800⟩".encode() in shown.stdout
    linted = _templatekit("lint", "--no-cache", "--format", "json", model)
    assert linted.returncode in (0, 1), linted.stderr
    json.loads(linted.stdout)
    diffed = _templatekit("diff", model, tmp_path / "missing.jinja")
    assert diffed.returncode == 2 and b"internal error" not in diffed.stderr


def test_a_non_utf8_file_name_prints_as_its_own_bytes(tmp_path):
    name = os.fsdecode(b"caf\xe9.jinja")
    (tmp_path / name).write_text(CHATML)
    completed = _templatekit("lint", "--no-cache", "-q", tmp_path, env={**os.environ, "LC_ALL": "C.UTF-8",
                                                                       "PYTHONIOENCODING": "utf-8"})
    assert completed.returncode in (0, 1), completed.stderr
    assert os.fsencode(str(tmp_path / name)) + b":1:1:" in completed.stdout


def test_error_lines_stay_one_line_whatever_the_input_holds(tmp_path):
    """A newline or an escape sequence in a rule name, file name or a template's own message used
    to reach the terminal as it was: two lines, or a repainted screen."""
    completed = _templatekit("rule", "TK\n201\x1b[2J")
    assert completed.returncode == 2
    assert completed.stderr.decode().startswith("templatekit: error: no rule named 'TK\\n201\\x1b[2J'")
    assert completed.stderr.count(b"\n") == 1 and b"\x1b" not in completed.stderr
    missing = _templatekit("render", tmp_path / "new\nline.jinja")
    assert missing.stderr.decode() == f"templatekit: error: {tmp_path}/new\\nline.jinja: no such file or directory\n"
    template = tmp_path / "raise.jinja"
    template.write_text("{{ raise_exception('hidden\\rshown\\x1b[2J\\u2028next') }}")
    raised = _templatekit("render", template, "-f", "basic", "--raw")
    assert raised.returncode == 1
    assert raised.stderr.decode() == f"templatekit: {template}:1: template raised: hidden shown\\x1b[2J next\n"


def test_lint_text_output_shows_control_characters_instead_of_sending_them(tmp_path):
    (tmp_path / "odd\nname.jinja").write_text("{{ messages[0].content.strip() }}")
    (tmp_path / "t.jinja").write_text("{{ '\x1b[2J' }}{{ messages[0].content.strip() }}")
    completed = _templatekit("lint", "--no-cache", "--select", "TK201", tmp_path)
    output = completed.stdout.decode()
    assert "TK201" in output and "\x1b" not in output
    assert f"{tmp_path}/odd\\nname.jinja:1:" in output
    # The excerpt keeps one column per character, so the caret still points at .strip().
    assert "1 | {{ '\u241b[2J' }}{{ messages[0].content.strip() }}" in output
    errors = _templatekit("lint", "--no-cache", tmp_path / "gone\n.jinja")
    assert errors.stdout.decode().splitlines()[0] == f"error: {tmp_path}/gone\\n.jinja: no such file or directory"


def test_a_render_refused_before_the_template_runs_names_the_conversation_file(run, chatml, tmp_path):
    conversation = tmp_path / "empty.json"
    conversation.write_text("[]")
    result = _templatekit("render", chatml, "--messages", conversation, "--raw")
    assert result.returncode == 1
    assert result.stderr.decode() == (f"templatekit: {conversation}: invalid input: Cannot apply chat template to an "
                                      "empty conversation. Provide at least one message.\n")


def test_a_pipe_is_read_once(tmp_path, chatml):
    """``templatekit render <(git show ...)``: the source was read twice (once for the GGUF magic
    bytes), and a pipe gives its bytes only once, so it looked empty."""
    script = f'{sys.executable} -m templatekit render <(cat "{chatml}") -f basic --raw'
    completed = subprocess.run(["bash", "-c", script], capture_output=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(b"<|im_start|>user\n")
    script = f'{sys.executable} -m templatekit diff <(cat "{chatml}") "{chatml}" -f basic'
    assert subprocess.run(["bash", "-c", script], capture_output=True, timeout=120).returncode == 0


def test_extract_reports_what_it_cannot_write(run, tmp_path):
    config = tmp_path / "tokenizer_config.json"
    config.write_text('{"chat_template": "\\ud800{{ messages }}"}')
    result = run("extract", str(config), "-o", str(tmp_path / "out.jinja"))
    assert result.exit_code == 2
    assert result.output == (f"templatekit: error: {config}[default]:1:1: holds a lone surrogate U+D800, which no "
                             "UTF-8 file can hold; fix it in the source first\n")
    config.write_text(json.dumps({"chat_template": CHATML}))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run("extract", str(config), "-o", str(blocker / "sub" / "t.jinja"))
    assert result.exit_code == 2
    assert result.output == f"templatekit: error: {blocker / 'sub'}: cannot create the directory: Not a directory\n"


def test_render_prints_each_prompt_before_rendering_the_next(tmp_path):
    # The second conversation runs for its whole 20 s budget; the first prompt must be on screen
    # long before that (it used to wait for every render).
    template = tmp_path / "slow_second.jinja"
    template.write_text("{% if messages | length > 1 %}{% for i in range(100000) %}{% for j in range(100000) %}"
                        "{% endfor %}{% endfor %}{% endif %}{{ messages[0].content }}", encoding="utf-8")
    quick, slow = tmp_path / "quick.yaml", tmp_path / "slow.yaml"
    quick.write_text("messages: [{role: user, content: first-prompt}]\n", encoding="utf-8")
    slow.write_text("messages: [{role: user, content: a}, {role: assistant, content: b}]\n", encoding="utf-8")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "templatekit", "render", str(template), "-f", str(quick), "-f", str(slow),
         "--no-color", "--timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if "first-prompt" in line:
                break
        waited = time.monotonic() - started
        assert any("first-prompt" in line for line in seen)
        assert waited < 15, f"the first prompt appeared after {waited:.1f} s, with the slow render's result"
    finally:
        process.kill()
        process.communicate()
