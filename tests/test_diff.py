"""`templatekit diff`: classifying fixtures, git revisions, role wrappers, token diffs, the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

import templatekit
from templatekit.comparison import (
    BOTH_RAISED_DIFFERENT,
    BOTH_RAISED_SAME,
    DIFFERENT,
    IDENTICAL,
    ONE_RAISED,
    WHITESPACE_ONLY,
    WRAPPER_NOT_RENDERED,
    WRAPPER_NOT_SUPPORTED,
    WRAPPER_OK,
    compare_wrappers,
    role_wrappers,
    side_by_side,
)
from templatekit.errors import InputError
from templatekit.sources import template_from_text

NOW = datetime(2025, 1, 15, 10, 30)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The same template with one more newline after each turn: only whitespace changes.
CHATML_EXTRA_NEWLINE = CHATML.replace("<|im_end|>\n{% endfor %}", "<|im_end|>\n\n{% endfor %}")
# The same template with a renamed role marker for the assistant.
CHATML_RENAMED_ASSISTANT = (
    "{% for m in messages %}<|im_start|>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>model\n{% endif %}"
)


def _chatml_with_tool_calls(call_format: str) -> str:
    """ChatML that prints tool calls with ``call_format`` (a Jinja expression over ``call``)."""
    return (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.tool_calls %}{% for call in m.tool_calls %}<tool_call>"
        + call_format
        + "</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


TOOLS_AS_JSON = _chatml_with_tool_calls("{{ call.function | tojson }}")
TOOLS_AS_PYTHON = _chatml_with_tool_calls("{{ call.function.name }}({{ call.function.arguments | tojson }})")


def _source(text: str, **special_tokens: str):
    return dataclasses.replace(template_from_text(text), special_tokens=dict(special_tokens))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# classification


def test_identical_templates_are_identical_on_every_builtin_fixture():
    report = templatekit.diff(_source(CHATML), _source(CHATML), now=NOW)
    assert report.identical and not report.changed
    assert {comparison.status for comparison in report.comparisons} == {IDENTICAL}
    assert report.summary()["identical"] == report.summary()["total"] > 10


def test_whitespace_only_change_is_classified_and_visible_in_the_diff():
    report = templatekit.diff(_source(CHATML), _source(CHATML_EXTRA_NEWLINE), ["multi-turn"], now=NOW)
    (comparison,) = report.comparisons
    assert comparison.status == WHITESPACE_ONLY and report.changed
    # The inserted blank line is a visible "↵" line of its own.
    assert "+↵" in comparison.unified_diff
    assert "<|im_end|>↵<|im_start|>assistant" in comparison.first_difference.a_excerpt
    assert "<|im_end|>↵↵<|im_start|>assistant" in comparison.first_difference.b_excerpt


def test_role_marker_change_is_different_and_the_diff_shows_the_marker():
    report = templatekit.diff(_source(CHATML), _source(CHATML_RENAMED_ASSISTANT), ["basic", "multi-turn"], now=NOW)
    statuses = {comparison.fixture: comparison.status for comparison in report.comparisons}
    assert statuses == {"basic": DIFFERENT, "multi-turn": DIFFERENT}
    lines = report.comparisons[0].unified_diff
    assert "-<|im_start|>assistant↵" in lines and "+<|im_start|>model↵" in lines


def test_tool_rendering_change_differs_only_on_tool_call_fixtures():
    report = templatekit.diff(_source(TOOLS_AS_JSON), _source(TOOLS_AS_PYTHON), ["basic", "tool-call"], now=NOW)
    statuses = {comparison.fixture: comparison.status for comparison in report.comparisons}
    assert statuses == {"basic": IDENTICAL, "tool-call": DIFFERENT}
    tool_call = report.comparisons[1]
    assert any(line.startswith("-<tool_call>{") for line in tool_call.unified_diff)
    assert any(line.startswith("+<tool_call>get_current_weather({") for line in tool_call.unified_diff)


def test_one_side_raising_and_both_raising_are_told_apart():
    raises = "{{ raise_exception('no system role') }}"
    other = "{{ raise_exception('something else') }}"
    one = templatekit.diff(_source(CHATML), _source(raises), ["basic"], now=NOW).comparisons[0]
    assert (one.status, one.raised_side) == (ONE_RAISED, "b")
    assert "no system role" in one.b.error_description
    same = templatekit.diff(_source(raises), _source(raises), ["basic"], now=NOW)
    assert same.comparisons[0].status == BOTH_RAISED_SAME and not same.changed
    different = templatekit.diff(_source(raises), _source(other), ["basic"], now=NOW)
    assert different.comparisons[0].status == BOTH_RAISED_DIFFERENT and different.changed


def test_both_sides_share_one_clock_by_default():
    dated = "{{ strftime_now('%H:%M:%S.%f') }}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert templatekit.diff(_source(dated), _source(dated), ["basic"]).identical


def test_side_by_side_pairs_visible_lines():
    rows = side_by_side("a\nb\n", "a\nc\n")
    assert [(row.tag, row.left, row.right) for row in rows] == [
        ("equal", "a↵", "a↵"), ("replace", "b↵", "c↵"), ("equal", "", ""),
    ]


def test_api_accepts_fixture_files_and_paths(tmp_path):
    a = _write(tmp_path / "a.jinja", CHATML)
    b = _write(tmp_path / "b.jinja", CHATML_RENAMED_ASSISTANT)
    conversation = _write(tmp_path / "mine.yaml", "name: mine\nmessages:\n  - {role: user, content: hi}\n")
    report = templatekit.diff(str(a), b, [str(conversation)], now=NOW)
    assert [(c.fixture, c.status) for c in report.comparisons] == [("mine", DIFFERENT)]
    assert report.a_label == str(a)


# ---------------------------------------------------------------------------------------------
# git revisions


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1",
           "HOME": str(repo)}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _write(root / "t.jinja", CHATML)
    model = root / "model"
    model.mkdir()
    _write(model / "tokenizer_config.json", json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>"}))
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    _write(root / "t.jinja", CHATML_RENAMED_ASSISTANT)
    monkeypatch.chdir(root)
    return root


def test_git_revision_against_working_file(repo, run):
    report = templatekit.diff("git:HEAD:t.jinja", "t.jinja", ["basic"], now=NOW)
    assert report.comparisons[0].status == DIFFERENT
    assert report.a_label == "git:HEAD:t.jinja"
    assert templatekit.diff("git:HEAD:t.jinja", "git:HEAD:t.jinja", ["basic"], now=NOW).identical
    result = run("diff", "git:HEAD:t.jinja", "t.jinja", "-f", "basic", "--no-color")
    assert result.exit_code == 1
    assert "--- git:HEAD:t.jinja (basic)" in result.output


def test_git_revision_of_a_config_file_and_a_model_directory(repo):
    from_file = templatekit.diff("git:HEAD:model/tokenizer_config.json", "model/tokenizer_config.json", ["basic"])
    assert from_file.identical
    from_directory = templatekit.diff("git:HEAD:model", "model", ["basic"])
    assert from_directory.identical


def test_git_revision_of_a_template_file_in_a_model_directory_gets_its_tokens(repo, run):
    """The working copy's model/chat_template.jinja renders with the directory's special tokens;
    the revision's copy came alone, so every fixture differed in its BOS."""
    with_bos = "{{ bos_token }}" + CHATML
    _write(repo / "model" / "tokenizer_config.json", json.dumps({"bos_token": "<|begin_of_text|>"}))
    _write(repo / "model" / "chat_template.jinja", with_bos)
    extra = repo / "model" / "additional_chat_templates"
    extra.mkdir()
    _write(extra / "tool_use.jinja", with_bos)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "template file")
    for path in ("model/chat_template.jinja", "model/additional_chat_templates/tool_use.jinja"):
        report = templatekit.diff(f"git:HEAD:{path}", path, ["basic"], now=NOW)
        (comparison,) = report.comparisons
        assert comparison.status == IDENTICAL, (path, comparison.a.text, comparison.b.text)
        assert report.a_placeholders == report.b_placeholders
        assert run("diff", f"git:HEAD:{path}", path).exit_code == 0


def test_git_errors_are_one_line_and_name_the_spec(repo, run, tmp_path):
    with pytest.raises(InputError, match=r"^git:nope:t\.jinja: unknown git revision 'nope'$"):
        templatekit.diff("git:nope:t.jinja", "t.jinja")
    with pytest.raises(InputError, match=r"^git:HEAD:missing\.jinja: no file or directory 'missing\.jinja'"):
        templatekit.diff("git:HEAD:missing.jinja", "t.jinja")
    with pytest.raises(InputError, match="expected git:REV:PATH"):
        templatekit.diff("git:HEAD", "t.jinja")
    result = run("diff", "git:nope:t.jinja", "t.jinja")
    assert result.exit_code == 2
    assert result.output.strip() == "templatekit: error: git:nope:t.jinja: unknown git revision 'nope'"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chdir(outside)
    with pytest.raises(InputError, match="is not inside a git repository"):
        templatekit.diff("git:HEAD:t.jinja", str(repo / "t.jinja"))


def test_git_model_directory_keeps_templates_with_unusual_file_names(repo):
    """git quotes and escapes names outside plain ASCII in its listings ("outil_\\303\\251.jinja"),
    so such additional templates were silently left out of the revision's model directory."""
    import contextlib

    from templatekit.comparison import open_source

    extra = repo / "model" / "additional_chat_templates"
    extra.mkdir()
    for name in ("outil_é", "two\nlines", "plain"):
        _write(extra / f"{name}.jinja", CHATML)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "named templates")
    with contextlib.ExitStack() as stack:
        at_revision = open_source("git:HEAD:model", stack)
        assert sorted(at_revision.templates) == sorted(open_source("model", stack).templates) == [
            "outil_é", "plain", "two\nlines"]


def test_a_git_revision_cannot_be_an_option(repo):
    with pytest.raises(InputError) as error:
        templatekit.diff("git:--output=written.txt:t.jinja", "t.jinja")
    assert str(error.value) == "git:--output=written.txt:t.jinja: '--output=written.txt' is not a git revision " \
                               "(it starts with '-')"
    assert not (repo / "written.txt").exists()


def test_render_errors_at_a_revision_point_at_the_revision(repo):
    _write(repo / "bad.jinja", "{{ messages[0].nope.deeper }}")
    _git(repo, "add", "bad.jinja")
    _git(repo, "commit", "-q", "-m", "bad")
    report = templatekit.diff("git:HEAD:bad.jinja", "t.jinja", ["basic"], now=NOW)
    assert report.comparisons[0].a.error_description.startswith("git:HEAD:bad.jinja:1: render error")


# ---------------------------------------------------------------------------------------------
# role wrappers

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}"
    "{% endif %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# (template, special tokens, start, {role: (prefix, suffix) or a status}, generation prompt, end)
WRAPPER_CASES = {
    "chatml": (CHATML, {}, "", {
        "system": ("<|im_start|>system\n", "<|im_end|>\n"),
        "user": ("<|im_start|>user\n", "<|im_end|>\n"),
        "assistant": ("<|im_start|>assistant\n", "<|im_end|>\n"),
        "tool": ("<|im_start|>tool\n", "<|im_end|>\n"),
    }, "<|im_start|>assistant\n", ""),
    "llama3": (LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, "<|begin_of_text|>", {
        "system": ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"),
        "user": ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
        "assistant": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
        "tool": ("<|start_header_id|>tool<|end_header_id|>\n\n", "<|eot_id|>"),
    }, "<|start_header_id|>assistant<|end_header_id|>\n\n", ""),
    "mistral": (MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"}, "<s>", {
        "system": WRAPPER_NOT_SUPPORTED,
        "user": ("[INST] ", " [/INST]"),
        "assistant": ("", "</s>"),
        "tool": WRAPPER_NOT_SUPPORTED,
    }, "", ""),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>"}, "<bos>", {
        "system": WRAPPER_NOT_SUPPORTED,
        "user": ("<start_of_turn>user\n", "<end_of_turn>\n"),
        "assistant": ("<start_of_turn>model\n", "<end_of_turn>\n"),
        "tool": ("<start_of_turn>tool\n", "<end_of_turn>\n"),
    }, "<start_of_turn>model\n", ""),
    "phi3": (PHI3, {"bos_token": "<s>", "eos_token": "<|endoftext|>"}, "", {
        "system": ("<|system|>\n", "<|end|>\n"),
        "user": ("<|user|>\n", "<|end|>\n"),
        "assistant": ("<|assistant|>\n", "<|end|>\n"),
        "tool": WRAPPER_NOT_RENDERED,
    }, "<|assistant|>\n", "<|endoftext|>"),
    "zephyr": (ZEPHYR, {"bos_token": "<s>", "eos_token": "</s>"}, "", {
        "system": ("<|system|>\n", "</s>\n"),
        "user": ("<|user|>\n", "</s>\n"),
        "assistant": ("<|assistant|>\n", "</s>\n"),
        "tool": WRAPPER_NOT_RENDERED,
    }, "<|assistant|>\n", ""),
}


@pytest.mark.parametrize("name", sorted(WRAPPER_CASES))
def test_role_wrappers_of_common_formats(name):
    text, tokens, start, roles, generation_prompt, end = WRAPPER_CASES[name]
    wrappers = role_wrappers(_source(text, **tokens), now=NOW)
    assert (wrappers.start, wrappers.end) == (start, end)
    assert wrappers.generation_prompt.prefix == generation_prompt
    for role, expected in roles.items():
        wrapper = wrappers.roles[role]
        if isinstance(expected, str):
            assert wrapper.status == expected, (role, wrapper)
            if expected == WRAPPER_NOT_RENDERED:
                assert (wrapper.prefix, wrapper.suffix) == ("", "")
        else:
            assert (wrapper.prefix, wrapper.suffix) == expected, (role, wrapper)
            assert wrapper.status == WRAPPER_OK


def test_not_supported_role_keeps_the_template_message():
    wrappers = role_wrappers(_source(GEMMA, bos_token="<bos>"), now=NOW)
    assert "System role not supported" in wrappers.roles["system"].note


def test_phi3_generation_prompt_is_reported_as_not_a_clean_suffix():
    wrappers = role_wrappers(_source(PHI3, eos_token="<|endoftext|>"), now=NOW)
    assert wrappers.generation_prompt.status == "unclear"
    assert "not a clean suffix" in wrappers.generation_prompt.note


def test_tool_call_printed_before_the_result_is_cut_after_the_assistant_turn():
    wrappers = role_wrappers(_source(TOOLS_AS_JSON), now=NOW)
    assert wrappers.roles["tool"] == dataclasses.replace(wrappers.roles["tool"], prefix="<|im_start|>tool\n",
                                                         suffix="<|im_end|>\n", status=WRAPPER_OK)


def test_compare_wrappers_marks_the_odd_one_out():
    found = [role_wrappers(_source(text), now=NOW) for text in (CHATML, CHATML, CHATML_RENAMED_ASSISTANT)]
    outliers = compare_wrappers(found)
    assert outliers["assistant"] == [False, False, True]
    assert outliers["user"] == [False, False, False]


def test_wrappers_cli_table_and_json(run, tmp_path):
    paths = [str(_write(tmp_path / f"{name}.jinja", text))
             for name, text in (("a", CHATML), ("b", CHATML), ("c", CHATML_RENAMED_ASSISTANT), ("g", GEMMA))]
    result = run("diff", "--wrappers", *paths, "--no-color")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assistant_rows = lines[lines.index("assistant") + 1: lines.index("tool")]
    assert assistant_rows[0].endswith("<|im_start|>assistant↵…<|im_end|>↵")
    assert assistant_rows[2].lstrip().startswith("≠") and "<|im_start|>model↵…<|im_end|>↵" in assistant_rows[2]
    assert "(not-supported: " in result.output and "System role not supported" in result.output
    data = json.loads(run("diff", "--wrappers", *paths, "--format", "json").output)
    assert data["schema_version"] == 1
    assert data["wrappers"][0]["roles"]["user"] == {
        "prefix": "<|im_start|>user\n", "suffix": "<|im_end|>\n", "status": "ok", "note": None}
    assert data["wrappers"][3]["roles"]["system"]["status"] == "not-supported"



def test_wrappers_of_a_template_that_spends_its_budget_say_failed_once(run, tmp_path):
    """A render that runs out of time says nothing about the roles: they used to read
    "not-supported", each after waiting out the budget again."""
    endless = _write(tmp_path / "endless.jinja",
                     "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                     "{% for m in messages %}{{ m.content }}{% endfor %}")
    started = time.monotonic()
    data = json.loads(run("diff", "--wrappers", str(endless), "--timeout", "1", "--format", "json").output)
    assert time.monotonic() - started < 6  # one budget spent, not one per probe
    roles = data["wrappers"][0]["roles"]
    assert {wrapper["status"] for wrapper in roles.values()} == {"failed"}
    assert "render took longer than 1 s" in roles["user"]["note"]
    assert data["wrappers"][0]["generation_prompt"]["status"] == "failed"


# ---------------------------------------------------------------------------------------------
# tokens


def _model_dir(path, chat_template: str, marker_is_special: bool):
    """A model directory with a WordLevel tokenizer; ``<|im_start|>`` is one special token or three pieces."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    words = ["<unk>", "<|im_end|>", "<|", "im_start", "|>", "user", "assistant", "Hello", "hi", "there", "?"]
    tokenizer = Tokenizer(WordLevel({word: index for index, word in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    special = [AddedToken("<|im_end|>", special=True)]
    if marker_is_special:
        special.append(AddedToken("<|im_start|>", special=True))
    tokenizer.add_special_tokens(special)
    path.mkdir()
    tokenizer.save(str(path / "tokenizer.json"))
    _write(path / "tokenizer_config.json", json.dumps({"chat_template": chat_template, "eos_token": "<|im_end|>"}))
    return path


def test_token_diff_reveals_a_marker_split_into_pieces(tmp_path):
    whole = _model_dir(tmp_path / "whole", CHATML, marker_is_special=True)
    split = _model_dir(tmp_path / "split", CHATML, marker_is_special=False)
    conversation = _write(tmp_path / "c.yaml", "name: hello\nmessages:\n  - {role: user, content: 'Hello there ?'}\n")
    report = templatekit.diff(whole, split, [str(conversation)], tokens=True, now=NOW)
    (comparison,) = report.comparisons
    # The text is the same; only the tokens tell the two models apart.
    assert comparison.status == IDENTICAL and report.changed
    assert report.summary()["token-different"] == 1
    first = comparison.tokens.changes[0]
    assert first.a_pieces == ["<|im_start|>"] and first.b_pieces == ["<|", "im_start", "|>"]
    same = templatekit.diff(whole, whole, [str(conversation)], tokens=True, now=NOW)
    assert same.identical and same.comparisons[0].tokens.identical


def test_tokens_cli_output_and_missing_tokenizer(tmp_path, run):
    whole = _model_dir(tmp_path / "whole", CHATML, marker_is_special=True)
    split = _model_dir(tmp_path / "split", CHATML, marker_is_special=False)
    result = run("diff", str(whole), str(split), "-f", "basic", "--tokens", "--no-color")
    assert result.exit_code == 1
    assert "tokens: a has" in result.output
    assert "- '<|im_start|>'=" in result.output and "+ '<|'=2 'im_start'=3 '|>'=4" in result.output
    bare = _write(tmp_path / "bare.jinja", CHATML)
    missing = run("diff", str(whole), str(bare), "-f", "basic", "--tokens")
    assert missing.exit_code == 2
    assert missing.output.count("\n") == 1 and "has no tokenizer.json" in missing.output
    # Without --tokens a side without a tokenizer is fine.
    assert run("diff", str(whole), str(bare), "-f", "basic").exit_code == 0



def test_tokens_refuse_tokenizers_they_cannot_use_in_one_line(tmp_path, run):
    whole = _model_dir(tmp_path / "whole", CHATML, marker_is_special=True)
    # Loads, but cannot encode a word outside its vocabulary: its unknown token is not in it.
    broken = _model_dir(tmp_path / "broken", CHATML, marker_is_special=True)
    data = json.loads((broken / "tokenizer.json").read_text())
    data["model"]["unk_token"] = "[MISSING]"
    (broken / "tokenizer.json").write_text(json.dumps(data))
    result = run("diff", str(whole), str(broken), "-f", "basic", "--tokens")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"{broken / 'tokenizer.json'}: cannot tokenize a render with it: WordLevel error" in result.output
    assert "internal error" not in result.output
    # A tokenizer.json that is there but is not a file is named as such, not as missing.
    odd = _model_dir(tmp_path / "odd", CHATML, marker_is_special=True)
    (odd / "tokenizer.json").unlink()
    (odd / "tokenizer.json").mkdir()
    result = run("diff", str(whole), str(odd), "-f", "basic", "--tokens")
    assert result.exit_code == 2
    assert f"{odd / 'tokenizer.json'}: is not a readable regular file" in result.output


def test_tokens_say_a_gguf_vocabulary_is_not_read(tmp_path, run):
    from gguf import GGUFWriter

    path = tmp_path / "model.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_chat_template(CHATML)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    result = run("diff", str(path), str(path), "-f", "basic", "--tokens")
    assert result.exit_code == 2
    assert f"{path}: is a GGUF file: --tokens tokenizes with a tokenizer.json" in result.output

def test_transformers_is_imported_only_for_tokens(tmp_path):
    a = _write(tmp_path / "a.jinja", CHATML)
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom templatekit.cli import main\n"
        f"result = CliRunner().invoke(main, ['diff', {str(a)!r}, {str(a)!r}, '-f', 'basic'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"CliRunner().invoke(main, ['diff', '--wrappers', {str(a)!r}])\n"
        "heavy = sorted(name for name in ('transformers', 'torch', 'hypothesis') if name in sys.modules)\n"
        "print(heavy)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_exit_codes(run, tmp_path):
    a = str(_write(tmp_path / "a.jinja", CHATML))
    b = str(_write(tmp_path / "b.jinja", CHATML_EXTRA_NEWLINE))
    same = run("diff", a, a, "-f", "basic", "--no-color")
    assert same.exit_code == 0
    assert "= basic: identical" in same.output
    assert same.output.rstrip().endswith("\n1 fixture: 1 identical — renders identical")
    changed = run("diff", a, b, "-f", "basic", "-f", "multi-turn", "--no-color")
    assert changed.exit_code == 1
    assert "≠ basic: whitespace-only" in changed.output
    assert "2 fixtures: 2 whitespace-only — renders differ" in changed.output
    assert "\x1b[" not in changed.output
    colored = run("diff", a, b, "-f", "basic", "--color")
    assert "\x1b[32m+↵\x1b[0m" in colored.output


def test_cli_side_by_side(run, tmp_path):
    a = str(_write(tmp_path / "a.jinja", CHATML))
    b = str(_write(tmp_path / "b.jinja", CHATML_RENAMED_ASSISTANT))
    result = run("diff", a, b, "-f", "basic", "--side-by-side", "--no-color")
    assert result.exit_code == 1
    row = next(line for line in result.output.splitlines() if line.startswith("    <|im_start|>assistant↵"))
    assert row.endswith(" | <|im_start|>model↵")


def test_cli_json_schema(run, tmp_path):
    a = str(_write(tmp_path / "a.jinja", CHATML))
    b = str(_write(tmp_path / "b.jinja", CHATML_RENAMED_ASSISTANT))
    result = run("diff", a, b, "-f", "basic", "-f", "tool-call", "--format", "json", "--now", "2025-01-15T10:30:00")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert set(data) == {"schema_version", "a", "b", "changed", "compared", "not_compared_reason",
                         "placeholder_tokens", "summary", "token_note", "fixtures"}
    assert data["schema_version"] == 1 and data["changed"] is True and data["compared"] is True
    assert data["not_compared_reason"] is None
    # CHATML names no special token, so no placeholder is worth mentioning.
    assert data["placeholder_tokens"] == {"a": {}, "b": {}}
    assert data["summary"] == {"identical": 0, "whitespace-only": 0, "different": 2, "one-raised": 0,
                               "both-raised-same": 0, "both-raised-different": 0, "token-different": 0, "total": 2}
    fixture = data["fixtures"][0]
    assert set(fixture) == {"fixture", "status", "changed", "raised_side", "a", "b", "first_difference",
                            "unified_diff", "tokens"}
    assert fixture["a"]["text"].startswith("<|im_start|>user\n") and fixture["a"]["error"] is None
    assert set(fixture["first_difference"]) == {"offset", "line", "a_excerpt", "b_excerpt"}
    assert fixture["tokens"] is None


def test_cli_template_names(run, tmp_path):
    config = _write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": [
        {"name": "default", "template": CHATML}, {"name": "other", "template": CHATML_RENAMED_ASSISTANT}]}))
    plain = str(_write(tmp_path / "plain.jinja", CHATML))
    assert run("diff", str(config), plain, "-f", "basic").exit_code == 0
    assert run("diff", str(config), plain, "-f", "basic", "--template-name-a", "other").exit_code == 1
    assert run("diff", str(config), str(config), "-f", "basic", "--template-name-b", "other").exit_code == 1
    bad = run("diff", str(config), plain, "-f", "basic", "--template-name-a", "nope")
    assert bad.exit_code == 2 and "no chat template named 'nope'" in bad.output


def test_cli_bad_input_is_one_line_exit_2(run, tmp_path):
    a = str(_write(tmp_path / "a.jinja", CHATML))
    missing = run("diff", a, str(tmp_path / "missing.jinja"))
    assert missing.exit_code == 2
    assert missing.output == f"templatekit: error: {tmp_path / 'missing.jinja'}: no such file or directory\n"
    fixture = run("diff", a, a, "-f", "no-such-fixture")
    assert fixture.exit_code == 2 and fixture.output.count("\n") == 1
    three = run("diff", a, a, a)
    assert three.exit_code == 2 and "exactly two sources" in three.output


# ---------------------------------------------------------------------------------------------
# sources without special tokens, --var, nothing to compare

# Llama 3 as Meta ships it: BOS from the tokenizer, each turn closed by <|eot_id|>.
LLAMA3_EOT = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# The review's edit: every turn closed by <|eom_id|> instead.
LLAMA3_EOM = LLAMA3_EOT.replace("<|eot_id|>", "<|eom_id|>")


def test_bare_jinja_files_render_with_placeholder_tokens_so_a_real_change_shows(tmp_path, run):
    """Both files lack a tokenizer, so bos_token was undefined on both sides: every fixture
    "both raised the same error" and the diff passed a changed end-of-turn token."""
    a = _write(tmp_path / "a.jinja", LLAMA3_EOT)
    b = _write(tmp_path / "b.jinja", LLAMA3_EOM)
    report = templatekit.diff(str(a), str(b), ["basic"], now=NOW)
    (comparison,) = report.comparisons
    assert comparison.status == DIFFERENT and report.changed
    assert comparison.a.text.startswith("<s><|start_header_id|>user")
    assert report.a_placeholders == report.b_placeholders == {"bos_token": "<s>"}
    result = run("diff", str(a), str(b), "--no-color")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"a: {a}"
    assert lines[1] == "   this source has no special tokens, so placeholders stand in: bos_token=<s> " \
                       "(--var NAME=VALUE gives the real value)"
    assert "-<s><|start_header_id|>user<|end_header_id|>↵" not in result.output  # the BOS line is unchanged
    assert any(line.startswith("    +") and "<|eom_id|>" in line for line in lines)
    assert "renders differ" in lines[-1] and "both-raised" not in result.output


def test_placeholders_only_for_a_source_without_special_tokens(tmp_path):
    """A tokenizer config that names some tokens but no BOS renders as transformers would: the
    template fails at bos_token, on that side only."""
    model = tmp_path / "model"
    model.mkdir()
    _write(model / "tokenizer_config.json", json.dumps({"chat_template": LLAMA3_EOT, "eos_token": "<|eot_id|>"}))
    bare = _write(tmp_path / "bare.jinja", LLAMA3_EOT)
    report = templatekit.diff(str(model), str(bare), ["basic"], now=NOW)
    (comparison,) = report.comparisons
    assert (comparison.status, comparison.raised_side) == (ONE_RAISED, "a")
    assert "'bos_token' is undefined" in comparison.a.error_description
    assert report.a_placeholders == {} and report.b_placeholders == {"bos_token": "<s>"}
    # A token given by the caller is the caller's, not a placeholder.
    given = templatekit.diff(str(bare), str(bare), ["basic"], special_tokens={"bos_token": "<|begin_of_text|>"},
                             now=NOW)
    assert given.comparisons[0].a.text.startswith("<|begin_of_text|><|start_header_id|>")
    assert given.a_placeholders == {}


def test_var_applies_to_both_sides_and_overrides_a_placeholder(tmp_path, run):
    greeting = "{{ bos_token }}{% if formal is sameas true %}Dear {% endif %}{{ greeting }}: " \
               "{% for m in messages %}{{ m.content }}{% endfor %}"
    a = str(_write(tmp_path / "a.jinja", greeting))
    b = str(_write(tmp_path / "b.jinja", greeting.replace(": ", "; ")))
    data = json.loads(run("diff", a, a, "-f", "basic", "--format", "json", "--var", "greeting=Hello",
                          "--var", "formal=true", "--var", "bos_token=<|begin_of_text|>").output)
    text = data["fixtures"][0]["a"]["text"]
    assert text.startswith("<|begin_of_text|>Dear Hello: What is the capital")  # JSON true, not the string
    assert data["fixtures"][0]["b"]["text"] == text
    assert data["placeholder_tokens"] == {"a": {}, "b": {}}
    changed = run("diff", a, b, "-f", "basic", "--var", "greeting=Hello", "--no-color")
    assert changed.exit_code == 1 and "-<s>Hello:·What" in changed.output and "+<s>Hello;·What" in changed.output
    bad = run("diff", a, b, "--var", "no-equals-sign")
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output


def test_nothing_compared_when_no_fixture_renders_on_either_side(tmp_path, run):
    needs_variable = "{{ greeting + ': ' }}{% for m in messages %}{{ m.content }}{% endfor %}"
    a = str(_write(tmp_path / "a.jinja", needs_variable))
    report = templatekit.diff(a, a, ["basic", "multi-turn"], now=NOW)
    assert {c.status for c in report.comparisons} == {BOTH_RAISED_SAME}
    assert not report.changed and not report.compared and not report.identical
    assert report.not_compared_reason == (
        f"every fixture failed on both sides; first error (basic): {a}:1: render error (UndefinedError): "
        "'greeting' is undefined")
    result = run("diff", a, a, "-f", "basic", "-f", "multi-turn", "--no-color")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "? basic: both-raised-same" in lines and "renders identical" not in result.output
    assert lines[-1] == f"2 fixtures: 2 both-raised-same — nothing could be compared: {report.not_compared_reason}"
    data = json.loads(run("diff", a, a, "-f", "basic", "--format", "json").output)
    assert (data["changed"], data["compared"]) == (False, False)
    assert "'greeting' is undefined" in data["not_compared_reason"]
    # Given the variable, the same command compares and passes.
    assert run("diff", a, a, "-f", "basic", "--var", "greeting=hi").exit_code == 0


def test_the_same_error_on_both_sides_is_unchanged_when_other_fixtures_rendered(tmp_path, run):
    """A template rejecting a role it does not support rejects it on both sides: that fixture is
    legitimately unchanged, and the verdict says it compared only the error."""
    gemma = str(_write(tmp_path / "gemma.jinja", GEMMA))
    report = templatekit.diff(gemma, gemma, ["basic", "system-multi-turn"], now=NOW)
    assert [c.status for c in report.comparisons] == [IDENTICAL, BOTH_RAISED_SAME]
    assert report.compared and report.identical
    result = run("diff", gemma, gemma, "-f", "basic", "-f", "system-multi-turn", "--no-color")
    assert result.exit_code == 0
    assert "= system-multi-turn: both-raised-same" in result.output
    assert result.output.rstrip().endswith(
        "2 fixtures: 1 identical, 1 both-raised-same — renders identical "
        "(1 fixture raised the same error on both sides, so only the error was compared)")


# ---------------------------------------------------------------------------------------------
# wrappers: one template, any source kind

# SmolLM2's template: ChatML with a default system prompt, and the model's BOS is <|im_start|>,
# which the template writes by hand to open every turn (it never prints bos_token).
SMOL = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are SmolLM.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_wrappers_of_one_template_agree_whatever_the_source_kind(tmp_path, run):
    """The system prefix lost its <|im_start|> for a source whose BOS is <|im_start|>: the BOS was
    stripped by its text, though the template never printed bos_token."""
    bare = _write(tmp_path / "smol.jinja", SMOL)
    model = tmp_path / "model"
    model.mkdir()
    _write(model / "tokenizer_config.json", json.dumps(
        {"chat_template": SMOL, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}))
    found = [role_wrappers(str(spec), now=NOW) for spec in (bare, model)]
    assert found[0].roles == found[1].roles
    assert found[1].roles["system"] == dataclasses.replace(found[1].roles["system"], prefix="<|im_start|>system\n",
                                                           suffix="<|im_end|>\n", status=WRAPPER_OK)
    assert found[0].start == found[1].start == "<|im_start|>system\nYou are SmolLM.<|im_end|>\n"
    result = run("diff", "--wrappers", str(bare), str(model), "--no-color")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for row in ("start", "system", "user", "assistant", "tool", "generation_prompt", "end"):
        at = lines.index(row)
        cells = [line.split(None, 1)[1] for line in lines[at + 1: at + 3]]
        assert cells[0] == cells[1], (row, cells)


def test_wrappers_strip_bos_only_where_the_template_prints_bos_token():
    # Same BOS text, printed from the variable: it is the conversation's start, not the system prefix.
    printed = "{{ bos_token }}" + SMOL
    wrappers = role_wrappers(_source(printed, bos_token="<|im_start|>"), now=NOW)
    assert wrappers.roles["system"].prefix == "<|im_start|>system\n"
    assert wrappers.start.startswith("<|im_start|><|im_start|>system\nYou are SmolLM.")


# Llama 3.1 as NousResearch ships it: the assistant header follows every conversation, whatever
# add_generation_prompt says.
ALWAYS_PROMPTED = LLAMA3_EOT.replace(
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}")


def test_wrappers_of_a_template_that_always_adds_the_generation_prompt():
    """The generation prompt changes nothing, so it cannot show where the user's turn ends: the
    assistant header used to be read as part of the user's suffix and every role came out unclear."""
    assert ALWAYS_PROMPTED != LLAMA3_EOT
    wrappers = role_wrappers(_source(ALWAYS_PROMPTED, bos_token="<|begin_of_text|>"), now=NOW)
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    assert wrappers.start == "<|begin_of_text|>"
    assert wrappers.end == header.format("assistant")
    assert wrappers.generation_prompt.prefix == ""
    for role in ("system", "user", "assistant"):
        assert (wrappers.roles[role].prefix, wrappers.roles[role].suffix, wrappers.roles[role].status) == (
            header.format(role), "<|eot_id|>", WRAPPER_OK), role


def test_wrappers_of_bare_files_use_placeholders_and_say_so(tmp_path, run):
    """Without a tokenizer every probe failed at bos_token and every role read "not-supported"."""
    path = str(_write(tmp_path / "llama3.jinja", LLAMA3_EOT))
    wrappers = role_wrappers(path, now=NOW)
    assert wrappers.placeholders == {"bos_token": "<s>"} and wrappers.start == "<s>"
    assert all(wrapper.status == WRAPPER_OK for wrapper in wrappers.roles.values() if wrapper is not None)
    result = run("diff", "--wrappers", path, "--no-color")
    assert "not-supported" not in result.output
    assert f"{path}: this source has no special tokens, so placeholders stand in: bos_token=<s>" in result.output
    assert "most of the 1 sources" not in result.output
    real = run("diff", "--wrappers", path, "--var", "bos_token=<|begin_of_text|>", "--format", "json")
    data = json.loads(real.output)["wrappers"][0]
    assert (data["start"], data["placeholder_tokens"]) == ("<|begin_of_text|>", {})
