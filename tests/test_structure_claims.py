"""What TK301, TK303, TK305 and TK306 say about a template must be what rendering it shows.

Each test lints a small template, reads the claim in the finding's message, and renders the
conversation the claim is about (as transformers would) to check it.
"""

from __future__ import annotations

from templatekit.conversation import Conversation
from templatekit.lint.engine import run_rules
from templatekit.lint.registry import find_rule
from templatekit.lint.target import LintTarget
from templatekit.rendering import render_template

TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


def messages_of(code: str, text: str) -> list[str]:
    return [d.message for d in run_rules(LintTarget(text), [find_rule(code)()]) if d.code == code]


def render(text: str, messages: list[dict], generation_prompt: bool = True):
    conversation = Conversation.from_mapping({"messages": messages})
    return render_template(text, conversation, special_tokens=TOKENS, add_generation_prompt=generation_prompt)


def gets_generation_prompt(text: str, messages: list[dict], header: str = "<|assistant|>") -> bool:
    """Whether the prompt asked for with add_generation_prompt=True ends with the header."""
    rendering = render(text, messages, True)
    assert rendering.ok, rendering.error
    return rendering.text.endswith(header)


SYSTEM_ONLY = [{"role": "system", "content": "S"}]
ENDS_WITH_DEVELOPER = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "hi"},
    {"role": "developer", "content": "d"},
]
ENDS_WITH_TOOL = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": {}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]

# The flag is read first in the assistant branch (for the end token); the header itself is
# printed later, when the last message is NOT 'assistant', in a loop over messages[1:].
HEADER_AFTER_AN_EARLIER_READ = """\
{%- for m in messages[1:] %}
{%- if m.role == 'assistant' %}<|assistant|>{{ m.content }}{{ '</s>' if loop.last and not add_generation_prompt else '<|end|>' }}
{%- else %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endif %}
{%- if loop.last and add_generation_prompt and m.role not in ['assistant'] %}<|assistant|>{% endif %}
{%- endfor %}"""


def test_tk303_reads_the_emission_that_prints_the_header_with_its_polarity():
    [message] = messages_of("TK303", HEADER_AFTER_AN_EARLIER_READ)
    assert "the last message is not 'assistant'" in message
    assert "a system message only" in message
    assert "ending with a 'developer'" not in message
    # The claim, rendered: a system-only conversation gets no header, a developer-ending one does.
    assert not gets_generation_prompt(HEADER_AFTER_AN_EARLIER_READ, SYSTEM_ONLY)
    assert gets_generation_prompt(HEADER_AFTER_AN_EARLIER_READ, ENDS_WITH_DEVELOPER)


def test_tk303_names_a_last_role_the_header_is_not_printed_for():
    text = """\
{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>
{%- if loop.last and add_generation_prompt and m.role == 'user' %}<|assistant|>{% endif %}
{%- endfor %}
{%- if not add_generation_prompt %}{{ eos_token }}{% endif %}"""
    [message] = messages_of("TK303", text)
    assert "when the last message is 'user'" in message
    assert "a conversation ending with a 'tool' message gets no generation prompt" in message
    assert not gets_generation_prompt(text, ENDS_WITH_TOOL)
    assert gets_generation_prompt(text, [{"role": "user", "content": "hi"}])


def test_tk303_quiet_when_the_sliced_list_is_replaced_before_the_loop():
    text = """\
{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}
{% set loop_messages = messages %}
{% for message in loop_messages %}{{ message.role }}: {{ message.content }}
{% if loop.last and add_generation_prompt %}assistant: {% endif %}{% endfor %}"""
    assert messages_of("TK303", text) == []
    assert gets_generation_prompt(text, SYSTEM_ONLY, "assistant: ")


def tool_call_conversation(call_id: str) -> list[dict]:
    return [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": {}}}]},
    ]


ID_CHECK = """\
{%- for message in messages %}{{ message.content }}{% for tool_call in message.tool_calls or [] %}
{%- if not tool_call.id is defined or tool_call.id|length CHECK %}{{ raise_exception('bad tool call id') }}{% endif %}
{{- tool_call.id[-9:] }}{% endfor %}{% endfor %}"""
UUID = "123e4567-e89b-12d3-a456-426614174000"


def test_tk306_tool_id_length_message_names_only_ids_the_check_rejects():
    at_least_nine = ID_CHECK.replace("CHECK", "< 9")
    [message] = messages_of("TK306", at_least_nine)
    assert "'call_1' (6 characters)" in message
    assert "UUID" not in message and "OpenAI" not in message
    assert not render(at_least_nine, tool_call_conversation("call_1")).ok
    assert render(at_least_nine, tool_call_conversation(UUID)).ok
    assert render(at_least_nine, tool_call_conversation("call_" + "a" * 24)).ok

    exactly_nine = ID_CHECK.replace("CHECK", "!= 9")
    [message] = messages_of("TK306", exactly_nine)
    assert "'call_1' (6 characters)" in message and "UUIDs (36 characters)" in message
    assert not render(exactly_nine, tool_call_conversation(UUID)).ok


def test_tk306_tool_id_length_against_an_unknown_bound_only_quotes_the_check():
    text = ID_CHECK.replace("CHECK", "< min_id_length")
    [message] = messages_of("TK306", text)
    assert message.endswith("it raises when (tool_call.id is not defined or tool_call.id|length < min_id_length)")
    assert "UUID" not in message and "call_1" not in message


MISTRAL_ALTERNATION = """\
{%- set filtered = [] %}
{%- for m in messages %}{% if m.role != 'tool' %}{% set filtered = filtered + [m] %}{% endif %}{% endfor %}
{%- for m in filtered %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% endfor %}
{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"""


def test_a_raise_jinja_scoping_makes_unreachable_is_neither_listed_nor_over_strict():
    assert messages_of("TK305", MISTRAL_ALTERNATION) == []
    assert messages_of("TK306", MISTRAL_ALTERNATION) == []
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert render(MISTRAL_ALTERNATION, two_users).ok


def test_the_same_raise_is_reported_when_a_namespace_carries_the_list_out_of_the_loop():
    text = MISTRAL_ALTERNATION.replace("{%- set filtered = [] %}", "{%- set ns = namespace(filtered=[]) %}")
    text = text.replace("{% set filtered = filtered + [m] %}", "{% set ns.filtered = ns.filtered + [m] %}")
    text = text.replace("for m in filtered", "for m in ns.filtered")
    assert len(messages_of("TK305", text)) == 1
    assert "two user messages in a row" in messages_of("TK306", text)[0]
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert "roles must alternate" in str(render(text, two_users).error)


# The role check walks a list Jinja's scoping leaves empty (the ``set`` in the first loop is gone
# after it), so it never rejects anything, and the dispatch has no else.
ROLE_CHECK_OVER_AN_EMPTY_LIST = """\
{%- set checked = [] %}
{%- for m in messages %}{% set checked = checked + [m] %}{% endfor %}
{%- for m in checked %}{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}
{%- for m in messages %}
{%- if m.role == 'user' %}<|user|>{{ m.content }}
{%- elif m.role == 'assistant' %}<|assistant|>{{ m.content }}
{%- endif %}
{%- endfor %}"""


def test_tk301_a_role_check_no_input_reaches_does_not_count_as_validation():
    [message] = messages_of("TK301", ROLE_CHECK_OVER_AN_EMPTY_LIST)
    assert "(e.g. 'developer') renders nothing and raises no error" in message
    developer_first = [{"role": "developer", "content": "D"}, {"role": "user", "content": "U"}]
    rendering = render(ROLE_CHECK_OVER_AN_EMPTY_LIST, developer_first)
    assert rendering.ok and rendering.text == "<|user|>U"


def test_tk301_quiet_when_a_namespace_carries_the_checked_list_out_of_the_loop():
    text = ROLE_CHECK_OVER_AN_EMPTY_LIST.replace("{%- set checked = [] %}", "{%- set ns = namespace(checked=[]) %}")
    text = text.replace("{% set checked = checked + [m] %}", "{% set ns.checked = ns.checked + [m] %}")
    text = text.replace("for m in checked", "for m in ns.checked")
    assert messages_of("TK301", text) == []
    assert "bad role" in str(render(text, [{"role": "developer", "content": "D"}]).error)


def test_tk301_an_else_that_raises_only_under_a_flag_set_false_drops_the_message():
    text = """\
{%- set strict = false %}
{%- for m in messages %}
{%- if m.role == 'user' %}<|user|>{{ m.content }}
{%- elif m.role == 'assistant' %}<|assistant|>{{ m.content }}
{%- else %}{% if strict %}{{ raise_exception('Unsupported role: ' + m.role) }}{% endif %}
{%- endif %}
{%- endfor %}"""
    [message] = messages_of("TK301", text)
    assert "'developer'" in message
    rendering = render(text, [{"role": "developer", "content": "D"}, {"role": "user", "content": "U"}])
    assert rendering.ok and rendering.text == "<|user|>U"
    # Set true, the same else rejects the role: nothing is dropped silently.
    assert messages_of("TK301", text.replace("strict = false", "strict = true")) == []
