"""The built-in fixture conversations and the loader that serves them."""

from __future__ import annotations

import json
import unicodedata
from importlib import resources

import jsonschema
import pytest
import yaml

from templatekit.conversation import Conversation, conversation_schema, drop_none_keys
from templatekit.errors import InputError
from templatekit.fixtures import (
    CAPABILITIES,
    builtin_fixtures,
    builtin_names,
    load_fixture,
    used_capabilities,
)

FIXTURE_FILES = sorted(
    (entry for entry in resources.files("templatekit.fixtures").iterdir() if entry.name.endswith(".yaml")),
    key=lambda entry: entry.name,
)


def raw(name: str) -> dict:
    return yaml.safe_load(resources.files("templatekit.fixtures").joinpath(f"{name}.yaml").read_text("utf-8"))


def fixture(name: str) -> Conversation:
    return load_fixture(name)


def texts(message: dict) -> list[str]:
    """Every piece of text a message carries in content (string or typed parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if part.get("type") == "text"]
    return []


def all_text(conversation: Conversation) -> str:
    return "\n".join(text for message in conversation.messages for text in texts(message))


# ---------------------------------------------------------------------------------------------
# every built-in


@pytest.mark.parametrize("entry", FIXTURE_FILES, ids=lambda entry: entry.name)
def test_builtin_file_validates_against_the_schema(entry):
    data = yaml.safe_load(entry.read_text("utf-8"))
    jsonschema.Draft202012Validator(conversation_schema()).validate(data)
    assert set(data) <= set(conversation_schema()["properties"]), "only schema keys, no request-body extras"
    json.dumps(data)


@pytest.mark.parametrize("entry", FIXTURE_FILES, ids=lambda entry: entry.name)
def test_builtin_file_is_named_by_its_stem_and_described_in_one_line(entry):
    data = yaml.safe_load(entry.read_text("utf-8"))
    stem = entry.name[: -len(".yaml")]
    assert data["name"] == stem
    assert data["description"].strip() and "\n" not in data["description"]
    assert data["description"][0].isupper() and data["description"].endswith(".")


def test_names_are_sorted_unique_stems():
    names = builtin_names()
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert names == sorted(entry.name[: -len(".yaml")] for entry in FIXTURE_FILES)
    assert [conversation.name for conversation in builtin_fixtures()] == names


@pytest.mark.parametrize("name", builtin_names())
def test_requires_matches_what_the_conversation_uses(name):
    conversation = fixture(name)
    assert set(conversation.requires) <= set(CAPABILITIES)
    assert list(conversation.requires) == [c for c in CAPABILITIES if c in conversation.requires], "vocabulary order"
    # tool_call_id is the one need a fixture states itself (see used_capabilities).
    stated = tuple(c for c in conversation.requires if c != "tool_call_id")
    assert stated == used_capabilities(conversation)
    if "tool_call_id" in conversation.requires:
        assert any(message.get("tool_call_id") for message in conversation.messages)


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_has_a_plausible_shape(name):
    messages = fixture(name).messages
    roles = [message["role"] for message in messages]
    assert set(roles) <= {"system", "user", "assistant", "tool"}
    assert "system" not in roles[1:], "a system message only comes first"
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            before = messages[index - 1]
            assert before["role"] == "tool" or before.get("tool_calls"), "tool results follow a tool call"
    # Alternation as strict templates (Mistral's) count it: messages that only call tools are skipped.
    talk = [m["role"] for m in messages if m["role"] == "user" or (m["role"] == "assistant" and not m.get("tool_calls"))]
    assert talk[0] == "user"
    assert all(first != second for first, second in zip(talk, talk[1:])), "user and assistant alternate"


# A deliberately plain template: it prints every field a fixture carries, so rendering all of
# them through transformers' own renderer proves they reach a template intact.
PRINT_ALL_TEMPLATE = """
{%- for doc in documents or [] %}[doc {{ doc.title }}]{{ doc.text }}
{% endfor %}
{%- for tool in tools or [] %}[tool]{{ tool | tojson }}
{% endfor %}
{%- for message in messages %}<|{{ message.role }}|>
{%- if message.reasoning_content is defined %}<think>{{ message.reasoning_content }}</think>{% endif %}
{%- if message.content is string %}{{ message.content }}
{%- elif message.content is defined %}{% for part in message.content %}{% if part.type == 'text' %}{{ part.text }}{% else %}<{{ part.type }}>{% endif %}{% endfor %}
{%- endif %}
{%- for call in message.tool_calls or [] %}[call {{ call.id }}]{{ call.function.name }}{{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}{% endfor %}
<|end|>
{% endfor %}
{%- if add_generation_prompt %}<|assistant|>{% if enable_thinking %}<think>{% endif %}{% endif %}
"""


def render(conversation: Conversation) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [drop_none_keys(conversation.messages)],
        tools=conversation.tools,
        documents=conversation.documents,
        chat_template=PRINT_ALL_TEMPLATE,
        continue_final_message=conversation.continue_final_message,
        add_generation_prompt=conversation.wants_generation_prompt(),
        **conversation.kwargs,
    )
    return rendered[0]


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_renders_through_transformers_with_every_text_intact(name):
    conversation = fixture(name)
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


# ---------------------------------------------------------------------------------------------
# each category is really there


def test_basic_is_one_user_question():
    messages = fixture("basic").messages
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"].endswith("?")


def test_system_multi_turn():
    conversation = fixture("system-multi-turn")
    assert [m["role"] for m in conversation.messages] == ["system", "user", "assistant", "user"]
    assert conversation.requires == ("system",)


def test_multi_turn_has_no_system():
    roles = [m["role"] for m in fixture("multi-turn").messages]
    assert "system" not in roles
    assert roles.count("user") >= 2 and roles.count("assistant") >= 2
    assert roles[-1] == "user"


def test_tool_definitions_are_two_openai_style_schemas_with_markup_in_a_description():
    tools = fixture("tool-definitions").tools
    assert len(tools) == 2
    for tool in tools:
        assert tool["type"] == "function"
        assert set(tool["function"]) == {"name", "description", "parameters"}
        assert tool["function"]["parameters"]["type"] == "object"
        assert set(tool["function"]["parameters"]["required"]) <= set(tool["function"]["parameters"]["properties"])
    descriptions = [tool["function"]["description"] for tool in tools]
    assert any(all(ch in text for ch in '&<"') for text in descriptions)


def test_tool_call_uses_object_arguments_and_a_linked_result():
    conversation = fixture("tool-call")
    call_message = next(m for m in conversation.messages if m.get("tool_calls"))
    (call,) = call_message["tool_calls"]
    assert isinstance(call["function"]["arguments"], dict)
    assert call["type"] == "function"
    assert call["function"]["name"] in {tool["function"]["name"] for tool in conversation.tools}
    result = conversation.messages[conversation.messages.index(call_message) + 1]
    assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
    assert len(call["id"]) == 9 and call["id"].isalnum(), "ids Mistral templates accept"


def test_parallel_tool_calls_have_two_calls_and_two_results_in_order():
    messages = fixture("parallel-tool-calls").messages
    index = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
    calls = messages[index]["tool_calls"]
    assert len(calls) == 2
    results = messages[index + 1 : index + 3]
    assert [r["role"] for r in results] == ["tool", "tool"]
    assert [r["tool_call_id"] for r in results] == [c["id"] for c in calls]


def test_string_arguments_are_a_json_string():
    messages = fixture("tool-call-string-arguments").messages
    (call,) = next(m for m in messages if m.get("tool_calls"))["tool_calls"]
    arguments = call["function"]["arguments"]
    assert isinstance(arguments, str)
    assert isinstance(json.loads(arguments), dict)


def test_long_ids_are_openai_style_and_results_arrive_out_of_order():
    conversation = fixture("tool-call-long-ids")
    calls = next(m for m in conversation.messages if m.get("tool_calls"))["tool_calls"]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 29 for c in calls)
    result_ids = [m["tool_call_id"] for m in conversation.messages if m["role"] == "tool"]
    assert sorted(result_ids) == sorted(c["id"] for c in calls)
    assert result_ids != [c["id"] for c in calls]
    assert "tool_call_id" in conversation.requires


def test_documents_are_title_and_text_dicts():
    docs = fixture("documents").documents
    assert len(docs) >= 2
    assert all(set(doc) == {"title", "text"} and doc["title"] and doc["text"] for doc in docs)


def test_multimodal_content_is_typed_parts_with_images():
    messages = fixture("multimodal").messages
    parts = [part for m in messages for part in m["content"]]
    assert all(isinstance(m["content"], list) for m in messages)
    assert {part["type"] for part in parts} == {"text", "image"}
    assert {"type": "image"} in parts
    assert any(m["role"] == "assistant" for m in messages)


def test_reasoning_is_in_the_history_and_thinking_is_enabled():
    conversation = fixture("reasoning")
    thought = [m for m in conversation.messages if m.get("reasoning_content")]
    assert thought and thought[0]["role"] == "assistant" and thought[0]["content"]
    assert conversation.messages.index(thought[0]) < len(conversation.messages) - 1, "in history, not last"
    assert conversation.kwargs == {"enable_thinking": True}


def test_prefill_continues_a_partial_assistant_message():
    conversation = fixture("prefill")
    assert conversation.continue_final_message is True
    assert conversation.add_generation_prompt is False
    assert [m["role"] for m in conversation.messages[-2:]] == ["user", "assistant"]
    assert conversation.messages[-1]["content"].strip(), "there must be text to continue"
    assert not conversation.wants_generation_prompt()


def test_unicode_has_rtl_cjk_emoji_and_combining_marks():
    text = all_text(fixture("unicode"))
    bidi = {unicodedata.bidirectional(ch) for ch in text}
    assert {"AL", "R", "L"} <= bidi, "Arabic, Hebrew and left-to-right text"
    assert any(0x064B <= ord(ch) <= 0x0652 for ch in text), "Arabic diacritics"
    assert any(unicodedata.category(ch) == "Mn" for ch in text)
    assert "e\u0301" in text, "a combining accent on a Latin letter"
    assert any("CJK UNIFIED IDEOGRAPH" in unicodedata.name(ch, "") for ch in text)
    assert any("HIRAGANA" in unicodedata.name(ch, "") for ch in text)
    assert any("HANGUL" in unicodedata.name(ch, "") for ch in text)
    assert "👩\u200d💻" in text and "👨\u200d👩\u200d👧\u200d👦" in text, "emoji ZWJ sequences"
    assert "🇸🇦" in text and "🇯🇵" in text, "flags (regional indicator pairs)"
    assert "a\u200db" in text and "\u200c" in text and "\u200f" in text, "zero-width joiner, non-joiner, RLM"
    mixed = [t for m in fixture("unicode").messages for t in texts(m)]
    assert any({"AL", "L"} <= {unicodedata.bidirectional(ch) for ch in t} for t in mixed), "mixed direction"


def test_empty_and_null_content():
    messages = fixture("empty-and-null-content").messages
    assert any(m["role"] == "assistant" and m.get("content") == "" for m in messages)
    nulls = [m for m in messages if "content" in m and m["content"] is None]
    assert nulls and all(m["role"] == "assistant" and m["tool_calls"] for m in nulls)


def test_long_conversation_has_at_least_forty_turns():
    messages = fixture("long-conversation").messages
    assert len(messages) >= 40
    assert len({m["content"] for m in messages}) == len(messages), "no copy-pasted turns"


def test_whitespace_edges_are_present():
    contents = [m["content"] for m in fixture("whitespace").messages]
    assert any(c[0].isspace() for c in contents) and any(c[-1].isspace() for c in contents)
    assert any(c.startswith("\n") for c in contents) and any(c.endswith("\n") for c in contents)
    assert any("\t" in c for c in contents) and any("\r\n" in c for c in contents)
    assert any("\n\n" in c for c in contents)


def test_ends_with_assistant_gets_no_generation_prompt():
    conversation = fixture("ends-with-assistant")
    assert conversation.messages[-1]["role"] == "assistant"
    assert conversation.add_generation_prompt is False
    assert conversation.continue_final_message is False
    assert not conversation.wants_generation_prompt()


def test_markup_in_content_looks_like_template_syntax_and_tokens():
    text = all_text(fixture("markup-in-content"))
    for needle in ("{{", "{%", "{#", "<|im_end|>", "</s>", "[INST]", "<think>", "\\", '"', "'"):
        assert needle in text


# ---------------------------------------------------------------------------------------------
# loading


def test_load_fixture_by_name_equals_the_file():
    data = raw("tool-call")
    assert load_fixture("tool-call") == Conversation.from_mapping(data, "x")


def test_load_fixture_from_a_yaml_path(tmp_path):
    path = tmp_path / "greeting.yaml"
    path.write_text("messages:\n  - role: user\n    content: 'Salam!'\nadd_generation_prompt: true\n", "utf-8")
    conversation = load_fixture(str(path))
    assert conversation.messages == [{"role": "user", "content": "Salam!"}]
    assert conversation.add_generation_prompt is True
    assert conversation.name == "greeting"
    assert load_fixture(path) == conversation


def test_load_fixture_from_a_json_path(tmp_path):
    path = tmp_path / "request.json"
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"enable_thinking": False}}
    path.write_text(json.dumps(body), "utf-8")
    conversation = load_fixture(str(path))
    assert conversation.messages == body["messages"]
    assert conversation.kwargs == {"enable_thinking": False}
    assert conversation.name == "request"


def test_a_file_without_a_suffix_in_the_working_directory_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mychat").write_text("messages: [{role: user, content: hey}]\n", "utf-8")
    assert load_fixture("mychat").messages == [{"role": "user", "content": "hey"}]


def test_a_builtin_name_wins_over_a_file_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "basic").write_text("messages: [{role: user, content: shadow}]\n", "utf-8")
    assert load_fixture("basic") == fixture("basic")


def listing() -> str:
    return f"(built-ins: {', '.join(builtin_names())})"


def test_unknown_name_is_a_one_line_input_error():
    with pytest.raises(InputError) as caught:
        load_fixture("nonsense")
    assert str(caught.value) == f"nonsense: no built-in fixture or file with this name {listing()}"
    assert caught.value.location == "nonsense"


def test_unknown_name_suggests_the_closest_builtin():
    with pytest.raises(InputError) as caught:
        load_fixture("tool_call")
    assert str(caught.value) == (
        f"tool_call: no built-in fixture or file with this name, did you mean 'tool-call'? {listing()}"
    )


def test_empty_name_is_an_input_error():
    with pytest.raises(InputError) as caught:
        load_fixture("")
    assert str(caught.value) == f"empty fixture name {listing()}"


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "gone.yaml"
    with pytest.raises(InputError) as caught:
        load_fixture(str(path))
    assert str(caught.value) == f"{path}: no such file"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("messages: [\n", "invalid YAML at line 2 column 1: expected the node content, but found '<stream end>'"),
        ("messages:\n  - content: hi\n", "messages[0]: missing required field 'role'"),
        ("mesages: []\n", "unknown key 'mesages' (did you mean 'messages'?)"),
        ("- role: user\n", "a conversation must be a mapping with a 'messages' list, got array"),
        ("messages: [{role: user, content: 3}]\n", "messages[0].content: must be string or array or null, got number"),
    ],
)
def test_bad_file_is_a_one_line_input_error(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(InputError) as caught:
        load_fixture(str(path))
    assert str(caught.value) == f"{path}: {problem}"
    assert "\n" not in str(caught.value)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"messages": [}', "utf-8")
    with pytest.raises(InputError) as caught:
        load_fixture(str(path))
    assert str(caught.value) == f"{path}: invalid JSON at line 1 column 15: Expecting value"


# ---------------------------------------------------------------------------------------------
# copies


def test_loaded_fixtures_are_independent_copies():
    first = load_fixture("tool-call")
    first.messages[0]["content"] = "changed"
    first.messages.append({"role": "user", "content": "extra"})
    first.tools[0]["function"]["name"] = "changed"
    first.kwargs["x"] = 1
    second = load_fixture("tool-call")
    assert second.messages[0]["content"] == "What's the weather like in Riyadh right now?"
    assert len(second.messages) == 5
    assert second.tools[0]["function"]["name"] == "get_current_weather"
    assert second.kwargs == {}


def test_builtin_fixtures_returns_fresh_objects_each_call():
    first, second = builtin_fixtures(), builtin_fixtures()
    assert first == second
    for a, b in zip(first, second):
        assert a is not b and a.messages is not b.messages
    first[0].messages.clear()
    assert builtin_fixtures()[0].messages


def test_loading_fixtures_does_not_import_hypothesis():
    import subprocess
    import sys

    code = "import sys, templatekit.fixtures as f; f.builtin_fixtures(); f.load_fixture('basic'); print('hypothesis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- conversation files that are broken or hostile ----------------------------------------------

ALIAS_BOMB = "messages:\n- role: user\n  content: hi\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]\n" for level in range(1, 9)
)


HOSTILE_CONVERSATIONS = [
    ("deep.json", '{"messages": [{"role": "user", "content": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}]}",
     "JSON nested too deeply to parse"),
    ("deep.yaml", "messages:\n- role: user\n  content: x\n  extra: " + "[" * 100_000 + "]" * 100_000 + "\n",
     "YAML nested too deeply to parse"),
    ("nested.json", '{"messages": [{"role": "user", "content": "x", "extra": ' + "[" * 500 + "]" * 500 + "}]}",
     "nested more than 128 levels deep"),
    ("bigint.json", '[{"role": "user", "content": "x", "n": ' + "9" * 5000 + "}]",
     "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion"),
    ("bigint.yaml", "- {role: user, content: x, n: " + "9" * 5000 + "}\n",
     "invalid YAML: Exceeds the limit (4300 digits) for integer string conversion"),
    ("bomb.yaml", ALIAS_BOMB, "holds more than 2,000,000 values once YAML aliases are expanded"),
    ("self.yaml", "messages:\n- &m\n  role: user\n  content: hi\n  self: *m\n", "the data refers to itself"),
    ("list.yaml", "messages: &all\n- role: user\n  content: hi\n  all: *all\n", "the data refers to itself"),
]


@pytest.mark.parametrize("name, content, problem", HOSTILE_CONVERSATIONS, ids=[item[0] for item in HOSTILE_CONVERSATIONS])
def test_a_hostile_conversation_file_is_one_line_naming_it(tmp_path, run, name, content, problem):
    """Each of these used to end in 'internal error: RecursionError/ValueError', an unnamed
    render failure, or (the alias bomb: nine lines that expand to 10**9 values) run for ever."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    chatml = tmp_path / "t.jinja"
    chatml.write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_fixture(str(path))
    assert str(error.value).startswith(f"{path}: {problem}")
    result = run("render", str(chatml), "--messages", str(path), "--raw")
    assert result.exit_code == 2
    assert result.output.startswith(f"templatekit: error: {path}: {problem}")
    assert result.output.count("\n") == 1


def test_shared_yaml_values_within_bounds_still_load(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text("messages:\n- &m {role: user, content: hi}\n- {role: assistant, content: yo}\n- *m\n", encoding="utf-8")
    assert [message["content"] for message in load_fixture(str(path)).messages] == ["hi", "yo", "hi"]


def test_a_bare_yaml_date_stays_the_text_written(tmp_path, run):
    """YAML reads 2025-01-15 as a date, which the template saw as the placeholder "<date>"."""
    fixture = tmp_path / "dated.yaml"
    fixture.write_text("messages:\n- {role: user, content: 2025-01-15 10:30:00}\n- role: assistant\n"
                       "  tool_calls: [{type: function, function: {name: f, arguments: {date: 2025-01-15}}}]\n",
                       encoding="utf-8")
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}|{% for c in m.tool_calls or [] %}"
                        "{{ c.function.arguments | tojson }}{% endfor %}{% endfor %}", encoding="utf-8")
    result = run("render", str(template), "-f", str(fixture), "--raw")
    assert result.exit_code == 0 and result.output == '2025-01-15 10:30:00||{"date": "2025-01-15"}'
    assert load_fixture(str(fixture)).messages[0]["content"] == "2025-01-15 10:30:00"


@pytest.mark.parametrize("value, kind", [("!!binary aGVsbG8=", "binary"), ("!!set {a, b}", "set")])
def test_yaml_values_without_a_json_form_are_refused_where_written(tmp_path, value, kind):
    fixture = tmp_path / "odd.yaml"
    fixture.write_text(f"messages:\n- role: user\n  content: {value}\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_fixture(str(fixture))
    assert str(error.value) == (f"{fixture}: invalid YAML at line 3 column 12: {kind} values have no JSON form; "
                                "write a string or a list")
