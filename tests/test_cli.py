"""The command line: output a user reads, exit codes, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

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
