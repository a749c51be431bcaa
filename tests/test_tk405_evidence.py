"""TK405's evidence clause: "the template iterates content as parts on line N" must name a loop
that really treats the items as content parts. The YAML case runner checks only where findings
are, so the wording is checked here."""

from __future__ import annotations

import pytest

from templatekit.lint.engine import run_rules
from templatekit.lint.registry import find_rule
from templatekit.lint.target import LintTarget

EVIDENCE = "iterates content as parts"


def tk405_messages(text: str) -> list[str]:
    return [d.message for d in run_rules(LintTarget(text), [find_rule("TK405")()]) if d.code == "TK405"]


# The shape of vLLM's Mistral tool templates: the legacy "tool_calls" role keeps its calls in
# content, and the loop over them reads .function and .id.
LEGACY_TOOL_CALLS_ROLE = """\
{% for message in messages %}
{% if message.role == 'user' %}{{ '[INST] ' + message.content + '[/INST]' }}
{% elif message.role == 'tool_calls' %}{% set tool_calls = message.content %}
{% for tool_call in tool_calls %}
{% set out = tool_call.function|tojson %}{{ out[:-1] + ', "id": "' + tool_call.id + '"}' }}
{% endfor %}
{% endif %}
{% endfor %}"""


def test_a_loop_over_tool_calls_kept_in_content_is_not_cited_as_parts():
    messages = tk405_messages(LEGACY_TOOL_CALLS_ROLE)
    # Still reported: a user message with a list of parts raises TypeError at the '+'.
    assert len(messages) == 1
    assert "concatenated with '+'" in messages[0]
    assert EVIDENCE not in messages[0]
    assert "line 4" not in messages[0]


def test_tool_results_read_by_their_own_keys_are_not_cited_as_parts():
    text = (
        "{% for message in messages %}{% if message.role == 'tool' %}"
        "{% for result in message.content %}{{ result.name }}: {{ result.response|tojson }}{% endfor %}"
        "{% else %}{{ '<turn>' + message.content }}{% endif %}{% endfor %}"
    )
    assert [EVIDENCE in message for message in tk405_messages(text)] == [False]


@pytest.mark.parametrize(
    "loop",
    [
        pytest.param("{% for part in message.content if part.type == 'text' %}{{ part.text }}{% endfor %}", id="if-type"),
        pytest.param("{% for part in message.content %}{% if part['type'] == 'image' %}<img>{% endif %}{% endfor %}", id="getitem"),
        pytest.param("{% for part in message.content %}{{ part.get('text', '') }}{% endfor %}", id="get"),
        pytest.param("{% for part in message.content|selectattr('type', 'equalto', 'text') %}x{% endfor %}", id="selectattr"),
        pytest.param("{% for text in message.content|map(attribute='text') %}x{% endfor %}", id="map"),
        pytest.param("{% for part in message.content %}{% if 'image_url' in part %}<img>{% endif %}{% endfor %}", id="in-test"),
        pytest.param("{% for part in message.content %}{{ part }}{% endfor %}", id="printed"),
        pytest.param("{% for part in message.content %}{% set p = part %}{{ p.text }}{% endfor %}", id="alias"),
        pytest.param("{% for part in message.content %}{{ show(part) }}{% endfor %}", id="macro"),
    ],
)
def test_a_loop_over_content_parts_is_cited(loop):
    text = (
        "{% macro show(item) %}{{ item.text }}{% endmacro %}\n"
        "{% for message in messages %}{% if message.role == 'user' %}\n"
        + loop
        + "\n{% else %}{{ '<|assistant|>' + message.content }}{% endif %}{% endfor %}"
    )
    messages = tk405_messages(text)
    assert len(messages) == 1
    assert messages[0].endswith(f"the template {EVIDENCE} on line 3, so callers do send lists")
