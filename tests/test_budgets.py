"""The render budgets refuse only what is really over them.

A guard that overestimates refuses benign templates (printing a conversation with newlines or
non-ASCII text, ``tools|tojson(indent=4)``), which the project forbids; one that underestimates
lets a hostile template build the huge value before anything refuses it. Sizes are therefore
measured exactly (JSON) or within a few characters per container (printed values), and the
default time budget follows the size of the conversation.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from templatekit import guards
from templatekit.conversation import Conversation
from templatekit.guards import Budget, SizeMemo, json_size_estimate, text_size_estimate
from templatekit.rendering import render_template

from .conftest import FIXED_NOW, corpus_dir, requires_corpus

USER = [{"role": "user", "content": "hi"}]


def render(template, messages=USER, **options):
    budget = options.pop("budget", None)
    extra = {"budget": budget} if budget is not None else {}
    return render_template(template, Conversation(messages=messages, **options), now=FIXED_NOW, **extra)


def multi_line_tools(count: int) -> list[dict]:
    """Tool schemas as agents ship them: descriptions of several lines, nested parameters."""
    return [
        {"type": "function", "function": {
            "name": f"tool_{index}", "description": "Does a thing.\n" * 40,
            "parameters": {"type": "object", "properties": {
                "path": {"type": "string", "description": "File path.\nAbsolute."},
                "options": {"type": "object", "properties": {
                    "recursive": {"type": "boolean", "description": "Recurse\ninto dirs"}}},
            }, "required": ["path"]},
        }}
        for index in range(count)
    ]


# ---------------------------------------------------------------------------------------------
# sizes: exact for JSON, within a few characters for printed values


_ALPHABET = ["a", " ", "\n", "\t", "\r", "\x00", "\x1f", "\x7f", '"', "'", "\\", "é", "中", "\u2028",
             "\u200b", "😀", "\U000e0001", "\ud800"]


def _random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.choice([0, 1, 5, 40])))
        return rng.choice([None, True, False, rng.randint(-10**6, 10**6), 10**40, rng.random() * 1e30,
                           float("nan"), float("-inf"), text, text])
    if roll < 0.7:
        items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return items if rng.random() < 0.7 else tuple(items)
    keys = [rng.choice(["k", "é\n", 7, None, True, 2.5]) for _ in range(rng.randint(0, 4))]
    return {key: _random_value(rng, depth + 1) for key in keys}


@pytest.mark.parametrize("ensure_ascii", [False, True])
@pytest.mark.parametrize("indent", [None, 0, 4, "\t", -1])
@pytest.mark.parametrize("separators", [None, (",", ":"), (" ,  ", " :: ")])
def test_json_size_is_exactly_what_json_dumps_writes(ensure_ascii, indent, separators):
    rng = random.Random(f"{ensure_ascii}{indent}{separators}")
    memo = SizeMemo()
    for _ in range(300):
        value = _random_value(rng)
        shared = [value, {"again": value}, [[value]]]  # the same objects at other nesting levels
        for data in (value, shared):
            expected = len(json.dumps(data, ensure_ascii=ensure_ascii, indent=indent, separators=separators))
            assert json_size_estimate(data, 10**9, memo, ensure_ascii=ensure_ascii, indent=indent,
                                      separators=separators) == expected, data


def test_printed_size_is_an_upper_bound_within_a_few_characters_per_container():
    rng = random.Random(7)
    memo = SizeMemo()
    for _ in range(2000):
        value = _random_value(rng)
        printed = str(value)
        containers = printed.count("[") + printed.count("{") + printed.count("(") + 1
        estimate = text_size_estimate(value, 10**9, memo)
        assert len(printed) <= estimate <= len(printed) + 16 * containers + printed.count("'"), value


@pytest.mark.parametrize("text", ["a\n" * 100_000, "中" * 200_000, "tab\there\r\n" * 20_000, "\x01\u200b" * 50_000],
                         ids=["newlines", "cjk", "tabs-crlf", "control-and-format"])
def test_long_strings_that_need_escapes_are_measured_exactly(text):
    data = [{"role": "user", "content": text}]
    for ensure_ascii in (False, True):
        assert json_size_estimate(data, 10**9, ensure_ascii=ensure_ascii) == len(json.dumps(data, ensure_ascii=ensure_ascii))
    assert len(str(data)) <= text_size_estimate(data, 10**9) <= len(str(data)) + 2 * 16  # two containers


def test_nesting_of_any_depth_is_measured():
    chain = "x" * 1000
    for _ in range(500):
        chain = [chain]
    assert text_size_estimate(chain, 10**9) >= len(str(chain))
    assert json_size_estimate(chain, 10**9) == len(json.dumps(chain))


def test_measuring_stops_once_past_the_limit():
    # 1000 x 1000 references to a 1000-character string: 10^9 characters printed, a few thousand
    # steps to find out.
    row = ["x\n" * 500] * 1000
    table = [row] * 1000
    started = time.monotonic()
    assert text_size_estimate(table, 10_000_000) > 10_000_000
    assert json_size_estimate(table, 10_000_000, indent=2) > 10_000_000
    assert time.monotonic() - started < 0.5


# ---------------------------------------------------------------------------------------------
# benign inputs render exactly as transformers' tojson (json.dumps) or print (str) them


@pytest.mark.parametrize("content", ["a\n" * 420_000, "中" * 840_000, "line of a pasted file\n" * 40_000],
                         ids=["newlines", "cjk", "pasted-file"])
def test_tojson_of_long_multiline_or_non_ascii_messages_renders(content):
    messages = [{"role": "user", "content": content}]
    result = render("{{ messages|tojson }}", messages)
    assert result.ok, result.error
    assert result.text == json.dumps(messages, ensure_ascii=False)


def test_indented_tojson_of_many_multiline_tools_renders():
    tools = multi_line_tools(45)
    for template, expected in (
        ("{{ tools|tojson(indent=4) }}", json.dumps(tools, ensure_ascii=False, indent=4)),
        ("{{ tools|tojson(indent=2, ensure_ascii=True) }}", json.dumps(tools, indent=2)),
        ("{% for t in tools %}{{ t|tojson(separators=(',', ':')) }}\n{% endfor %}",
         "".join(json.dumps(t, separators=(",", ":"), ensure_ascii=False) + "\n" for t in tools)),
    ):
        result = render(template, tools=tools)
        assert result.ok, result.error
        assert result.text == expected


def test_printing_containers_with_newlines_and_non_ascii_text_renders():
    messages = [{"role": "user", "content": "中文\n" * 300_000}]
    for template in ("{{ messages }}", "{{ messages|string }}", "{{ messages[0] ~ '' }}", "{{ [messages]|join(', ') }}"):
        result = render(template, messages)
        assert result.ok, (template, result.error)
    assert render("{{ messages }}", messages).text == str(messages)


def test_output_exactly_at_the_budget_renders_and_one_more_character_is_refused():
    messages = [{"role": "user", "content": "line\n" * 1000 + "中文" * 500}]
    size = len(json.dumps(messages, ensure_ascii=False, indent=4))
    at_budget = render("{{ messages|tojson(indent=4) }}", messages, budget=Budget(max_output=size))
    assert at_budget.ok, at_budget.error
    assert len(at_budget.text) == size
    over = render("{{ messages|tojson(indent=4) }}", messages, budget=Budget(max_output=size - 1))
    assert over.error.kind == "budget"
    assert f"|tojson result of {size:,} characters" in over.error.message


def test_wordwrap_indent_and_translate_of_long_benign_text_render():
    budget = Budget(max_output=200_000)
    paragraph = "A long line of pasted prose that keeps going and going. " * 2500  # 142,500 characters
    wrapped = render("{{ messages[0].content|wordwrap(80) }}", [{"role": "user", "content": paragraph}], budget=budget)
    assert wrapped.ok, wrapped.error
    indented = render("{{ messages[0].content|indent(2) }}", [{"role": "user", "content": "x\n" * 40_000}], budget=budget)
    assert indented.ok, indented.error
    assert indented.text == "x\n" + "  x\n" * 39_999
    quoted = 'He said "yes". ' * 9000  # 135,000 characters, 18,000 quotes
    escaped = render("{{ messages[0].content.translate({34: '\\\\\"'}) }}", [{"role": "user", "content": quoted}], budget=budget)
    assert escaped.ok, escaped.error
    assert escaped.text == quoted.replace('"', '\\"')


@requires_corpus
@pytest.mark.parametrize("template_name, conversation", [
    ("ibm-granite-granite-3.1-8b-instruct.jinja",
     lambda: Conversation(messages=USER, tools=multi_line_tools(45), add_generation_prompt=True)),
    ("Qwen-Qwen2.5-7B-Instruct.jinja",
     lambda: Conversation(messages=[
         {"role": "user", "content": "write it"},
         {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
             "name": "write_file", "arguments": {"path": "a.py", "content": "def f():\n    return 1\n" * 40_000}}}]},
         {"role": "tool", "content": "ok"}], add_generation_prompt=True)),
])
def test_real_templates_with_large_tool_inputs_match_transformers(reference, template_name, conversation):
    text = (corpus_dir() / template_name).read_text(encoding="utf-8")
    conversation = conversation()
    expected, error = reference.render(text, conversation)
    assert error is None
    result = render_template(text, conversation, special_tokens=reference.special_tokens, now=FIXED_NOW)
    assert result.ok, result.error
    assert result.text == expected


# ---------------------------------------------------------------------------------------------
# hostile values are still refused before they are built


@pytest.mark.parametrize("template", [
    # separators are part of the JSON: a million of them, a thousand characters each
    "{{ ([0] * 1000000)|tojson(separators=('x' * 1000, ':')) }}",
    "{{ ([0] * 1000000)|tojson(separators=['x' * 1000, ':']|map('string')) }}",
    # every line of a deep structure is indented by a long indent string
    "{% set a = [[[[[[1]]]]]] * 1000 %}{{ (a * 100)|tojson(indent='x' * 100) }}",
    # str.splitlines breaks at \r, \x0b, \x1c, ... too, and |indent indents each of those lines
    "{{ ('a\\r' * 100000)|indent(100000) }}",
    "{{ ('\u2028' * 100000)|indent(100000) }}",
    # a namespace printed once, then grown: its remembered size must not be reused
    "{% set ns = namespace(x='a') %}{{ [ns]|length }}{{ ([ns] ~ '')|length }}{% set ns.x = 'b' * 100000 %}"
    "{{ ([ns] * 1000 ~ '')|length }}",
    # deeper than a recursive measurement would go
    "{% set ns = namespace(v='x' * 1000) %}{% for i in range(300) %}{% set ns.v = [ns.v] %}{% endfor %}"
    "{{ ([ns.v] * 10000)|tojson|length }}",
    "{{ ('ab' * 2000000).translate({97: 'x' * 1000}) }}",
])
def test_hostile_sizes_are_refused_quickly(template):
    started = time.monotonic()
    result = render(template)
    assert time.monotonic() - started < 2.0
    assert result.error is not None and result.error.kind == "budget", result.error or result.text[:80]
    assert "exceeds the size budget" in result.error.message


# ---------------------------------------------------------------------------------------------
# time


def _conversation(count: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are helpful."}]
    for index in range(count // 2):
        messages += [{"role": "user", "content": f"Question {index}"}, {"role": "assistant", "content": f"Answer {index}."}]
    return messages + [{"role": "user", "content": "bye"}]


def test_default_time_budget_is_short_for_short_conversations_and_grows_with_long_ones():
    assert guards.render_seconds(3, 200) == pytest.approx(2.0, abs=0.01)
    assert guards.render_seconds(40, 20_000) < 2.5
    assert guards.render_seconds(2002, 30_000) > 20  # the slowest real template needs about 7 s here
    assert guards.render_seconds(11, 3_200_000) > 60  # a template looping over characters: about 25 s
    assert guards.render_seconds(10**6, 10**9) == guards.MAX_DEFAULT_SECONDS
    assert Budget().seconds_for(2002, 30_000) == guards.render_seconds(2002, 30_000)
    assert Budget(seconds=0.5).seconds_for(2002, 30_000) == 0.5  # an explicit budget is the budget


# Looks through the whole conversation for every message, as real templates do.
QUADRATIC = "{% for m in messages %}{% for n in messages %}{% endfor %}{% endfor %}done"


def test_renders_get_the_default_budget_for_their_own_conversation(monkeypatch):
    # With the base shrunk to nothing, only the allowance for the conversation's length remains:
    # a long conversation still renders, while a loop that never ends on a short one is stopped.
    monkeypatch.setattr(guards, "BASE_SECONDS", 0.0)
    long_conversation = _conversation(800)
    result = render(QUADRATIC, long_conversation)
    assert result.ok, result.error
    started = time.monotonic()
    endless = render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", USER)
    assert time.monotonic() - started < 0.5
    assert endless.error.kind == "budget"
    assert render(QUADRATIC, long_conversation, budget=Budget(seconds=0.01)).error.kind == "budget"


ENDLESS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def test_running_out_of_time_names_the_budget_and_no_command():
    result = render(ENDLESS, USER, budget=Budget(seconds=0.1))
    assert result.error.kind == "budget" and result.error.out_of_time
    message = result.error.message
    assert message == "render took longer than 0.1 s (its time budget)"
    assert "never finishes" not in message  # a long benign input runs out of time the same way


@pytest.mark.parametrize("command", [["render"], ["diff", "{template}"]], ids=["render", "diff"])
def test_cli_timeout_message_names_the_option_where_there_is_one(tmp_path, command):
    template = tmp_path / "slow.jinja"
    template.write_text(ENDLESS, encoding="utf-8")
    arguments = [part.format(template=template) for part in command]
    completed = subprocess.run(
        [sys.executable, "-m", "templatekit", *arguments, str(template), "--fixture", "basic", "--no-color",
         "--timeout", "0.2"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 1
    assert "render took longer than 0.2 s (its time budget); allow more with --timeout SECONDS" in completed.stdout


def test_lint_does_not_offer_an_option_it_lacks(tmp_path):
    template = tmp_path / "slow.jinja"
    template.write_text(ENDLESS + "{{ messages[0].content }}", encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "templatekit", "lint", "--no-cache", "--select", "TK6", str(template)],
        capture_output=True, text=True, timeout=60,
    )
    assert "render took longer than 1 s (its time budget)" in completed.stdout
    assert "--timeout" not in completed.stdout + completed.stderr
