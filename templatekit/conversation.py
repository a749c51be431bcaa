"""Conversations: what one render of a chat template receives.

A conversation is validated against ``fixtures/schema.json`` (errors name the message index and
field) and then prepared exactly as transformers 5 prepares ``apply_chat_template`` inputs:
None-valued message keys dropped, everything rebuilt from plain JSON types, reasoning fields
aliased, Python callables converted to tool schemas.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InputError, one_line

# Keys of an OpenAI-style request body that mean nothing to a template; accepted so a request body
# can be pasted as a fixture, and otherwise ignored.
REQUEST_BODY_KEYS = frozenset(
    {
        "model", "stream", "stream_options", "temperature", "top_p", "top_k", "min_p", "max_tokens",
        "max_completion_tokens", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "user", "response_format", "tool_choice",
        "parallel_tool_calls", "repetition_penalty", "metadata", "store", "service_tier",
    }
)

# apply_chat_template's own parameters (transformers 5.23.0). templatekit renders what
#     tokenizer.apply_chat_template(messages, tools=..., documents=..., chat_template=<the template>,
#                                   add_generation_prompt=..., continue_final_message=..., tokenize=False,
#                                   **kwargs)
# returns, so a template variable (``Conversation.kwargs``) with one of these names never reaches
# the template. The self and conversation slots are already filled positionally, the keyword
# ones by templatekit itself: Python refuses a second value for either (TypeError).
APPLY_CHAT_TEMPLATE_POSITIONAL = ("self", "conversation")
APPLY_CHAT_TEMPLATE_KEYWORDS = (
    "tools", "documents", "chat_template", "add_generation_prompt", "continue_final_message", "tokenize",
)
# These only steer tokenizing, which a text render skips, so a value is swallowed unread, except
# that a truthy return_assistant_tokens_mask or sanitize_control_tokens needs tokenize=True and
# raises (ValueError, see rendering._prepare).
APPLY_CHAT_TEMPLATE_TOKENIZING = (
    "sanitize_control_tokens", "padding", "truncation", "max_length", "return_tensors", "return_dict",
    "return_assistant_tokens_mask", "tokenizer_kwargs",
)
# apply_chat_template passes these to render_jinja_template by name, next to the template
# variables (special tokens and kwargs); a variable with one of the names is a second value.
RENDER_JINJA_TEMPLATE_KEYWORDS = (
    "conversations", "tools", "documents", "chat_template", "return_assistant_tokens_mask",
    "continue_final_message", "add_generation_prompt",
)
# Python's names for the two functions in its "got multiple values" messages.
_APPLY_CHAT_TEMPLATE_QUALNAME = "PreTrainedTokenizerBase.apply_chat_template()"
_APPLY_CHAT_TEMPLATE_FULL_NAME = "transformers.tokenization_utils_base." + _APPLY_CHAT_TEMPLATE_QUALNAME
_RENDER_JINJA_TEMPLATE_FULL_NAME = "transformers.utils.chat_template_utils.render_jinja_template()"


def split_apply_chat_template_kwargs(kwargs: Mapping) -> tuple[dict, dict]:
    """``(arguments apply_chat_template keeps, template variables)`` for a conversation's kwargs.

    Raises the TypeError Python raises when a kwarg gives a second value for a parameter
    templatekit already passes: keyword ones first, in the kwargs' order, as Python merges the
    keyword arguments before it binds the positional ones.
    """
    for name in kwargs:
        if name in APPLY_CHAT_TEMPLATE_KEYWORDS:
            raise TypeError(f"{_APPLY_CHAT_TEMPLATE_FULL_NAME} got multiple values for keyword argument '{name}'")
    for name in kwargs:
        if name in APPLY_CHAT_TEMPLATE_POSITIONAL:
            raise TypeError(f"{_APPLY_CHAT_TEMPLATE_QUALNAME} got multiple values for argument '{name}'")
    arguments = {name: value for name, value in kwargs.items() if name in APPLY_CHAT_TEMPLATE_TOKENIZING}
    variables = {name: value for name, value in kwargs.items() if name not in APPLY_CHAT_TEMPLATE_TOKENIZING}
    return arguments, variables


def check_render_jinja_template_call(template_kwargs: Mapping) -> None:
    """Raise the TypeError of apply_chat_template's call to render_jinja_template when a template
    variable (a kwarg, or a special token named in ``extra_special_tokens``) takes one of its names."""
    for name in template_kwargs:
        if name in RENDER_JINJA_TEMPLATE_KEYWORDS:
            raise TypeError(f"{_RENDER_JINJA_TEMPLATE_FULL_NAME} got multiple values for keyword argument '{name}'")


# Where transformers keeps a message's reasoning, in the priority it reads them.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


@lru_cache(maxsize=1)
def conversation_schema() -> dict:
    """The JSON schema of a conversation (fixture) file."""
    text = resources.files("templatekit.fixtures").joinpath("schema.json").read_text("utf-8")
    return json.loads(text)


@dataclasses.dataclass
class Conversation:
    """Messages plus everything else a template can be rendered with.

    ``add_generation_prompt=None`` means "decide from the conversation" (see
    ``wants_generation_prompt``), the way transformers' text-generation pipeline does.
    """

    messages: list[dict]
    tools: list | None = None
    documents: list | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | str = False
    kwargs: dict = dataclasses.field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    requires: tuple[str, ...] = ()
    # The file a user's conversation was read from, so a failure it causes can name that file.
    origin: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def from_mapping(cls, data: Any, origin: str | Path = "<conversation>") -> "Conversation":
        """Validate ``data`` (a parsed fixture file or request body) and build a conversation."""
        validate_conversation_data(data, origin)
        kwargs = dict(data.get("chat_template_kwargs") or {})
        kwargs.update(data.get("kwargs") or {})
        return cls(
            messages=copy.deepcopy(data["messages"]),
            tools=copy.deepcopy(data.get("tools")),
            documents=copy.deepcopy(data.get("documents")),
            add_generation_prompt=data.get("add_generation_prompt"),
            continue_final_message=data.get("continue_final_message", False),
            kwargs=copy.deepcopy(kwargs),
            name=data.get("name"),
            description=data.get("description"),
            requires=tuple(data.get("requires") or ()),
        )

    def to_mapping(self) -> dict:
        """The fixture-file form of this conversation (omits defaults)."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["messages"] = self.messages
        for key in ("tools", "documents"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.add_generation_prompt is not None:
            out["add_generation_prompt"] = self.add_generation_prompt
        if self.continue_final_message:
            out["continue_final_message"] = self.continue_final_message
        if self.kwargs:
            out["kwargs"] = self.kwargs
        if self.requires:
            out["requires"] = list(self.requires)
        return out

    def wants_generation_prompt(self) -> bool:
        """The effective ``add_generation_prompt``.

        Explicit values win; otherwise, as in transformers' pipeline, a conversation that continues
        its final message, or ends with an assistant message, gets none.
        """
        if self.add_generation_prompt is not None:
            return bool(self.add_generation_prompt)
        if self.continue_final_message:
            return False
        last = self.messages[-1] if self.messages else None
        return not (isinstance(last, Mapping) and last.get("role") == "assistant")

    def replace(self, **changes: Any) -> "Conversation":
        """A copy with some fields changed (messages are deep-copied)."""
        fresh = dataclasses.replace(self, **changes)
        if "messages" not in changes:
            fresh.messages = copy.deepcopy(self.messages)
        return fresh

    def with_typed_text(self) -> "Conversation":
        """A copy with every string content as one typed text part (``[{"type": "text", ...}]``)."""
        messages = []
        for message in copy.deepcopy(self.messages):
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = [{"type": "text", "text": message["content"]}]
            messages.append(message)
        return self.replace(messages=messages)


def validate_conversation_data(data: Any, origin: str | Path) -> None:
    """Raise ``InputError`` naming the first invalid field of a conversation mapping."""
    import jsonschema  # deferred: only needed when conversations come from files

    if not isinstance(data, Mapping):
        raise InputError(origin, f"a conversation must be a mapping with a 'messages' list, got {_json_type(data)}")
    check_data_shape(data, origin)
    known = set(conversation_schema()["properties"]) | REQUEST_BODY_KEYS
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(origin, f"unknown key '{key}'{hint}")
    validator = jsonschema.Draft202012Validator(conversation_schema())
    errors = sorted(validator.iter_errors(dict(data)), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise InputError(origin, _describe_schema_error(errors[0]))


# Bounds on what a conversation file may hold, far above any real chat (the deepest tool schemas
# nest a few dozen levels; a long agent trace has thousands of messages). Past them, validating,
# copying and rendering the data would recurse past Python's limit or run for hours.
MAX_NESTING = 128
MAX_VALUES = 2_000_000


def check_data_shape(data: Any, origin: str | Path) -> None:
    """Raise ``InputError`` when ``data`` refers to itself, nests deeper than ``MAX_NESTING`` or
    holds more than ``MAX_VALUES`` values once shared parts are counted at every place they appear.

    YAML anchors and aliases make both possible in a few lines: ``&a [*a]`` is a list inside
    itself, and nine lines of aliases (a "billion laughs") expand to 10**9 values. A shared part
    is measured once and its size reused, so the check costs one pass over the distinct values.
    """
    if not isinstance(data, (Mapping, list, tuple)):
        return
    sizes: dict[int, int] = {}  # values under each container measured so far, itself included
    on_path = {id(data)}
    counted = 1
    # Each frame: [container, iterator over its children, the values counted when it was entered].
    stack: list[list[Any]] = [[data, _children(data), 0]]
    while stack:
        frame = stack[-1]
        for child in frame[1]:
            if not isinstance(child, (Mapping, list, tuple)):
                counted += 1
            elif id(child) in on_path:
                raise InputError(origin, "the data refers to itself (a YAML alias inside its own anchor), "
                                         "so it has no end")
            elif id(child) in sizes:
                counted += sizes[id(child)]
            else:
                if len(stack) >= MAX_NESTING:
                    raise InputError(origin, f"nested more than {MAX_NESTING} levels deep")
                counted += 1
                on_path.add(id(child))
                stack.append([child, _children(child), counted - 1])
                break
            if counted > MAX_VALUES:
                raise InputError(origin, f"holds more than {MAX_VALUES:,} values once YAML aliases are "
                                         "expanded; is it an alias bomb?")
        else:
            stack.pop()
            on_path.discard(id(frame[0]))
            sizes[id(frame[0])] = counted - frame[2]


def _children(value: Any) -> Any:
    if isinstance(value, Mapping):
        return iter([item for pair in value.items() for item in pair])
    return iter(value)


def _describe_schema_error(error: Any) -> str:
    path = _field_path(error.absolute_path)
    where = f"{path}: " if path else ""
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}must be {expected}, got {_json_type(error.instance)}"
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return f"{where}missing required field '{missing[0]}'" if missing else f"{where}{error.message}"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{where}{message}"


def _field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _refuse_taken_kwargs(kwargs: Mapping, path: Path) -> None:
    """A file's ``kwargs`` naming what the conversation or the call already sets is a mistake in
    the file: say so here (exit 2) rather than through the TypeError transformers raises when
    rendering (Python callers still get that, for parity)."""
    taken = {"messages", *APPLY_CHAT_TEMPLATE_POSITIONAL, *APPLY_CHAT_TEMPLATE_KEYWORDS, *RENDER_JINJA_TEMPLATE_KEYWORDS}
    for name in kwargs:
        if name in taken:
            raise InputError(path, f"kwargs.{one_line(name)}: is not a template variable: apply_chat_template sets "
                                   "it itself (give messages, tools, documents and the generation settings as the "
                                   "file's own fields)")


def load_conversation(path: str | Path) -> Conversation:
    """Read a YAML or JSON conversation file; any problem is an ``InputError`` naming the file."""
    path = Path(path)
    data = read_structured_file(path)
    conversation = Conversation.from_mapping(data, path)
    _refuse_taken_kwargs(conversation.kwargs, path)
    if conversation.name is None:
        conversation.name = path.stem
    conversation.origin = str(path)
    return conversation


def read_structured_file(path: Path) -> Any:
    """Parse a YAML or JSON file (JSON is YAML, but JSON errors read better from the json module)."""
    import yaml

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a YAML or JSON file") from None
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise InputError(path, "file is empty")
    if b"\x00" in raw:
        raise InputError(path, "binary file, expected YAML or JSON text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise InputError(path, "JSON nested too deeply to parse") from None
        except ValueError as exc:  # a value json recognises but refuses, e.g. an integer of 5,000 digits
            raise InputError(path, f"invalid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_conversation_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(path, f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise InputError(path, "YAML nested too deeply to parse") from None
    except (ValueError, OverflowError) as exc:
        # PyYAML's constructors raise these for scalars they match but cannot build:
        # a date like 2024-13-45, an integer too long to convert.
        raise InputError(path, f"invalid YAML: {exc}") from None


_CONVERSATION_LOADER: Any = None


def _conversation_loader() -> Any:
    """PyYAML's safe loader, minus the values a JSON conversation cannot hold.

    A date written bare (``date: 2025-01-15``) stays the string it reads as: YAML would make it a
    ``datetime.date``, which the template would then see as the placeholder ``"<date>"``, as
    transformers shows any non-JSON value. ``!!binary`` and ``!!set`` have no JSON form at all and
    are refused where they are written.
    """
    global _CONVERSATION_LOADER
    if _CONVERSATION_LOADER is None:
        import yaml

        class ConversationLoader(yaml.SafeLoader):
            def refuse(self, node: Any) -> None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{node.tag.rsplit(':', 1)[-1]} values have no JSON form; write a string or a list",
                    node.start_mark)

        ConversationLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
        ConversationLoader.add_constructor("tag:yaml.org,2002:binary", ConversationLoader.refuse)
        ConversationLoader.add_constructor("tag:yaml.org,2002:set", ConversationLoader.refuse)
        _CONVERSATION_LOADER = ConversationLoader
    return _CONVERSATION_LOADER


# ---------------------------------------------------------------------------------------------
# transformers' preprocessing (transformers/utils/chat_template_utils.py, tokenization_utils_base)


def drop_none_keys(messages: list) -> list:
    """``apply_chat_template`` drops top-level message keys whose value is None (nested ones stay)."""
    return [{key: value for key, value in message.items() if value is not None} for message in messages]


def plain_template_data(value: Any) -> Any:
    """Rebuild ``value`` from plain JSON types, as transformers does before a template sees it.

    str/int/float subclasses become the base type, mappings become dicts (order kept), lists and
    tuples keep their kind, numpy scalars become Python scalars, dataclasses and pydantic models
    become dicts, and anything else becomes an inert ``"<TypeName>"`` placeholder.
    """
    kind = type(value)
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return value
    # Exact dicts and lists first: same result as the general branches below, without the
    # slow abstract-base-class isinstance checks.
    if kind is dict:
        return {plain_template_data(key): plain_template_data(item) for key, item in value.items()}
    if kind is list:
        return [plain_template_data(item) for item in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_template_data(key): plain_template_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_template_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_template_data(item) for item in value)
    numpy = sys.modules.get("numpy")  # a numpy scalar can only exist if numpy was imported
    if numpy is not None and isinstance(value, numpy.generic):
        return plain_template_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain_template_data(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain_template_data(value.model_dump())
    return f"<{type(value).__name__}>"


def alias_reasoning_fields(messages: list) -> list:
    """Copy a message's reasoning to ``thinking`` (first key) and ``reasoning_content`` (last)."""
    aliased = []
    for message in messages:
        if isinstance(message, dict):
            reasoning = next((message[key] for key in REASONING_FIELDS if message.get(key) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased.append(message)
    return aliased


def tool_schemas(tools: list | None) -> list | None:
    """Tools as transformers passes them: dicts verbatim, functions converted to JSON schemas."""
    if tools is None:
        return None
    import inspect

    schemas = []
    for tool in tools:
        if isinstance(tool, dict):
            schemas.append(tool)
        elif inspect.isfunction(tool) or inspect.ismethod(tool):
            # transformers' own converter, so the schema (and its errors) are exactly transformers'.
            from transformers.utils.chat_template_utils import get_json_schema

            schemas.append(get_json_schema(tool))
        else:
            raise ValueError(
                "Tools should either be a JSON schema, or a callable function with type hints "
                "and a docstring suitable for auto-conversion to a schema."
            )
    return schemas
