"""Hypothesis strategies for chat conversations, for property tests of chat templates.

Everything generated is plain JSON data, valid against ``templatekit/fixtures/schema.json``, and
shaped the way real clients send it, so that a template failing on it has a real bug rather than
a complaint about an impossible input: a system message only comes first, tool results only
follow the assistant message that called the tools, and user and assistant turns alternate
unless you ask for free order (many templates raise on anything else). Text mixes short plain
sentences with the inputs that break templates in practice: leading and trailing whitespace,
``{{``/``{%`` sequences, special-token look-alikes, quotes, backslashes, right-to-left scripts,
CJK and emoji ZWJ sequences.

    from hypothesis import given
    from templatekit.strategies import conversations

    @given(conversations(tool_calls=True))
    def test_my_template_renders(conversation):
        prompt = my_render(conversation.messages, tools=conversation.tools,
                           add_generation_prompt=conversation.wants_generation_prompt(),
                           continue_final_message=conversation.continue_final_message,
                           **conversation.kwargs)
        assert "<|im_start|>assistant" in prompt

This module is the only one in templatekit that imports hypothesis; nothing on the lint path
imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import string
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from .conversation import REASONING_FIELDS, Conversation
from .fixtures import used_capabilities

__all__ = [
    "content_parts",
    "conversations",
    "documents",
    "messages",
    "text_content",
    "tool_calls",
    "tool_schemas",
]

# Whole sentences rather than random words: they read like real chats, and one draw per sentence
# keeps a conversation to a few hundred choices, which is most of what generation costs.
_SENTENCES = (
    "Hi!", "Thanks.", "Yes, please.", "No.", "OK", "Hello, can you help me?",
    "What is the capital of Australia?", "Can you summarise this article in three bullet points?",
    "Translate 'good morning' into Arabic.", "Write a haiku about autumn rain.",
    "My Python script raises a KeyError on line 12.", "How long should I boil an egg for a runny yolk?",
    "The meeting moved to Thursday at 10:30.", "Sure, here is a shorter version.",
    "I could not find that order number in the system.", "Let me check the weather for you.",
    "It is 24 °C and sunny in Cairo right now.", "Could you explain that more simply?",
    "Here is the corrected function:", "That depends on your budget and how far you travel each day.",
    "The train to Lisbon leaves at 08:15 from platform 4.", "Please reply in JSON only.",
    "I'm sorry, I can't help with that request.", "Step 1: preheat the oven to 200 °C.",
    "Which of these two options is cheaper over five years?", "Great question!",
    "The invoice total is 1,249.50 euros including VAT.", "Remind me tomorrow at 9 am.",
    "Use a list comprehension instead of the loop.", "Why does the model repeat itself?",
    "Set max_new_tokens to 256 and try again.", "Add a system prompt that sets the tone.",
)
_WORDS = (
    "the", "a", "my", "your", "this", "that", "please", "can", "you", "explain", "how", "why",
    "what", "when", "where", "is", "are", "was", "does", "do", "make", "find", "check", "write",
    "summarise", "translate", "list", "compare", "weather", "train", "ticket", "recipe", "garden",
    "invoice", "meeting", "report", "budget", "python", "function", "error", "model", "template",
    "prompt", "token", "answer", "question", "today", "tomorrow", "quickly", "carefully", "again",
    "three", "ten", "euros", "minutes", "kilometres", "Cairo", "Lisbon", "Tokyo", "Monday",
    "and", "or", "but", "with", "without", "for", "about", "in", "on", "to", "from", "not",
)

# Fragments that have broken real templates or the engines that run them: Jinja delimiters that
# must stay data, special-token look-alikes, quotes and backslashes that tojson escapes, markup
# characters, bidirectional and complex scripts, emoji sequences and invisible joiners.
_TRICKY = (
    "{{ messages }}", "{% if true %}", "{%- endif -%}", "{# note #}", "{{", "}}", "{%", "%}",
    "{% raw %}", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "</s>", "<s>", "[INST]", "[/INST]",
    "<think>", "</think>", "<tool_call>", '"double quotes"', "'single quotes'", "it's",
    "C:\\Users\\layla", "a literal \\n", "back\\\\slash", "a < b && c > d", "<b>bold</b>",
    '{"key": "value"}', "None of the above", "True or False?", "100%", "#hashtag", "`code`",
    "```python\nprint('hi')\n```", "مَرْحَبًا بالعالم", "שלום עולם", "你好，世界", "こんにちは",
    "안녕하세요", "Привет", "👩\u200d💻", "👨\u200d👩\u200d👧\u200d👦", "🇸🇦🇯🇵", "👍🏽", "🏳️\u200d🌈",
    "cafe\u0301", "می\u200cخواهم", "a\u200db", "\u200fRTL mark", "naïve résumé", "…", "—",
)
_EDGES = ("", " ", "  ", "\n", "\n\n", "\t", " \n", "\r\n", "\n  ")
_BLANKS = ("", " ", "\n", "  \n\t")

_TOOL_NAMES = (
    "get_current_weather", "search_web", "convert_currency", "create_calendar_event",
    "lookup_order", "send_email", "calculate", "get_stock_price", "translate_text", "read_file",
)
_PROPERTY_NAMES = (
    "location", "query", "unit", "limit", "city", "date", "email", "amount", "currency", "tags",
    "filters", "verbose", "timezone", "language", "path", "subject", "body", "max_results",
)
_ENUM_VALUES = ("celsius", "fahrenheit", "asc", "desc", "low", "medium", "high", "json", "text")
_DOCUMENT_TITLES = (
    "Annual leave policy", "Product FAQ", "Release notes 2.4", "Meeting minutes, 3 March",
    "Installation guide", "Returns and refunds", "Security advisory", "Onboarding checklist",
)

# Characters a client could plausibly send: no lone surrogates (not encodable as UTF-8), no
# unassigned or private-use code points, and no control characters except newline and tab.
_CHARACTERS = st.characters(exclude_categories=("Cs", "Cc", "Co", "Cn"), include_characters="\n\t")

_ALPHANUMERIC = string.ascii_letters + string.digits

_ARGUMENT_ENCODINGS = ("any", "object", "string")
_ID_STYLES = ("short", "long", "none")
_ENDS_WITH = ("user", "assistant", "tool")
_ENDINGS = ("generate", "complete", "continue")


# ---------------------------------------------------------------------------------------------
# text


_plain_text = st.lists(st.sampled_from(_SENTENCES), min_size=1, max_size=3).map(" ".join)
_tricky_text = st.builds(
    lambda pieces, separator: separator.join(pieces),
    st.lists(st.one_of(st.sampled_from(_WORDS), st.sampled_from(_TRICKY)), min_size=1, max_size=8),
    st.sampled_from((" ", "\n", "")),
)
_edged_text = st.builds(
    lambda before, core, after: before + core + after,
    st.sampled_from(_EDGES),
    st.one_of(_plain_text, _tricky_text),
    st.sampled_from(_EDGES),
)
_arbitrary_text = st.text(_CHARACTERS, min_size=1, max_size=80).filter(lambda text: text.strip())
_short_text = st.lists(st.sampled_from(_WORDS), min_size=1, max_size=5).map(" ".join)


@st.composite
def _text(draw: Any, allow_blank: bool) -> str:
    # Weighted by hand so plain text dominates, and so shrinking (towards 0) ends at plain text.
    kind = draw(st.integers(0, 10 if allow_blank else 9))
    if kind <= 3:
        return draw(_plain_text)
    if kind <= 5:
        return draw(_edged_text)
    if kind <= 7:
        return draw(_tricky_text)
    if kind <= 9:
        return draw(_arbitrary_text)
    return draw(st.sampled_from(_BLANKS))


def text_content(*, allow_blank: bool = False) -> st.SearchStrategy[str]:
    """Message text: mostly short plain sentences, often with the edge cases templates get wrong.

    The edge cases are leading/trailing whitespace and newlines, Jinja delimiters, special-token
    look-alikes, quotes and backslashes, Arabic/Hebrew/CJK text, emoji ZWJ sequences, combining
    marks and arbitrary Unicode. The text always has a non-whitespace character unless
    ``allow_blank`` is true, which adds ``""`` and whitespace-only strings.

        @given(text_content())
        def test_content_is_printed_verbatim(text):
            assert text in render([{"role": "user", "content": text}])
    """
    return _TEXT_OR_BLANK if allow_blank else _TEXT


# Built once: hypothesis validates every new strategy object on first draw, and these are drawn
# dozens of times per conversation.
_TEXT = _text(False)
_TEXT_OR_BLANK = _text(True)


_image_part = st.one_of(
    st.builds(lambda: {"type": "image"}),
    st.builds(lambda n: {"type": "image", "url": f"https://example.com/images/{n}.jpg"}, st.integers(1, 999)),
)


@st.composite
def _parts(draw: Any, images: bool) -> list[dict]:
    texts = draw(st.lists(text_content(), min_size=1, max_size=3))
    parts: list[dict] = [{"type": "text", "text": text} for text in texts]
    if images:
        parts += draw(st.lists(_image_part, max_size=2))
    return draw(st.permutations(parts))


def content_parts(*, images: bool = True) -> st.SearchStrategy[list[dict]]:
    """Typed (OpenAI/transformers-style) content: a list of ``{"type": "text", "text": ...}`` parts.

    With ``images`` (the default) image parts (``{"type": "image"}``, optionally with a ``url``)
    are mixed in at any position; there is always at least one text part, because that is where
    ``continue_final_message`` and every text check look.

        @given(content_parts(images=False))
        def test_parts_render_like_a_string(parts):
            as_string = "".join(part["text"] for part in parts)
            assert render_content(parts) == render_content(as_string)
    """
    return _PARTS_WITH_IMAGES if images else _TEXT_PARTS


_PARTS_WITH_IMAGES = _parts(True)
_TEXT_PARTS = _parts(False)


# ---------------------------------------------------------------------------------------------
# tools


_identifier = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_lowercase),
    st.text(string.ascii_lowercase + string.digits + "_", min_size=1, max_size=23),
)
_tool_name = st.one_of(st.sampled_from(_TOOL_NAMES), _identifier)
_property_name = st.one_of(st.sampled_from(_PROPERTY_NAMES), _identifier)
_description = st.one_of(_plain_text, _tricky_text)
_maybe_description = st.one_of(st.builds(dict), _description.map(lambda text: {"description": text}))


def _with_description(schema: dict) -> st.SearchStrategy[dict]:
    return _maybe_description.map(lambda extra: {**schema, **extra})


@lru_cache(maxsize=None)
def _property_schema(depth: int) -> st.SearchStrategy[dict]:
    leaves = [
        _with_description({"type": "string"}),
        st.lists(st.sampled_from(_ENUM_VALUES), min_size=2, max_size=4, unique=True).flatmap(
            lambda values: _with_description({"type": "string", "enum": values})
        ),
        _with_description({"type": "integer"}),
        _with_description({"type": "number"}),
        _with_description({"type": "boolean"}),
        _with_description({"type": "array", "items": {"type": "string"}}),
    ]
    if depth > 0:
        leaves.append(_parameters(depth - 1).flatmap(_with_description))
    return st.one_of(leaves).map(_fresh)


def _fresh(schema: dict) -> dict:
    # Fixed schema pieces come from shared literals; a deep copy keeps examples from aliasing them.
    return json.loads(json.dumps(schema))


@st.composite
def _parameters(draw: Any, depth: int = 1) -> dict:
    properties = draw(st.dictionaries(_property_name, _property_schema(depth), max_size=4))
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if properties:
        required = draw(st.lists(st.sampled_from(sorted(properties)), unique=True))
        if required:
            schema["required"] = required
    return schema


@st.composite
def _tool_schema(draw: Any) -> dict:
    return {
        "type": "function",
        "function": {
            "name": draw(_tool_name),
            "description": draw(_description),
            "parameters": draw(_parameters()),
        },
    }


def tool_schemas(*, min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[list[dict]]:
    """Tool definitions as transformers passes them: ``{"type": "function", "function": {...}}``.

    Names are unique; parameters are JSON schemas with string (optionally enum), integer,
    number, boolean, array and nested object properties, some of them required. Descriptions
    carry the same edge cases as message text (quotes, ``&``, ``<``, Jinja delimiters).

        @given(tool_schemas())
        def test_every_tool_name_is_rendered(tools):
            prompt = render(messages=[{"role": "user", "content": "hi"}], tools=tools)
            assert all(tool["function"]["name"] in prompt for tool in tools)
    """
    _check_sizes("tool_schemas", min_size, max_size, lowest=0)
    return st.lists(
        _tool_schema(), min_size=min_size, max_size=max_size, unique_by=lambda tool: tool["function"]["name"]
    )


_json_scalar = st.one_of(
    _short_text,
    st.integers(-10**6, 10**6),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda number: round(number, 2)),
    st.booleans(),
    st.none(),
)


def _value_for(schema: Mapping) -> st.SearchStrategy[Any]:
    return _value_for_json(json.dumps(schema))


@lru_cache(maxsize=1024)
def _value_for_json(key: str) -> st.SearchStrategy[Any]:
    # Keyed by the schema's JSON so each distinct schema builds (and validates) its strategy once.
    schema = json.loads(key)
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    kind = schema.get("type")
    if kind == "string":
        return st.one_of(_short_text, _tricky_text)
    if kind == "integer":
        return st.integers(-10**6, 10**6)
    if kind == "number":
        return st.one_of(
            st.integers(-1000, 1000),
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda number: round(number, 2)),
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(_value_for(schema.get("items") or {}), max_size=3)
    if kind == "object":
        return _arguments_for(schema)
    return _json_scalar


def _arguments_for(parameters: Mapping) -> st.SearchStrategy[dict]:
    return _arguments_for_json(json.dumps(parameters))


@lru_cache(maxsize=1024)
def _arguments_for_json(key: str) -> st.SearchStrategy[dict]:
    parameters = json.loads(key)
    properties = parameters.get("properties") or {}
    required = set(parameters.get("required") or ())
    return st.fixed_dictionaries(
        {name: _value_for(schema) for name, schema in properties.items() if name in required},
        optional={name: _value_for(schema) for name, schema in properties.items() if name not in required},
    )


_free_arguments = st.dictionaries(_property_name, _json_scalar, max_size=4)


class _CallIds:
    """Hands out the tool-call ids of one conversation: one style, never a repeat.

    Ids are a random stem plus a counter so they stay unique even after shrinking makes every
    random part equal. "short" ids are 9 alphanumerics (Mistral templates accept nothing else),
    "long" ones look like OpenAI's ``call_`` ids, "none" leaves calls without ids.
    """

    def __init__(self, style: str, stem: str, start: int) -> None:
        self.style = style
        self.stem = stem
        self.counter = start

    def next(self) -> str | None:
        if self.style == "none":
            return None
        self.counter += 1
        # Four digits keep short ids at exactly nine characters; wrapping needs 10,000 calls.
        number = f"{self.counter % 10000:04d}"
        if self.style == "short":
            return f"{self.stem[:5]}{number}"
        return f"call_{self.stem}{number}"


@st.composite
def _call_ids(draw: Any, style: str) -> _CallIds:
    if style == "any":
        style = draw(st.sampled_from(_ID_STYLES))
    stem = draw(st.text(_ALPHANUMERIC, min_size=20, max_size=20))
    return _CallIds(style, stem, draw(st.integers(0, 8999)))


@st.composite
def _call_batch(
    draw: Any, tools: Sequence[Mapping] | None, min_size: int, max_size: int, arguments: str, ids: _CallIds
) -> list[dict]:
    count = draw(st.integers(min_size, max_size))
    # One message's calls come from one client, so they share one argument encoding.
    as_string = arguments == "string" or (arguments == "any" and draw(st.booleans()))
    separators = draw(st.sampled_from((None, (",", ":"))))
    ensure_ascii = draw(st.booleans())
    calls = []
    for _ in range(count):
        if tools:
            tool = draw(st.sampled_from(list(tools)))["function"]
            name = tool["name"]
            values = draw(_arguments_for(tool.get("parameters") or {}))
        else:
            name = draw(_tool_name)
            values = draw(_free_arguments)
        payload: Any = json.dumps(values, ensure_ascii=ensure_ascii, separators=separators) if as_string else values
        call: dict[str, Any] = {}
        call_id = ids.next()
        if call_id is not None:
            call["id"] = call_id
        call["type"] = "function"
        call["function"] = {"name": name, "arguments": payload}
        calls.append(call)
    return calls


def tool_calls(
    tools: Sequence[Mapping] | None = None,
    *,
    min_size: int = 1,
    max_size: int = 3,
    arguments: str = "any",
    ids: str = "any",
) -> st.SearchStrategy[list[dict]]:
    """The ``tool_calls`` list of one assistant message.

    Each call is ``{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}``.
    With ``tools`` (a list of tool schemas) names and arguments follow those schemas; without,
    they are invented. ``arguments`` is ``"object"`` (the transformers convention), ``"string"``
    (a JSON string, the OpenAI wire format) or ``"any"``. ``ids`` is ``"short"`` (9 alphanumerics,
    what Mistral templates demand), ``"long"`` (OpenAI-style ``call_...``), ``"none"`` (no id) or
    ``"any"``; ids are unique within the list.

        @given(tool_calls(arguments="string"))
        def test_string_arguments_are_printed_as_given(calls):
            chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": calls}]
            prompt = render(chat)
            assert all(call["function"]["arguments"] in prompt for call in calls)
    """
    _check_choice("arguments", arguments, _ARGUMENT_ENCODINGS)
    _check_choice("ids", ids, ("any", *_ID_STYLES))
    _check_sizes("tool_calls", min_size, max_size, lowest=1)
    tools = _check_tools(tools)
    return _call_ids(ids).flatmap(lambda call_ids: _call_batch(tools, min_size, max_size, arguments, call_ids))


_result_payload = st.dictionaries(_property_name, _json_scalar, min_size=1, max_size=4).map(
    lambda payload: json.dumps(payload, ensure_ascii=False)
)
# Tools mostly answer with JSON, sometimes with prose (an error message, a search snippet).
_result_content = st.one_of(_result_payload, _TEXT)


@st.composite
def _tool_result(draw: Any, call: Mapping) -> dict:
    message: dict[str, Any] = {"role": "tool"}
    if "id" in call:
        message["tool_call_id"] = call["id"]
    if draw(st.booleans()):
        message["name"] = call["function"]["name"]
    message["content"] = draw(_result_content)
    return message


# ---------------------------------------------------------------------------------------------
# documents


@st.composite
def _document(draw: Any) -> dict:
    title = draw(st.one_of(st.sampled_from(_DOCUMENT_TITLES), _tricky_text))
    return {"title": title, "text": draw(text_content())}


def documents(*, min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[list[dict]]:
    """RAG documents as transformers passes them: dicts with ``title`` and ``text``.

        @given(documents())
        def test_document_bodies_reach_the_prompt(docs):
            prompt = render(messages=[{"role": "user", "content": "Summarise."}], documents=docs)
            assert all(doc["text"] in prompt for doc in docs)
    """
    _check_sizes("documents", min_size, max_size, lowest=0)
    return st.lists(_document(), min_size=min_size, max_size=max_size)


# ---------------------------------------------------------------------------------------------
# messages


@dataclasses.dataclass(frozen=True)
class _Shape:
    system: bool | None
    tool_calls: bool
    tools: tuple | None
    parallel_tool_calls: bool
    tool_call_ids: str
    tool_call_arguments: str
    reasoning: bool
    typed_content: bool
    alternate: bool
    min_turns: int
    max_turns: int
    ends_with: str | None


def _turn_count(draw: Any, shape: _Shape, ends_with: str | None) -> int:
    count = draw(st.integers(shape.min_turns, shape.max_turns))
    if not shape.alternate or ends_with is None:
        return count
    # Alternation starting with a user turn ends with the user exactly when the count is odd.
    wanted = 1 if ends_with == "user" else 0
    if count % 2 == wanted:
        return count
    return count + 1 if count + 1 <= shape.max_turns else count - 1


def _feasible_ends(shape: _Shape) -> list[str]:
    """The final roles the turn range allows; a count of the right parity must fit in the range."""
    counts = range(shape.min_turns, shape.max_turns + 1)
    ends = []
    for end in _ENDS_WITH:
        if end == "tool" and not shape.tool_calls:
            continue
        if not shape.alternate:
            ends.append(end)
        elif any(count % 2 == (1 if end == "user" else 0) for count in counts):
            ends.append(end)
    return ends


@st.composite
def _reasoning(draw: Any, shape: _Shape, message: dict) -> None:
    if shape.reasoning and draw(st.booleans()):
        message[draw(st.sampled_from(REASONING_FIELDS))] = draw(text_content())


@st.composite
def _plain_content(draw: Any, shape: _Shape, allow_blank: bool = False) -> str | list:
    # Outside user turns only text parts: nobody sends an image as the system prompt or an answer.
    if shape.typed_content and draw(st.booleans()):
        return draw(content_parts(images=False))
    return draw(text_content(allow_blank=allow_blank))


@st.composite
def _user_content(draw: Any, shape: _Shape) -> str | list:
    if shape.typed_content and draw(st.booleans()):
        return draw(content_parts(images=True))
    return draw(text_content())


@st.composite
def _answer(draw: Any, shape: _Shape, prefill: bool) -> dict:
    message: dict[str, Any] = {"role": "assistant"}
    # An empty answer happens (a model that stopped at once) but rarely; a prefill needs text to continue.
    blank = not prefill and draw(st.integers(0, 9)) == 9
    message["content"] = "" if blank else draw(_plain_content(shape))
    draw(_reasoning(shape, message))
    return message


@st.composite
def _tool_round(draw: Any, shape: _Shape, tools: Sequence[Mapping], ids: _CallIds) -> list[dict]:
    message: dict[str, Any] = {"role": "assistant"}
    # What clients put beside tool calls varies: no key, null (OpenAI), "" or a short preamble.
    content_kind = draw(st.integers(0, 3))
    if content_kind == 1:
        message["content"] = None
    elif content_kind == 2:
        message["content"] = ""
    elif content_kind == 3:
        message["content"] = draw(text_content())
    draw(_reasoning(shape, message))
    most = 3 if shape.parallel_tool_calls else 1
    message["tool_calls"] = draw(_call_batch(tools, 1, most, shape.tool_call_arguments, ids))
    return [message] + [draw(_tool_result(call)) for call in message["tool_calls"]]


@st.composite
def _assistant_turn(
    draw: Any, shape: _Shape, tools: Sequence[Mapping] | None, ids: _CallIds, final: str | None, prefill: bool
) -> list[dict]:
    """One assistant turn; ``final`` is the role the conversation must end with if this turn is last."""
    use_tools = shape.tool_calls and (final == "tool" or draw(st.booleans()))
    if not use_tools:
        return [draw(_answer(shape, prefill))]
    turn: list[dict] = []
    for _ in range(draw(st.integers(1, 2))):
        turn += draw(_tool_round(shape, tools, ids))
    if final is None:
        # Not the last turn: the assistant answers after its tools before anyone speaks again.
        answered = True
    elif final == "any-last":
        answered = draw(st.booleans())
    else:
        answered = final == "assistant"
    return turn + [draw(_answer(shape, prefill))] if answered else turn


@st.composite
def _messages(draw: Any, shape: _Shape, tools: Sequence[Mapping] | None = None, prefill: bool = False) -> list[dict]:
    if shape.tool_calls and not tools:
        tools = draw(tool_schemas())
    ids = draw(_call_ids(shape.tool_call_ids))
    ends_with = shape.ends_with
    count = _turn_count(draw, shape, ends_with)
    if shape.alternate:
        roles = ["user" if index % 2 == 0 else "assistant" for index in range(count)]
    else:
        roles = draw(st.lists(st.sampled_from(("user", "assistant")), min_size=count, max_size=count))
        if ends_with is not None:
            roles[-1] = "user" if ends_with == "user" else "assistant"

    result: list[dict] = []
    wants_system = shape.system if shape.system is not None else draw(st.booleans())
    if wants_system:
        result.append({"role": "system", "content": draw(_plain_content(shape))})
    for index, role in enumerate(roles):
        if role == "user":
            result.append({"role": "user", "content": draw(_user_content(shape))})
            continue
        last = index == count - 1
        final = (ends_with or "any-last") if last else None
        result += draw(_assistant_turn(shape, tools, ids, final, prefill and last))
    return result


def messages(
    *,
    system: bool | None = None,
    tool_calls: bool = False,
    tools: Sequence[Mapping] | None = None,
    parallel_tool_calls: bool = True,
    tool_call_ids: str = "any",
    tool_call_arguments: str = "any",
    reasoning: bool = False,
    typed_content: bool = False,
    alternate: bool = True,
    min_turns: int = 1,
    max_turns: int = 6,
    ends_with: str | None = None,
) -> st.SearchStrategy[list[dict]]:
    """A list of chat messages in a shape real clients send.

    - ``system``: ``True`` always starts with a system message, ``False`` never has one, ``None``
      (default) sometimes does. A system message is only ever first.
    - ``tool_calls``: assistant turns may call tools; each call is followed by its ``tool``
      result (with ``tool_call_id`` when the call has an id), in call order, and, unless the
      conversation ends there, by the assistant's answer. ``tools`` is the list of tool schemas
      calls are drawn from (generated when omitted); ``parallel_tool_calls`` allows up to three
      calls in one message; ``tool_call_ids`` and ``tool_call_arguments`` are ``tool_calls()``'s
      ``ids`` and ``arguments`` (one id style per conversation, one argument encoding per message),
      for templates with documented constraints (Mistral's 9-character ids, object-only arguments).
    - ``reasoning``: assistant messages may carry reasoning (``reasoning_content``, ``thinking``
      or ``reasoning``, all of which transformers accepts).
    - ``typed_content``: content may be a list of parts; user parts may include images.
    - ``alternate`` (default): user and assistant turns alternate, starting with the user;
      ``False`` draws each turn's role freely (repeats, an assistant first).
    - ``min_turns``/``max_turns``: how many user and assistant turns (system and tool messages,
      and the assistant messages that only call tools, are not counted).
    - ``ends_with``: ``"user"``, ``"assistant"`` (a finished answer), ``"tool"`` (a tool result,
      needs ``tool_calls``) or ``None`` for any.

        @given(messages(system=False, max_turns=4))
        def test_generation_prompt_is_a_suffix(chat):
            with_prompt = render(chat, add_generation_prompt=True)
            assert with_prompt.startswith(render(chat, add_generation_prompt=False))
    """
    shape = _shape(
        system=system, tool_calls=tool_calls, tools=tools, parallel_tool_calls=parallel_tool_calls,
        tool_call_ids=tool_call_ids, tool_call_arguments=tool_call_arguments, reasoning=reasoning,
        typed_content=typed_content, alternate=alternate, min_turns=min_turns, max_turns=max_turns,
        ends_with=ends_with,
    )
    if ends_with is not None and ends_with not in _feasible_ends(shape):
        raise InvalidArgument(
            f"messages(): no conversation of {min_turns} to {max_turns} turns can end with {ends_with!r} here"
        )
    return _messages(shape, shape.tools)


def _shape(**options: Any) -> _Shape:
    _check_choice("ends_with", options["ends_with"], (None, *_ENDS_WITH))
    _check_choice("tool_call_ids", options["tool_call_ids"], ("any", *_ID_STYLES))
    _check_choice("tool_call_arguments", options["tool_call_arguments"], _ARGUMENT_ENCODINGS)
    _check_sizes("turns", options["min_turns"], options["max_turns"], lowest=1)
    if options["ends_with"] == "tool" and not options["tool_calls"]:
        raise InvalidArgument("ends_with='tool' needs tool_calls=True")
    options["tools"] = _check_tools(options["tools"], allow_empty=not options["tool_calls"]) or None
    return _Shape(**options)


# ---------------------------------------------------------------------------------------------
# conversations


@st.composite
def _conversation(
    draw: Any,
    shape: _Shape,
    endings: tuple[str, ...],
    tools: bool | tuple,
    docs: bool,
    kwargs: Mapping | None,
) -> Conversation:
    ending = draw(st.sampled_from(endings))
    if ending == "generate":
        ends = [end for end in _feasible_ends(shape) if end != "assistant"]
        shape = dataclasses.replace(shape, ends_with=draw(st.sampled_from(ends)))
    else:
        shape = dataclasses.replace(shape, ends_with="assistant")
    if isinstance(tools, tuple):
        # Fixed tools are the caller's objects; each example gets its own copy to mutate.
        tool_list: list | None = copy.deepcopy(list(tools))
    else:
        tool_list = draw(tool_schemas()) if tools or shape.tool_calls else None
    chat = draw(_messages(shape, tool_list, prefill=ending == "continue"))

    extra: dict[str, Any] = {}
    if shape.reasoning:
        thinking = draw(st.sampled_from((True, False, None)))
        if thinking is not None:
            extra["enable_thinking"] = thinking
    extra.update(copy.deepcopy(kwargs) if kwargs else {})

    # None leaves the decision to the conversation, as transformers' pipeline does; both spellings occur.
    if ending == "generate":
        add_generation_prompt = draw(st.sampled_from((True, None)))
    else:
        add_generation_prompt = draw(st.sampled_from((False, None)))
    conversation = Conversation(
        messages=chat,
        tools=tool_list,
        documents=draw(documents()) if docs else None,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=ending == "continue",
        kwargs=extra,
    )
    conversation.requires = used_capabilities(conversation)
    return conversation


def conversations(
    *,
    system: bool | None = None,
    tools: bool | Sequence[Mapping] = False,
    tool_calls: bool = False,
    parallel_tool_calls: bool = True,
    tool_call_ids: str = "any",
    tool_call_arguments: str = "any",
    documents: bool = False,
    reasoning: bool = False,
    typed_content: bool = False,
    alternate: bool = True,
    min_turns: int = 1,
    max_turns: int = 6,
    ending: str | None = None,
    kwargs: Mapping | None = None,
) -> st.SearchStrategy[Conversation]:
    """Whole conversations (``templatekit.conversation.Conversation``), ready to render.

    The message options are those of ``messages()``. Besides them:

    - ``tools``: ``True`` attaches generated tool definitions (implied by ``tool_calls``); a list
      of tool schemas attaches exactly those (an empty list too, for tools-guard checks), and tool
      calls are drawn from them.
    - ``documents``: attach RAG documents (``title``/``text`` dicts).
    - ``reasoning``: also sets ``enable_thinking`` to true or false in ``kwargs``, or leaves it out.
    - ``ending``: ``"generate"`` (ends with a user or tool message; generation prompt on),
      ``"complete"`` (ends with an assistant answer; no generation prompt), ``"continue"`` (the
      final assistant message is prefilled and continued: ``continue_final_message=True``, no
      generation prompt) or ``None`` for any that the turn range allows.
      ``add_generation_prompt`` is either explicit or ``None`` (decided from the conversation,
      see ``Conversation.wants_generation_prompt``); the two never conflict.
    - ``kwargs``: extra template variables added to every conversation (``date_string``, ...).

    ``requires`` lists the capabilities the conversation uses (see
    ``templatekit.fixtures.used_capabilities``), so tests can ``assume()`` them away.

        from hypothesis import given, settings
        from templatekit.strategies import conversations

        @settings(max_examples=50)
        @given(conversations(system=False, ending="generate"))
        def test_prompt_ends_with_assistant_header(conversation):
            assert render(conversation).endswith("<|im_start|>assistant\\n")
    """
    _check_choice("ending", ending, (None, *_ENDINGS))
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise InvalidArgument(f"kwargs must be a mapping, got {type(kwargs).__name__}")
    fixed_tools = None if isinstance(tools, bool) else _check_tools(tools, allow_empty=not tool_calls)
    shape = _shape(
        system=system, tool_calls=tool_calls, tools=fixed_tools or None, parallel_tool_calls=parallel_tool_calls,
        tool_call_ids=tool_call_ids, tool_call_arguments=tool_call_arguments, reasoning=reasoning,
        typed_content=typed_content, alternate=alternate, min_turns=min_turns, max_turns=max_turns,
        ends_with=None,
    )
    feasible = _feasible_ends(shape)
    possible = []
    if any(end != "assistant" for end in feasible):
        possible.append("generate")
    if "assistant" in feasible:
        possible += ["complete", "continue"]
    if ending is not None and ending not in possible:
        raise InvalidArgument(
            f"conversations(): no conversation of {min_turns} to {max_turns} turns can have ending={ending!r}"
        )
    endings = (ending,) if ending is not None else tuple(possible)
    attach = fixed_tools if fixed_tools is not None else bool(tools)
    return _conversation(shape, endings, attach, documents, dict(kwargs) if kwargs else None)


# ---------------------------------------------------------------------------------------------
# argument checks (at strategy construction, so a bad option fails once, not per example)


def _check_choice(name: str, value: Any, allowed: Sequence) -> None:
    if value not in allowed:
        raise InvalidArgument(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_sizes(name: str, low: int, high: int, *, lowest: int) -> None:
    if not isinstance(low, int) or not isinstance(high, int) or low < lowest or high < low:
        raise InvalidArgument(f"{name}: need {lowest} <= min <= max, got min={low!r}, max={high!r}")


def _check_tools(tools: Sequence[Mapping] | None, *, allow_empty: bool = False) -> tuple | None:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise InvalidArgument(f"tools must be a list of tool schemas, got {type(tools).__name__}")
    checked = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidArgument(
                f"tools must be {{'type': 'function', 'function': {{'name': ...}}}} schemas, got {tool!r}"
            )
        checked.append(tool)
    if not checked and not allow_empty:
        raise InvalidArgument("tools must not be empty when tool calls are drawn from them")
    return tuple(checked)
