"""Where behavioural findings (TK6xx) sit, and what their messages say about places.

A finding from a failing render sits on the line the render stopped at; any other sits on the
first place in the template's code (not its printed text, prose in string literals, comments or
raw blocks) that reads what the rule is about. Messages never name Jinja's internal template
name (``<template>``), and never a line of their own that could disagree with the finding's.
"""

from __future__ import annotations

import json
import re

from templatekit.behaviour import behaviour_of
from templatekit.lint.config import LintConfig
from templatekit.lint.engine import run_rules
from templatekit.lint.registry import all_rules, find_rule
from templatekit.lint.rules.behaviour import finding_position
from templatekit.lint.runner import Linter
from templatekit.lint.target import LintTarget

# messages[0] is read unguarded on line 1 (only when tools are given) and on line 3 (otherwise):
# the fixtures without tools, and the empty conversation, fail on line 3.
FAILS_ON_LINE_3 = (
    "{% if tools %}{{ messages[0]['content'] if messages[0]['role'] == 'system' else '' }}"
    "{% for t in tools %}{{ t.function.name }}{% endfor %}\n"
    "{% else %}\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}\n"
    "{% endif %}\n"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
)

# Tool-call content concatenated on line 3, read safely on line 1.
NULL_CONTENT_ON_LINE_3 = (
    "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}\n"
    "{% for t in tools or [] %}{{ t.function.name }}{% endfor %}\n"
    "{% for m in messages %}{{ '<|' + m.role + '|>' + m.content }}"
    "{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}{% endfor %}\n"
    "{% endfor %}"
)

BEHAVIOURAL = [rule() for rule in all_rules() if getattr(rule, "behavioural", False)]


def behavioural_findings(text: str) -> dict:
    return {d.code: d for d in run_rules(LintTarget(text), BEHAVIOURAL)}


def test_a_failing_render_puts_the_finding_on_the_failing_line():
    found = behavioural_findings(FAILS_ON_LINE_3)
    assert (found["TK611"].line, found["TK611"].column) == (3, 7)  # at `messages[` on that line
    found = behavioural_findings(NULL_CONTENT_ON_LINE_3)
    assert (found["TK606"].line, found["TK606"].column) == (3, 52)  # at `content` on that line


def test_messages_name_no_internal_template_and_no_line_of_their_own():
    for text in (FAILS_ON_LINE_3, NULL_CONTENT_ON_LINE_3):
        for diagnostic in behavioural_findings(text).values():
            assert "<template>" not in diagnostic.message, diagnostic.message
            # "render error (...)" used to be preceded by "<template>:3:"; no location at all now.
            assert not re.search(r":\d+: (render error|template raised|budget exceeded)", diagnostic.message), \
                diagnostic.message


def test_an_embedded_template_reports_the_failing_line_in_the_file_users_edit(tmp_path):
    config = {"bos_token": "<s>", "chat_template": [{"name": "default", "template": FAILS_ON_LINE_3}]}
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    report = Linter(LintConfig(select=("TK611",)), use_cache=False).lint_path(path)
    (finding,) = report.diagnostics
    assert finding.location.endswith("[default]:3:7")
    assert finding.excerpt.startswith("{% if messages[0]['role'] == 'system' %}")
    assert "<template>" not in finding.message


def test_anchors_are_found_in_code_only():
    text = (
        "{# the arguments of each call #}{% raw %}{{ arguments }}{% endraw %}\n"
        "Call a function with its arguments.\n"
        "{{ 'Give the arguments as JSON.' }}\n"
        "{% for c in calls %}{{ c['arguments'] }}{% endfor %}\n"
        "{% for c in calls %}{{ c.arguments|tojson }}{% endfor %}\n"
    )
    target = LintTarget(text)
    # A comment, a raw block, printed text and prose in a literal are not code; a key is.
    assert finding_position(target, ("arguments",)) == (4, 27)
    # Preference order: the first anchor found anywhere wins over a later anchor found earlier.
    assert finding_position(target, ("tojson", "arguments")) == (5, 36)
    assert finding_position(target, ("nowhere",)) == (1, 1)


def test_an_anchor_may_require_the_operator_after_it():
    target = LintTarget("{% if messages %}{{ messages|length }}{% endif %}\n{{ messages[0].content }}")
    assert finding_position(target, ("messages[",)) == (2, 4)
    assert finding_position(target, ("messages",)) == (1, 7)


def test_a_failure_line_without_an_anchor_points_at_its_first_code():
    target = LintTarget("{{ a }}\n  text {{ b.c }} more\n{{ d }}")
    assert finding_position(target, ("messages",), failure_line=2) == (2, 8)
    # A line outside the template (never expected) falls back to the anchors, then to 1:1.
    assert finding_position(target, ("d",), failure_line=9) == (3, 4)


def test_a_probe_out_of_time_is_reported_where_the_loop_is():
    endless = ("{{ bos_token }}\n{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
               "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}")
    target = LintTarget(endless)
    assert behaviour_of(target).spent_budget is not None
    (finding,) = run_rules(target, [find_rule("TK614")()])
    assert finding.line == 2
    assert "<template>" not in finding.message and "time budget" in finding.message
