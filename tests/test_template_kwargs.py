"""Template variables named like apply_chat_template's own parameters behave as in transformers 5.

templatekit renders what ``tokenizer.apply_chat_template(messages, tools=..., documents=...,
chat_template=..., add_generation_prompt=..., continue_final_message=..., tokenize=False, **kwargs)``
returns, so a kwarg named like one of its parameters is absorbed (the tokenizing ones), refused
with Python's "multiple values" TypeError (the ones templatekit passes itself), or refused with
transformers' ValueError (a truthy ``return_assistant_tokens_mask`` / ``sanitize_control_tokens``).
The same holds for ``render(**kwargs)``, a fixture's ``kwargs`` and ``--var``.
"""

from __future__ import annotations

import inspect
import json

import pytest

import templatekit
from templatekit.conversation import (
    APPLY_CHAT_TEMPLATE_KEYWORDS,
    APPLY_CHAT_TEMPLATE_POSITIONAL,
    APPLY_CHAT_TEMPLATE_TOKENIZING,
    RENDER_JINJA_TEMPLATE_KEYWORDS,
    Conversation,
    load_conversation,
)
from templatekit.rendering import render_template

from .conftest import FIXED_NOW

USER = [{"role": "user", "content": "hi"}]
PARAMETERS = APPLY_CHAT_TEMPLATE_POSITIONAL + APPLY_CHAT_TEMPLATE_KEYWORDS + APPLY_CHAT_TEMPLATE_TOKENIZING
# Names apply_chat_template does not take but passes on, into render_jinja_template and Template.render.
PASSED_ON = ("conversations", "messages")
VALUES = (7, 0, True, False, None, "bogus", "", [1])


def template_reading(name: str) -> str:
    return "{{ messages[0].content }}|{{ " + name + " is defined }}|{{ " + name + " }}"


def outcome(result) -> tuple:
    return ("text", result.text) if result.ok else ("error", result.error.exception_type, result.error.message)


def ours(name: str, value, messages=USER, special_tokens=None) -> tuple:
    conversation = Conversation(messages=messages, add_generation_prompt=False, kwargs={name: value})
    return outcome(render_template(template_reading(name), conversation, special_tokens=special_tokens or {},
                                   now=FIXED_NOW))


def theirs(reference, name: str, value, messages=USER) -> tuple:
    conversation = Conversation(messages=messages, add_generation_prompt=False, kwargs={name: value})
    text, error = reference.render(template_reading(name), conversation)
    return ("text", text) if error is None else ("error", *error)


def test_the_parameter_lists_are_apply_chat_templates_signature():
    pytest.importorskip("transformers")
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase
    from transformers.utils.chat_template_utils import render_jinja_template

    named = [name for name, parameter in inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters.items()
             if parameter.kind is not inspect.Parameter.VAR_KEYWORD]
    assert sorted(named) == sorted(PARAMETERS)
    passed = [name for name, parameter in inspect.signature(render_jinja_template).parameters.items()
              if parameter.kind is not inspect.Parameter.VAR_KEYWORD]
    assert sorted(passed) == sorted(RENDER_JINJA_TEMPLATE_KEYWORDS)


@pytest.mark.parametrize("name", PARAMETERS + PASSED_ON)
def test_every_parameter_name_as_a_variable_matches_transformers(reference, name):
    for value in VALUES:
        assert ours(name, value) == theirs(reference, name, value), f"{name}={value!r}"


@pytest.mark.parametrize("name", APPLY_CHAT_TEMPLATE_TOKENIZING)
def test_tokenizing_parameters_never_reach_the_template(name):
    assert ours(name, False) == ("text", "hi|False|")
    if name not in ("return_assistant_tokens_mask", "sanitize_control_tokens"):
        assert ours(name, 7) == ("text", "hi|False|")


def test_the_two_flags_that_need_tokenize_raise_transformers_value_errors():
    assert ours("return_assistant_tokens_mask", 1) == (
        "error", "ValueError", "`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
    assert ours("sanitize_control_tokens", "yes") == (
        "error", "ValueError",
        "`sanitize_control_tokens=True` requires `tokenize=True` and is not compatible with "
        "`return_assistant_tokens_mask=True`.")


@pytest.mark.parametrize("name", APPLY_CHAT_TEMPLATE_KEYWORDS)
def test_parameters_templatekit_passes_itself_are_second_values(name):
    assert ours(name, 1) == (
        "error", "TypeError",
        "transformers.tokenization_utils_base.PreTrainedTokenizerBase.apply_chat_template() got multiple values "
        f"for keyword argument '{name}'")


def test_conversation_and_self_are_taken_positionally():
    for name in ("conversation", "self"):
        assert ours(name, 1) == (
            "error", "TypeError", f"PreTrainedTokenizerBase.apply_chat_template() got multiple values for argument '{name}'")


def test_render_jinja_template_and_template_render_names():
    assert ours("conversations", 1)[1:] == (
        "TypeError",
        "transformers.utils.chat_template_utils.render_jinja_template() got multiple values for keyword argument "
        "'conversations'")
    assert ours("messages", 1)[1:] == (
        "TypeError", "jinja2.environment.Template.render() got multiple values for keyword argument 'messages'")


def test_a_special_token_named_like_a_render_jinja_template_parameter_collides():
    # extra_special_tokens may name a token anything; special tokens are not apply_chat_template
    # kwargs, so they are never absorbed, but they can collide one call further down.
    assert ours("tools_probe", 1, special_tokens={"tools": "<x>"})[1:] == (
        "TypeError",
        "transformers.utils.chat_template_utils.render_jinja_template() got multiple values for keyword argument 'tools'")
    assert ours("padding", 7, special_tokens={"padding": "<x>"}) == ("text", "hi|True|<x>")


def test_errors_come_in_transformers_order(reference):
    both = Conversation(messages=USER, add_generation_prompt=False,
                        kwargs={"conversation": 1, "tokenize": 1, "return_assistant_tokens_mask": 1})
    [keyword_first] = {outcome(render_template("x", both)), ("error", *reference.render("x", both)[1])}
    assert "keyword argument 'tokenize'" in keyword_first[2]
    for kwargs in ({"return_assistant_tokens_mask": 1}, {"sanitize_control_tokens": 1}):
        empty = Conversation(messages=[], add_generation_prompt=False, kwargs=kwargs)
        [first] = {outcome(render_template("x", empty)), ("error", *reference.render("x", empty)[1])}
        assert first[1] == "ValueError"
    mask_before_empty = outcome(render_template("x", Conversation(messages=[], kwargs={"return_assistant_tokens_mask": 1})))
    assert "return_assistant_tokens_mask" in mask_before_empty[2]
    empty_before_sanitize = outcome(render_template("x", Conversation(messages=[], kwargs={"sanitize_control_tokens": 1})))
    assert "empty conversation" in empty_before_sanitize[2]


# --- the three ways a user passes variables ---------------------------------------------------


def test_python_api_keyword_arguments():
    template = templatekit.template_from_text(template_reading("padding"))
    assert templatekit.render(template, USER, add_generation_prompt=False, padding=7, max_length=3).text == "hi|False|"
    failed = templatekit.render(template, USER, conversations=[USER])
    assert failed.error.kind == "input" and "'conversations'" in failed.error.message


def test_fixture_kwargs(tmp_path):
    fixture = tmp_path / "chat.yaml"
    fixture.write_text(json.dumps({"messages": USER, "kwargs": {"truncation": True, "enable_thinking": False},
                                   "chat_template_kwargs": {"return_dict": False}}), encoding="utf-8")
    template = templatekit.template_from_text(
        "{{ messages[0].content }}|{{ truncation is defined }}|{{ return_dict is defined }}|{{ enable_thinking }}")
    rendered = templatekit.render(template, conversation=load_conversation(fixture), add_generation_prompt=False)
    assert rendered.text == "hi|False|False|False"


def test_cli_var(tmp_path, run):
    template = tmp_path / "t.jinja"
    template.write_text(template_reading("max_length"), encoding="utf-8")
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps(USER), encoding="utf-8")
    absorbed = run("render", str(template), "--messages", str(messages), "--raw", "--var", "max_length=9")
    assert (absorbed.exit_code, absorbed.output) == (0, "hi|False|")
    refused = run("render", str(template), "--messages", str(messages), "--raw", "--var", "tokenize=false")
    assert refused.exit_code == 1
    assert "got multiple values for keyword argument 'tokenize'" in refused.output


@pytest.mark.parametrize("name", ["messages", "tokenize", "add_generation_prompt", "chat_template"])
def test_a_conversation_file_whose_kwargs_take_a_set_name_is_an_input_error(tmp_path, run, name):
    """From a file it is the file's mistake (exit 2, naming the key); Python callers still get
    transformers' own TypeError when rendering."""
    fixture = tmp_path / "c.yaml"
    fixture.write_text(f"messages: [{{role: user, content: hi}}]\nkwargs: {{{name}: []}}\n", encoding="utf-8")
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages[0].content }}", encoding="utf-8")
    result = run("render", str(template), "-f", str(fixture))
    assert result.exit_code == 2
    assert result.output.startswith(f"templatekit: error: {fixture}: kwargs.{name}: is not a template variable")
