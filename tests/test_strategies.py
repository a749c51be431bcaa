"""The hypothesis strategies: valid, round-trippable, realistic, and faithful to their options."""

from __future__ import annotations

import json
import string

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from templatekit.conversation import REASONING_FIELDS, Conversation, conversation_schema, drop_none_keys
from templatekit.fixtures import CAPABILITIES, used_capabilities
from templatekit.strategies import (
    content_parts,
    conversations,
    documents,
    messages,
    text_content,
    tool_calls,
    tool_schemas,
)

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Reachability searches: any hit will do, and shrinking a whole conversation costs seconds.
SEARCH = settings(max_examples=2000, deadline=None, database=None, phases=[Phase.generate])

VALIDATOR = jsonschema.Draft202012Validator(conversation_schema())

EVERYTHING = dict(tool_calls=True, reasoning=True, typed_content=True, documents=True)

# A strict template of the kind models ship: it raises where real templates raise (a system
# message after the start, roles out of turn, a tool result without a call, an unknown content
# part) and prints every field, so generated data that renders here is data real templates accept.
STRICT_TEMPLATE = """
{%- macro text(content) -%}
  {%- if content is string -%}{{ content }}
  {%- elif content is iterable -%}
    {%- for part in content -%}
      {%- if part.type == 'text' -%}{{ part.text }}
      {%- elif part.type == 'image' -%}<|image|>
      {%- else -%}{{ raise_exception('Unknown content part: ' ~ part.type) }}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- if documents %}<|documents|>{% for doc in documents %}{{ doc.title }}: {{ doc.text }}
{% endfor %}{% endif -%}
{%- if tools %}<|tools|>{% for tool in tools %}{{ tool | tojson }}
{% endfor %}{% endif -%}
{%- set ns = namespace(turn=0, after_call=false) -%}
{%- for message in messages -%}
  {%- if message.role == 'system' -%}
    {%- if not loop.first -%}{{ raise_exception('System message must be first') }}{%- endif -%}
  {%- elif message.role == 'tool' -%}
    {%- if not ns.after_call -%}{{ raise_exception('Tool result without a tool call') }}{%- endif -%}
  {%- elif message.role == 'user' or message.tool_calls is not defined -%}
    {%- if strict_alternation and (message.role == 'user') != (ns.turn % 2 == 0) -%}
      {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- set ns.turn = ns.turn + 1 -%}
  {%- endif -%}
  {%- set ns.after_call = message.tool_calls is defined or (message.role == 'tool' and ns.after_call) -%}
  {{- '<|' + message.role + '|>' -}}
  {%- if message.reasoning_content is defined %}<think>{{ message.reasoning_content }}</think>{% endif -%}
  {{- text(message.content) -}}
  {%- for call in message.tool_calls or [] -%}
    {%- set args = call.function.arguments if call.function.arguments is string else call.function.arguments | tojson -%}
    {{- '<|call|>' + call.function.name + ' ' + args -}}
  {%- endfor -%}
  {{- '<|end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt %}<|assistant|>{% if enable_thinking %}<think>{% endif %}{% endif -%}
"""


def render(conversation: Conversation, strict_alternation: bool = True) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [drop_none_keys(conversation.messages)],
        tools=conversation.tools,
        documents=conversation.documents,
        chat_template=STRICT_TEMPLATE,
        continue_final_message=conversation.continue_final_message,
        add_generation_prompt=conversation.wants_generation_prompt(),
        strict_alternation=strict_alternation,
        **conversation.kwargs,
    )
    return rendered[0]


def texts(message: dict) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if part["type"] == "text"]
    return []


def turns(chat: list[dict]) -> int:
    """User and assistant turns as messages() counts them (calls-only messages don't count)."""
    spoken = sum(1 for m in chat if m["role"] == "user" or (m["role"] == "assistant" and not m.get("tool_calls")))
    return spoken + (1 if chat and chat[-1]["role"] == "tool" else 0)


def check_shape(chat: list[dict]) -> None:
    """What every generated chat must look like, whatever the options."""
    roles = [m["role"] for m in chat]
    assert set(roles) <= {"system", "user", "assistant", "tool"}
    assert "system" not in roles[1:]
    pending: list[dict] = []
    for message in chat:
        if message["role"] == "tool":
            assert pending, "a tool result follows a call that has no result yet"
            call = pending.pop(0)
            assert message.get("tool_call_id") == call.get("id")
            assert message.get("name", call["function"]["name"]) == call["function"]["name"]
        else:
            assert not pending, "every call gets its result before the next message"
            pending = list(message.get("tool_calls") or [])
    ids = [call["id"] for m in chat for call in m.get("tool_calls") or [] if "id" in call]
    assert len(ids) == len(set(ids)), "tool-call ids are unique within a conversation"


# ---------------------------------------------------------------------------------------------
# valid, serialisable, round-trippable


OPTION_SETS = [
    {},
    EVERYTHING,
    dict(EVERYTHING, alternate=False),
    dict(system=True, ending="continue", typed_content=True),
    dict(tools=True, ending="complete"),
    dict(tool_calls=True, parallel_tool_calls=False, ending="generate", min_turns=3, max_turns=9),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()) or "defaults")
@FAST
@given(data=st.data())
def test_conversations_are_valid_json_and_round_trip(options, data):
    conversation = data.draw(conversations(**options))
    mapping = conversation.to_mapping()
    VALIDATOR.validate(mapping)
    assert json.loads(json.dumps(mapping, ensure_ascii=False)) == mapping
    assert Conversation.from_mapping(mapping, "<generated>") == conversation
    assert conversation.requires == used_capabilities(conversation)
    assert set(conversation.requires) <= set(CAPABILITIES)
    check_shape(conversation.messages)


@FAST
@given(conversations(**EVERYTHING, system=None))
def test_conversations_render_in_a_strict_template_with_all_text_intact(conversation):
    prompt = render(conversation)
    for message in conversation.messages:
        for text in texts(message):
            assert text in prompt
    if conversation.continue_final_message:
        assert prompt.endswith(texts(conversation.messages[-1])[-1])
    elif conversation.wants_generation_prompt():
        assert prompt.removesuffix("<think>").endswith("<|assistant|>")
    else:
        assert prompt.endswith("<|end|>\n")


@FAST
@given(conversations(**EVERYTHING, alternate=False))
def test_free_order_conversations_render_when_alternation_is_not_enforced(conversation):
    render(conversation, strict_alternation=False)


# ---------------------------------------------------------------------------------------------
# options are honoured


@FAST
@given(messages(system=False, tool_calls=True, min_turns=1, max_turns=8))
def test_alternation_starts_with_the_user_and_alternates(chat):
    spoken = [m["role"] for m in chat if m["role"] == "user" or (m["role"] == "assistant" and not m.get("tool_calls"))]
    assert spoken[0] == "user"
    assert spoken == [("user", "assistant")[index % 2] for index in range(len(spoken))]
    check_shape(chat)


def test_free_order_produces_repeated_roles_and_assistant_first():
    free = messages(system=False, alternate=False, min_turns=2, max_turns=4)
    find(free, lambda chat: any(a["role"] == b["role"] == "user" for a, b in zip(chat, chat[1:])), settings=SEARCH)
    find(free, lambda chat: chat[0]["role"] == "assistant", settings=SEARCH)


@FAST
@given(st.data())
def test_system_option(data):
    assert data.draw(messages(system=True))[0]["role"] == "system"
    assert all(m["role"] != "system" for m in data.draw(messages(system=False)))


def test_system_none_means_sometimes():
    find(messages(), lambda chat: chat[0]["role"] == "system", settings=SEARCH)
    find(messages(), lambda chat: chat[0]["role"] != "system", settings=SEARCH)


@pytest.mark.parametrize(("low", "high"), [(1, 1), (2, 2), (3, 7), (1, 12)])
@FAST
@given(data=st.data())
def test_turn_range(low, high, data):
    chat = data.draw(messages(tool_calls=True, min_turns=low, max_turns=high))
    assert low <= turns(chat) <= high


@pytest.mark.parametrize("alternate", [True, False])
@pytest.mark.parametrize("ends_with", ["user", "assistant", "tool"])
@FAST
@given(data=st.data())
def test_ends_with(ends_with, alternate, data):
    chat = data.draw(messages(tool_calls=True, ends_with=ends_with, alternate=alternate, max_turns=5))
    assert chat[-1]["role"] == ends_with
    if ends_with == "assistant":
        assert not chat[-1].get("tool_calls")
    check_shape(chat)


@FAST
@given(messages(tool_calls=True, parallel_tool_calls=False, min_turns=2, max_turns=8))
def test_parallel_calls_off_means_one_call_per_message(chat):
    assert all(len(m.get("tool_calls") or []) <= 1 for m in chat)


def test_parallel_calls_happen():
    find(messages(tool_calls=True), lambda chat: any(len(m.get("tool_calls") or []) >= 2 for m in chat), settings=SEARCH)


@FAST
@given(messages(min_turns=2, max_turns=8))
def test_defaults_have_no_tools_reasoning_or_parts(chat):
    for message in chat:
        assert message["role"] != "tool" and "tool_calls" not in message
        assert not any(field in message for field in REASONING_FIELDS)
        assert isinstance(message["content"], str)


def test_reasoning_and_typed_content_happen_when_allowed():
    search = messages(reasoning=True, typed_content=True, min_turns=2)
    find(search, lambda chat: any(field in m for m in chat for field in REASONING_FIELDS), settings=SEARCH)
    find(search, lambda chat: any(isinstance(m.get("content"), list) for m in chat), settings=SEARCH)


@FAST
@given(messages(typed_content=True, system=True, min_turns=2, max_turns=6))
def test_images_only_come_from_the_user(chat):
    for message in chat:
        if isinstance(message.get("content"), list) and message["role"] != "user":
            assert {part["type"] for part in message["content"]} == {"text"}


def test_fixed_tools_are_used_for_calls_and_not_mutated():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "integer"}, "carrier": {"type": "string", "enum": ["dhl", "ups"]}},
                    "required": ["order_id"],
                },
            },
        }
    ]
    before = json.dumps(tools)

    @FAST
    @given(conversations(tools=tools, tool_calls=True))
    def check(conversation):
        assert conversation.tools == tools and conversation.tools is not tools
        for message in conversation.messages:
            for call in message.get("tool_calls") or []:
                assert call["function"]["name"] == "lookup_order"
                arguments = call["function"]["arguments"]
                arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
                assert isinstance(arguments["order_id"], int)
                assert arguments.get("carrier", "dhl") in ("dhl", "ups")
        conversation.tools[0]["function"]["name"] = "mutated"

    check()
    assert json.dumps(tools) == before


@FAST
@given(conversations(tool_calls=True, tool_call_ids="short", tool_call_arguments="object", min_turns=2))
def test_tool_call_constraints_reach_every_call(conversation):
    calls = [call for message in conversation.messages for call in message.get("tool_calls") or []]
    for call in calls:
        assert len(call["id"]) == 9 and call["id"].isalnum()
        assert isinstance(call["function"]["arguments"], dict)


@FAST
@given(messages(tool_calls=True, tool_call_ids="none", tool_call_arguments="string", min_turns=2))
def test_calls_without_ids_give_results_without_tool_call_id(chat):
    for message in chat:
        assert "tool_call_id" not in message
        for call in message.get("tool_calls") or []:
            assert "id" not in call and isinstance(call["function"]["arguments"], str)


@pytest.mark.parametrize("ending", ["generate", "complete", "continue"])
@FAST
@given(data=st.data())
def test_endings(ending, data):
    conversation = data.draw(conversations(ending=ending, tool_calls=True, typed_content=True))
    last = conversation.messages[-1]
    if ending == "generate":
        assert last["role"] in ("user", "tool")
        assert conversation.wants_generation_prompt() and not conversation.continue_final_message
    else:
        assert last["role"] == "assistant" and not last.get("tool_calls")
        assert conversation.add_generation_prompt is not True and not conversation.wants_generation_prompt()
        assert conversation.continue_final_message is (ending == "continue")
    if ending == "continue":
        assert texts(last)[-1].strip()


@FAST
@given(conversations(reasoning=True, kwargs={"date_string": "26 Jul 2024"}))
def test_kwargs(conversation):
    assert conversation.kwargs["date_string"] == "26 Jul 2024"
    assert set(conversation.kwargs) <= {"date_string", "enable_thinking"}
    assert conversation.kwargs.get("enable_thinking", False) in (True, False)


@FAST
@given(conversations(tools=[]))
def test_an_empty_tool_list_is_kept(conversation):
    assert conversation.tools == []
    VALIDATOR.validate(conversation.to_mapping())


# ---------------------------------------------------------------------------------------------
# the building blocks


@FAST
@given(tool_calls(arguments="string", ids="short"))
def test_string_arguments_and_short_ids(calls):
    for call in calls:
        assert isinstance(json.loads(call["function"]["arguments"]), dict)
        assert len(call["id"]) == 9 and set(call["id"]) <= set(string.ascii_letters + string.digits)
    assert len({call["id"] for call in calls}) == len(calls)


@FAST
@given(tool_calls(arguments="object", ids="long", min_size=2, max_size=4))
def test_object_arguments_and_long_ids(calls):
    assert 2 <= len(calls) <= 4
    for call in calls:
        assert call["type"] == "function" and isinstance(call["function"]["arguments"], dict)
        assert call["id"].startswith("call_") and len(call["id"]) == 29


@FAST
@given(tool_calls(ids="none"))
def test_calls_without_ids(calls):
    assert all("id" not in call for call in calls)


@FAST
@given(tool_schemas(min_size=1, max_size=4))
def test_tool_schemas(tools):
    names = [tool["function"]["name"] for tool in tools]
    assert len(names) == len(set(names))
    for tool in tools:
        parameters = tool["function"]["parameters"]
        assert tool["type"] == "function" and parameters["type"] == "object"
        assert set(parameters.get("required", [])) <= set(parameters["properties"])
        jsonschema.Draft202012Validator.check_schema(parameters)


@FAST
@given(documents())
def test_documents(docs):
    assert 1 <= len(docs) <= 3
    assert all(set(doc) == {"title", "text"} and isinstance(doc["text"], str) for doc in docs)


@FAST
@given(content_parts())
def test_content_parts_always_have_text(parts):
    assert any(part["type"] == "text" for part in parts)
    assert all(part["type"] in ("text", "image") for part in parts)


@FAST
@given(text_content())
def test_text_is_never_blank_by_default(text):
    assert text.strip()
    text.encode("utf-8")


@pytest.mark.parametrize(
    ("label", "predicate"),
    [
        ("blank", lambda text: not text.strip()),
        ("leading whitespace", lambda text: text[:1].isspace() and text.strip()),
        ("trailing newline", lambda text: text.endswith("\n") and text.strip()),
        ("jinja delimiters", lambda text: "{{" in text or "{%" in text),
        ("quotes and backslashes", lambda text: '"' in text and "\\" in text or "'" in text and "\\" in text),
        ("right-to-left", lambda text: any("\u0590" <= ch <= "\u06ff" for ch in text)),
        ("emoji ZWJ", lambda text: "\u200d" in text and any(ord(ch) >= 0x1F300 for ch in text)),
        ("short plain", lambda text: text.isascii() and len(text.split()) <= 6 and text.strip() == text),
    ],
)
def test_text_reaches_its_edge_cases(label, predicate):
    find(text_content(allow_blank=True), predicate, settings=SEARCH)


@pytest.mark.parametrize(
    "make",
    [
        lambda: messages(ends_with="tool"),
        lambda: messages(min_turns=3, max_turns=2),
        lambda: messages(min_turns=0),
        lambda: messages(min_turns=2, max_turns=2, ends_with="user"),
        lambda: messages(ends_with="system"),
        lambda: conversations(max_turns=1, ending="complete"),
        lambda: conversations(ending="later"),
        lambda: conversations(tools=[], tool_calls=True),
        lambda: conversations(tools="get_weather"),
        lambda: conversations(kwargs=["enable_thinking"]),
        lambda: messages(tool_call_ids="uuid"),
        lambda: conversations(tool_call_arguments="dict"),
        lambda: tool_calls(arguments="dict"),
        lambda: tool_calls(ids="uuid"),
        lambda: tool_calls(tools=[{"name": "bare"}]),
        lambda: tool_schemas(min_size=2, max_size=1),
    ],
)
def test_bad_options_fail_when_the_strategy_is_built(make):
    with pytest.raises(InvalidArgument):
        make()
