"""TK2xx predictions for @huggingface/jinja checked against the real engine.

Each case is a construct a portability rule warns about for hf-jinja, a conversation real clients
send, and the spelling the rule recommends instead. The static side (severity, engine named) runs
everywhere; the engine side renders both spellings in transformers and in @huggingface/jinja and
skips only when the engine is not installed (CI installs it).
"""

from __future__ import annotations

import pytest

from templatekit.conversation import Conversation
from templatekit.engines import compare_engines
from templatekit.engines.compare import static_predictions

_ARRAY_TOOL = {
    "type": "function",
    "function": {
        "name": "book",
        "description": "Book seats.",
        "parameters": {
            "type": "object",
            "properties": {
                "cabin": {"type": "string", "enum": ["economy", "business"]},
                "seats": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["cabin"],
        },
    },
}
_TOOLS = {"tools": [_ARRAY_TOOL], "messages": [{"role": "user", "content": "Two seats, please."}]}
_PARTS = {
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A robin."}]},
        {"role": "user", "content": "Thanks."},
    ]
}
_NO_SYSTEM = {"messages": [{"role": "user", "content": "Hi"}]}

_TOOL_LOOP = "{%- for tool in tools %}{% for name, p in tool.function.parameters.properties|items %}"
_PART_LOOP = "{% for part in m.content %}{{ part.text if part.type == 'text' else '<img>' }}{% endfor %}"

# id -> (rule, conversation, template that breaks in hf-jinja, the rule's recommended spelling)
CASES = {
    "items-method-on-array-schema": (
        "TK201", _TOOLS,
        _TOOL_LOOP + "{{ name }}:{% for k, v in p.items() %}{{ k }} {% endfor %}{% endfor %}{% endfor %}",
        _TOOL_LOOP + "{{ name }}:{% for k, v in p|items %}{{ k }} {% endfor %}{% endfor %}{% endfor %}",
    ),
    "schema-value-printed-by-key": (
        "TK210", _TOOLS,
        _TOOL_LOOP + "{% for key in p %}<{{ key }}>{{ p[key] }}</{{ key }}>{% endfor %}{% endfor %}{% endfor %}",
        _TOOL_LOOP + "{% for key in p %}<{{ key }}>{{ p[key] if p[key] is string else p[key]|tojson }}"
                     "</{{ key }}>{% endfor %}{% endfor %}{% endfor %}",
    ),
    "content-printed-where-parts-are-read": (
        "TK210", _PARTS,
        "{% for m in messages %}{% if m.role == 'user' %}{% if m.content is string %}{{ m.content }}{% else %}"
        + _PART_LOOP + "{% endif %}{% else %}{{ m.content }}{% endif %}|{% endfor %}",
        "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}" + _PART_LOOP
        + "{% endif %}|{% endfor %}",
    ),
    "list-filter-on-properties": (
        "TK218", _TOOLS,
        "{% for tool in tools %}{% set props = tool.function.parameters.properties %}{{ props|list|join(',') }}"
        "{% endfor %}",
        "{% for tool in tools %}{% set props = tool.function.parameters.properties %}"
        "{% for name in props %}{{ name }}{{ ',' if not loop.last }}{% endfor %}{% endfor %}",
    ),
    "fallback-after-first-of-a-selection": (
        "TK218", _NO_SYSTEM,
        "{{ messages|selectattr('role', 'eq', 'system')|map(attribute='content')|first|default('Be brief.') }}",
        "{% set system = messages|selectattr('role', 'eq', 'system')|map(attribute='content')|first %}"
        "{{ system if system is defined else 'Be brief.' }}",
    ),
    "selection-of-tools-passed-as-none": (
        "TK218", _NO_SYSTEM,
        "{% set has_python = tools|selectattr('type', 'equalto', 'code_interpreter')|list|length > 0 %}"
        "{{ 'Environment: ipython\n' if has_python }}{{ messages[0].content }}",
        "{% set has_python = (tools or [])|selectattr('type', 'equalto', 'code_interpreter')|list|length > 0 %}"
        "{{ 'Environment: ipython\n' if has_python }}{{ messages[0].content }}",
    ),
    "string-repetition": (
        "TK229", _NO_SYSTEM,
        "{{ '=' * 3 }}{{ messages[0].content }}",
        "{% for _ in range(3) %}={% endfor %}{{ messages[0].content }}",
    ),
}


def _hf_warnings(template: str, code: str) -> list:
    return [d for d in static_predictions(template)
            if d.code == code and "hf-jinja" in d.engines and d.severity != "info"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_warns_for_hf_jinja_and_not_on_the_recommended_spelling(case):
    code, _conversation, bad, good = CASES[case]
    assert _hf_warnings(bad, code), f"{code} does not warn for hf-jinja on {bad!r}"
    assert not _hf_warnings(good, code), f"{code} warns for hf-jinja on the recommended {good!r}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_jinja_really_breaks_and_the_recommended_spelling_renders_the_same(case, hf_engine):
    _code, data, bad, good = CASES[case]
    conversation = Conversation.from_mapping({"name": case, **data})
    [broken] = compare_engines(bad, [conversation], ["hf-jinja"])
    assert broken.reference_text is not None, broken.message  # transformers renders it
    assert broken.breaks, f"hf-jinja renders {bad!r} exactly as transformers does"
    [fixed] = compare_engines(good, [conversation], ["hf-jinja"])
    assert fixed.outcome == "identical", fixed.message
