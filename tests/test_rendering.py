"""The renderer behaves like transformers' apply_chat_template, feature by feature."""

from __future__ import annotations

from datetime import datetime

import pytest

import templatekit
from templatekit.conversation import Conversation
from templatekit.environment import compile_template, parse
from templatekit.rendering import render_template

USER = [{"role": "user", "content": "Hi"}]


def render(text, messages=USER, **kwargs):
    options = {key: kwargs.pop(key) for key in ("special_tokens", "now", "budget", "allow_empty") if key in kwargs}
    return render_template(text, Conversation(messages=messages, **kwargs), **options)


def test_block_tags_are_trimmed_and_left_stripped():
    text = "{% for m in messages %}\n    {% if true %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n"
    assert render(text).text == "[Hi]\n"


def test_one_trailing_newline_of_the_template_is_dropped():
    assert render("A\n").text == "A"
    assert render("A\n\n").text == "A\n"


def test_generation_prompt_flag_and_default_from_conversation():
    text = "{{ add_generation_prompt }}"
    assert render(text).text == "True"  # ends with a user turn
    assert render(text, messages=USER + [{"role": "assistant", "content": "x"}]).text == "False"
    assert render(text, add_generation_prompt=False).text == "False"


def test_tojson_has_transformers_signature_and_no_html_escaping():
    text = "{{ x|tojson }}|{{ x|tojson(ensure_ascii=true) }}|{{ x|tojson(indent=2, sort_keys=true) }}|{{ x|tojson(separators=(',', ':')) }}"
    out = render(text, kwargs={"x": {"b": "é<&>'", "a": [1, None]}}).text
    first, ascii_form, indented, compact = out.split("|", 3)
    assert first == '{"b": "é<&>\'", "a": [1, null]}'
    assert ascii_form == '{"b": "\\u00e9<&>\'", "a": [1, null]}'
    assert indented.startswith('{\n  "a": [\n    1,')
    assert compact == '{"b":"é<&>\'","a":[1,null]}'


def test_raise_exception_is_reported_as_the_templates_own_message():
    result = render("line1\n{{ raise_exception('Roles must alternate!') }}")
    assert result.error.kind == "raised"
    assert result.error.message == "Roles must alternate!"
    assert result.error.line == 2
    assert result.error.describe() == "<template>:2: template raised: Roles must alternate!"


def test_strftime_now_uses_the_pinned_clock():
    result = render("{{ strftime_now('%d %b %Y %H:%M') }}", now=datetime(2024, 7, 26, 9, 5))
    assert result.text == "26 Jul 2024 09:05"


def test_strftime_now_defaults_to_local_time():
    before = datetime.now().strftime("%Y-%m-%d")
    assert render("{{ strftime_now('%Y-%m-%d') }}").text in (before, datetime.now().strftime("%Y-%m-%d"))


def test_namespace_rejects_underscore_names_like_transformers():
    result = render("{% set ns = namespace() %}{% set ns._x = 1 %}")
    assert result.error.kind == "security"
    assert result.error.message.startswith("Chat templates cannot store underscore-prefixed attributes")
    assert render("{% set ns = namespace(a=1) %}{% set ns.a = ns.a + 1 %}{{ ns.a }}").text == "2"


def test_dict_global_is_restricted_to_construction():
    assert render("{{ dict(a=1) }}{{ dict.fromkeys(['x'], 0) }}").text == "{'a': 1}{'x': 0}"
    assert render("{{ dict.items }}").text == ""


def test_sandbox_blocks_mutation_and_dunders():
    assert render("{{ messages.append(1) }}").error.message == "access to attribute 'append' of 'list' object is unsafe."
    assert render("{{ ''.__class__ }}").text == ""  # printing an unsafe attribute prints nothing
    assert render("{{ ''.__class__.__mro__ }}").error.kind == "security"  # using it is refused


def test_loop_controls_work():
    assert render("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}").text == "02"


def test_do_tag_is_not_available():
    result = render("{% do x %}")
    assert result.error.kind == "syntax"
    assert "do" in result.error.message


def test_generation_spans_cover_the_assistant_text():
    text = "{% for m in messages %}{% if m.role == 'assistant' %}<a>{% generation %}{{ m.content }}</e>{% endgeneration %}{% else %}<u>{{ m.content }}{% endif %}{% endfor %}"
    result = render(text, messages=USER + [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "Bye"}])
    assert result.generation_texts() == ["Hello</e>", "Bye</e>"]


def test_python_repr_of_values_is_kept():
    assert render("{{ true }} {{ none }} {{ [1, 'a'] }} {{ 1e20 }}").text == "True None [1, 'a'] 1e+20"


def test_none_valued_keys_are_dropped_and_nested_none_kept():
    text = "{{ messages[0] }}"
    assert render(text, messages=[{"role": "user", "content": None, "meta": {"x": None}}]).text == "{'role': 'user', 'meta': {'x': None}}"


def test_reasoning_fields_are_aliased():
    message = {"role": "assistant", "content": "A", "reasoning": "R"}
    assert render("{{ messages[0] }}", messages=[message]).text == (
        "{'thinking': 'R', 'role': 'assistant', 'content': 'A', 'reasoning': 'R', 'reasoning_content': 'R'}"
    )


def test_user_kwargs_override_special_tokens():
    result = render("{{ bos_token }}|{{ eos_token }}", special_tokens={"bos_token": "<s>", "eos_token": "</s>"}, kwargs={"eos_token": "<|end|>"})
    assert result.text == "<s>|<|end|>"


def test_kwarg_named_like_a_render_argument_fails_like_transformers():
    result = render("x", kwargs={"messages": []})
    assert result.error.kind == "input"
    assert result.error.message == "jinja2.environment.Template.render() got multiple values for keyword argument 'messages'"


def test_empty_conversation_is_refused_unless_allowed():
    assert render("x", messages=[]).error.message == "Cannot apply chat template to an empty conversation. Provide at least one message."
    assert render("{{ messages|length }}", messages=[], allow_empty=True).text == "0"


def test_tools_empty_list_stays_a_list_and_none_stays_none():
    text = "{{ tools is none }}/{{ tools is not none and tools|length == 0 }}"
    assert render(text).text == "True/False"
    assert render(text, tools=[]).text == "False/True"


def test_python_functions_become_tool_schemas():
    def get_weather(city: str, unit: str = "c"):
        """Get the weather.

        Args:
            city: The city name.
            unit: The unit (choices: ["c", "f"])
        """

    result = render("{{ tools[0]|tojson }}", tools=[get_weather])
    assert '"name": "get_weather"' in result.text
    assert '"enum": ["c", "f"]' in result.text
    bad = render("x", tools=["not a tool"])
    assert bad.error.kind == "input"
    assert bad.error.message.startswith("Tools should either be a JSON schema, or a callable function")


def test_documents_must_be_dicts():
    assert render("x", documents=["text"]).error.message == "Documents should be a list of dicts with 'title' and 'text' keys!"


CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def test_continue_final_message_cuts_after_the_final_content():
    messages = USER + [{"role": "assistant", "content": "Once upon "}]
    result = render(CHATML, messages=messages, continue_final_message=True)
    assert result.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nOnce upon "


def test_continue_final_message_after_trimming_template_rstrips():
    messages = USER + [{"role": "assistant", "content": "Once upon "}]
    text = CHATML.replace("{{ m.content }}", "{{ m.content|trim }}")
    assert render(text, messages=messages, continue_final_message=True).text.endswith("assistant\nOnce upon")


def test_continue_final_message_conflicts_with_generation_prompt():
    result = render(CHATML, messages=USER, continue_final_message=True, add_generation_prompt=True)
    assert result.error.message.startswith("continue_final_message and add_generation_prompt are not compatible.")


def test_continue_final_message_field_must_be_in_the_template():
    messages = USER + [{"role": "assistant", "content": "A", "reasoning_content": "Let me"}]
    result = render(CHATML, messages=messages, continue_final_message="reasoning_content")
    assert result.error.message == 'continue_final_message is set to "reasoning_content" but this is not an accepted field in the chat_template'
    missing = render(CHATML, messages=USER + [{"role": "assistant"}], continue_final_message=True)
    assert missing.error.message == 'continue_final_message is set but the final message has no "content" to continue!'


def test_continue_final_message_with_content_parts_continues_the_last_text_block():
    text = "{% for m in messages %}{% for p in m.content %}{{ p.text }}{% endfor %}|{% endfor %}"
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "b"}, {"type": "image"}]}]
    assert render(text, messages=messages, continue_final_message=True).text == "a|b"


def test_continue_final_message_that_the_template_drops_is_an_error():
    messages = USER + [{"role": "assistant", "content": "Once"}]
    result = render("{% for m in messages if m.role == 'user' %}{{ m.content }}{% endfor %}", messages=messages, continue_final_message=True)
    assert result.error.kind == "input"
    assert result.error.message.startswith("continue_final_message is set but the final message does not appear")


def test_errors_name_the_template_line():
    result = render("a\nb\n{{ messages[0].content.missing.deeper }}")
    assert result.error.kind == "error"
    assert result.error.exception_type == "UndefinedError"
    assert result.error.line == 3


def test_syntax_errors_name_the_line():
    result = render("ok\n{% if %}\n")
    assert result.error.kind == "syntax"
    assert result.error.line == 2


def test_templates_compile_once_per_text():
    first = compile_template("{{ 1 }}")
    assert compile_template("{{ 1 }}") is first


def test_parse_uses_the_same_environment_and_knows_the_generation_tag():
    tree = parse("{% generation %}x{% endgeneration %}")
    assert tree.body


def test_public_render_api_accepts_paths_and_text(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(CHATML, encoding="utf-8")
    from_file = templatekit.render(path, USER)
    from_text = templatekit.render(templatekit.template_from_text(CHATML), USER)
    assert from_file.text == from_text.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert from_file.ok and from_file.spans == []


def test_public_render_api_requires_messages():
    with pytest.raises(TypeError):
        templatekit.render(templatekit.template_from_text("x"))


def test_omit_leaves_a_variable_transformers_passes_undefined():
    text = "{{ tools is defined }}/{{ tools is none }}"
    assert render(text).text == "True/True"
    assert render_template(text, Conversation(USER), omit=("tools",)).text == "False/False"
