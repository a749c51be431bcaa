"""Render a template once per (fixture, variant) and share the results between behavioural rules.

Behavioural rules (TK6xx) check invariants of what a template *renders*: the generation prompt is
a clean suffix, history re-renders identically when a turn is added, no message is lost, and so
on. Rendering is their whole cost, and several rules need the same renders (the basic fixture
with a generation prompt, say), so every render goes through ``Behaviour.render`` keyed by a name
for the (conversation, variant) pair; ``behaviour_of(target)`` keeps one ``Behaviour`` per lint
target in ``target.shared("renders", ...)``.

Fixtures whose ``requires`` the template lacks (probed or declared, see ``capabilities.py``) are
skipped and remembered as not evaluated, never counted as passed.

``Behaviour.checking(conversation)`` points the same rules at one arbitrary conversation instead of
the built-in fixtures (``templatekit fuzz`` does this for every generated example): a rule that asks
for a built-in fixture by name gets the conversation when it has that fixture's shape
(``FIXTURE_SHAPES``), and content preservation checks the conversation's own messages.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import cached_property
from typing import Any

from . import capabilities as caps
from .conversation import REASONING_FIELDS, Conversation
from .errors import RenderFailure
from .fixtures import shared_builtin_fixtures
from .guards import Budget
from .environment import acting_settings, compile_with_text_slots, hand_over_tree, lex_variant
from .rendering import Rendering, compile_failure, render_template
from .visible import make_visible

# The clock every behavioural render sees, so templates that print today's date render the same
# text on every run (and the determinism check can tell a clock from real nondeterminism).
PINNED_NOW = datetime(2025, 1, 15, 10, 30, 0)

# What transformers would pass from a typical tokenizer when the source gives no special tokens
# (a bare .jinja file): without them ``bos_token + ...`` raises, which would hide every other
# finding behind an error no real caller sees.
DEFAULT_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}

# Behavioural renders use small conversations: a second and 1 MiB of output are far above any of
# them, and keep a hostile template (the security rules' business) from stalling a lint run.
BEHAVIOUR_BUDGET = Budget(seconds=1.0, max_output=1024 * 1024)

# How many turns at each end of a fixture the stable-history check walks: instability lives at the
# start (system handling) and the end (last-query and loop.last logic), not in the middle of a
# 43-message conversation, and every extra prefix is a render. Over the 786 corpus templates a
# window of 1 already finds every template a window of 5 finds; 2 keeps a margin.
HISTORY_WINDOW = 2

# Fixtures that vary only the *text* of multi-turn's turns (scripts, markup) to test encoding and
# escaping. The structural checks (stable history, generation prompt) leave them out: over the
# 786 corpus templates they found nothing there that the other fixtures miss, and each costs a
# render per prefix. (The whitespace fixture stays: templates that trim earlier turns' content
# re-render them differently.)
TEXT_VARIANT_FIXTURES = frozenset({"unicode", "markup-in-content"})

# The built-in fixtures every chat template must render: plain user/assistant turns, with and
# without a generation prompt. A render error on one of them is the template's own failure
# (TK616), never the failure of a feature that another fixture or variant adds to them.
ORDINARY_FIXTURES = ("basic", "multi-turn", "ends-with-assistant")


class Behaviour:
    """The renders of one template, cached by key, and its capabilities."""

    def __init__(self, text: str, special_tokens: dict[str, str] | None = None,
                 config_capabilities: dict[str, bool] | None = None) -> None:
        self.text = text
        self.special_tokens = {**DEFAULT_SPECIAL_TOKENS, **(special_tokens or {})}
        # What the source itself gave (empty for a bare template, whose tokenizer is unknown).
        self.source_special_tokens = dict(special_tokens or {})
        self._config_capabilities = dict(config_capabilities or {})
        self._renders: dict[tuple[str, bool], Rendering] = {}
        self._capabilities: caps.Capabilities | None = None
        self._fixtures: list[Conversation] | None = None
        # The one conversation the checks run on instead of the built-in fixtures (see checking()).
        self.given: Conversation | None = None
        self._given_label = ""  # how findings name it (describe)
        self.render_count = 0
        # The capability-probe render that spent its whole time, output or memory budget, if one
        # did. Every later render of such a template (a hostile one: nested loops that never end
        # or print without end) would spend it too, seconds to minutes in all, so the probe stops
        # there and no check runs.
        self._probe_spent_budget: Rendering | None = None
        self.spent_budget_probe = ""  # the probe's key for that render
        # Whether the text-slotted compile reproduces each reference render (render_with_settings).
        self._slots_agree: dict[int, tuple[Rendering, bool]] = {}

    def checking(self, conversation: Conversation, label: str | None = None) -> "Behaviour":
        """A ``Behaviour`` of the same template whose checks run on ``conversation`` alone.

        It shares this one's capabilities (probed once) but has its own renders, so the variant
        keys rules use ("basic:tools-empty", ...) refer to ``conversation``. A lint target holds
        one of these at a time: rules cache per target, so give each conversation a fresh target.
        ``label`` is how findings name it (``describe``); by default "conversation 'NAME'", or
        "the conversation" when it has no name.
        """
        checked = Behaviour(self.text, self.special_tokens, self._config_capabilities)
        checked.source_special_tokens = dict(self.source_special_tokens)
        checked._capabilities = self.capabilities
        checked._probe_spent_budget, checked.spent_budget_probe = self._probe_spent_budget, self.spent_budget_probe
        checked.given = conversation.replace(name=conversation.name or "conversation")
        checked._given_label = label or (f"conversation '{conversation.name}'" if conversation.name else "the conversation")
        checked._fixtures = [checked.given]
        return checked

    def describe(self, conversation: Conversation) -> str:
        """How findings name a conversation the checks ran on: a built-in fixture as
        "fixture 'NAME'", the one conversation being checked (``checking``) by its label."""
        if self.given is not None and conversation is self.given:
            return self._given_label
        return f"fixture '{conversation.name}'"

    # -- rendering --------------------------------------------------------------------------------
    def render(self, key: str, conversation: Conversation, add_generation_prompt: bool | None = None,
               *, allow_empty: bool = False) -> Rendering:
        """``conversation`` rendered with the pinned clock, once per (key, generation prompt).

        The key names the conversation and variant ("basic", "tool-call:arguments-string"...); two
        calls with the same key must mean the same conversation.
        """
        agp = conversation.wants_generation_prompt() if add_generation_prompt is None else add_generation_prompt
        cache_key = (key, bool(agp))
        if cache_key not in self._renders:
            self.render_count += 1
            self._renders[cache_key] = render_template(
                self.text, conversation, special_tokens=self.special_tokens, add_generation_prompt=agp,
                now=PINNED_NOW, budget=BEHAVIOUR_BUDGET, allow_empty=allow_empty,
            )
        return self._renders[cache_key]

    def render_fresh(self, conversation: Conversation, add_generation_prompt: bool | None = None) -> Rendering:
        """An uncached render (for the determinism check, which must render twice)."""
        self.render_count += 1
        return render_template(self.text, conversation, special_tokens=self.special_tokens,
                               add_generation_prompt=add_generation_prompt, now=PINNED_NOW,
                               budget=BEHAVIOUR_BUDGET)

    def fixture_render(self, fixture: Conversation, add_generation_prompt: bool | None = None) -> Rendering:
        return self.render(fixture.name or "fixture", fixture, add_generation_prompt)

    # -- capabilities and fixtures ------------------------------------------------------------------
    @property
    def capabilities(self) -> caps.Capabilities:
        if self._capabilities is None:
            probed = caps.probe(self._probe_render, self.render)
            self._capabilities = caps.resolve(probed, self.text, self._config_capabilities)
        return self._capabilities

    def _probe_render(self, key: str, conversation: Conversation, add_generation_prompt: bool | None) -> Rendering:
        if self._probe_spent_budget is not None:
            return self._probe_spent_budget  # a failure: the probe reads the capability as unknown
        rendering = self.render(key, conversation, add_generation_prompt)
        if not rendering.ok and rendering.error.spent_budget:
            self._probe_spent_budget = rendering
            self.spent_budget_probe = key
        return rendering

    @cached_property
    def compile_failure(self) -> RenderFailure | None:
        """Why the template cannot be compiled, or None. Every render of such a template fails
        the same way, so no behavioural check can say anything about it (TK614 says so)."""
        return compile_failure(self.text, BEHAVIOUR_BUDGET)

    @property
    def spent_budget(self) -> Rendering | None:
        """The capability-probe render that spent its whole time, output or memory budget
        (probing first), or None. When there is one, the template is not checked further: see
        ``__init__``."""
        self.capabilities
        return self._probe_spent_budget

    @property
    def requires_typed_content(self) -> bool:
        """Whether the template renders typed text parts and not a plain string (see
        ``capabilities.REQUIRES_TYPED_CONTENT``)."""
        return self.capabilities.facts.get("typed_content", "").startswith(caps.REQUIRES_TYPED_CONTENT)

    @property
    def fixtures(self) -> list[Conversation]:
        """The built-in fixtures, with their contents as typed text parts for a template that
        requires them (as clients of a vision model send them): in plain strings every check
        would meet the same failure and say nothing."""
        if self._fixtures is None:
            fixtures = shared_builtin_fixtures()
            if self.requires_typed_content:
                fixtures = [fixture.with_typed_text() for fixture in fixtures]
            self._fixtures = fixtures
        return self._fixtures

    def builtin_fixture(self, name: str) -> Conversation:
        """A built-in fixture as written, with string contents (``fixtures`` may hold it as
        typed parts)."""
        return next(fixture for fixture in shared_builtin_fixtures() if fixture.name == name)

    def fixture(self, name: str) -> Conversation:
        return next(fixture for fixture in self.fixtures if fixture.name == name)

    def evaluated(self, names: Iterable[str] | None = None) -> Iterator[Conversation]:
        """The fixtures (all, or those named) whose requirements this template meets.

        When checking a given conversation, a name selects it if it has the shape of that
        built-in fixture (``FIXTURE_SHAPES``); names without a shape there select nothing.
        """
        wanted = set(names) if names is not None else None
        for fixture in self.fixtures:
            if wanted is not None and self.given is not None:
                if not any(FIXTURE_SHAPES.get(name, _nothing)(fixture) for name in wanted):
                    continue
            elif wanted is not None and fixture.name not in wanted:
                continue
            if not self.capabilities.missing(fixture.requires):
                yield fixture

    def content_checks(self) -> list[tuple[str, Conversation, tuple[str, ...]]]:
        """(render key, conversation, required capabilities) whose message contents must all
        reach the output: the sentinel conversations, or the conversation being checked."""
        if self.given is not None:
            return [(self.given.name, self.given, self.given.requires)]
        if self.requires_typed_content:
            return [(name, conversation.with_typed_text(), requires)
                    for name, conversation, requires in sentinel_conversations()]
        return sentinel_conversations()

    def render_with_settings(self, conversation: Conversation, trim_blocks: bool, lstrip_blocks: bool,
                             reference: Rendering | None = None) -> Rendering:
        """``conversation`` rendered (uncached) with other ``trim_blocks``/``lstrip_blocks``
        settings than transformers' (see ``environment.variant_environment``).

        Given ``reference``, the same conversation's render under transformers' settings, it
        first tries the template's one compile for every setting (``TextSlots``): used only when
        that compile reproduces ``reference`` exactly and renders these settings without error;
        otherwise the template is compiled under these settings, as it always is without it.
        """
        options = dict(special_tokens=self.special_tokens, now=PINNED_NOW, budget=BEHAVIOUR_BUDGET)
        if reference is not None and reference.ok and compile_with_text_slots(self.text) is not None:
            if id(reference) not in self._slots_agree:
                self.render_count += 1
                check = render_template(self.text, conversation, **options, text_slots=True)
                agree = check.ok and (check.text, check.spans) == (reference.text, reference.spans)
                # The reference is kept with its answer, so no other render can take its id.
                self._slots_agree[id(reference)] = (reference, agree)
            if self._slots_agree[id(reference)][1]:
                self.render_count += 1
                variant = render_template(self.text, conversation, **options, trim_blocks=trim_blocks,
                                          lstrip_blocks=lstrip_blocks, text_slots=True)
                if variant.ok:
                    return variant
        self.render_count += 1
        return render_template(self.text, conversation, **options, trim_blocks=trim_blocks, lstrip_blocks=lstrip_blocks)

    def not_evaluated(self) -> list[tuple[str, list[str]]]:
        """(fixture, missing capabilities) for every built-in fixture this template cannot run."""
        skipped = []
        for fixture in self.fixtures:
            missing = self.capabilities.missing(fixture.requires)
            if missing:
                skipped.append((fixture.name or "fixture", missing))
        return skipped


def behaviour_of(target: Any) -> Behaviour:
    """The shared ``Behaviour`` of a lint target (rendered lazily, once for all rules)."""
    def build(target: Any) -> Behaviour:
        config = getattr(target, "config", None)
        tree = getattr(target, "tree", None)
        if tree is not None:
            hand_over_tree(target.text, tree)  # the first render compiles it without parsing again
        return Behaviour(target.text, target.special_tokens, getattr(config, "capabilities", None))

    return target.shared("renders", build)


# ---------------------------------------------------------------------------------------------
# helpers for the invariants


def common_prefix_length(first: str, second: str) -> int:
    """Length of the longest common prefix (binary search on slices: fast on long renders)."""
    low, high = 0, min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def changed_span(first: str, second: str) -> tuple[int, int]:
    """The span (start, end) of ``second`` that differs from ``first``: what is left once their
    common prefix and common suffix are cut off (empty when they are equal)."""
    start = common_prefix_length(first, second)
    room = min(len(first), len(second)) - start
    suffix = common_prefix_length(first[::-1][:room], second[::-1][:room])
    return start, len(second) - suffix


def excerpt(text: str, at: int, width: int = 24) -> str:
    """A short repr of ``text`` around offset ``at`` (for messages)."""
    piece = text[max(0, at - width):at + width]
    return repr(piece)[:2 * width + 10]


def dropped_segment(earlier: str, later: str) -> tuple[int, int] | None:
    """Where ``earlier`` stops being a prefix of ``later``, as the smallest span (start, end) of
    ``earlier`` whose removal makes it a prefix of ``later``; None when no single cut does."""
    start = common_prefix_length(earlier, later)
    for end in range(start + 1, len(earlier) + 1):
        if later.startswith(earlier[end:], start):
            return start, end
    return None


def strip_reasoning(messages: list[dict]) -> list[dict]:
    return [{key: value for key, value in message.items() if key not in REASONING_FIELDS} for message in messages]


def with_text_on_tool_calls(conversation: Conversation, text: str = "Let me check.") -> Conversation:
    """The same conversation with ``text`` as the content of every assistant turn that calls tools
    (which carry none, or null, in the fixtures)."""
    messages = copy.deepcopy(conversation.messages)
    for message in messages:
        if message.get("tool_calls"):
            message["content"] = text
    return conversation.replace(messages=messages)


def not_continued(conversation: Conversation) -> Conversation:
    """The same messages rendered as a finished exchange: no continue_final_message and no
    generation prompt (what a prefill conversation is without the feature)."""
    return conversation.replace(continue_final_message=False, add_generation_prompt=False)


def with_string_arguments(conversation: Conversation) -> Conversation:
    """The same conversation with every tool call's object arguments as a JSON string."""
    messages = copy.deepcopy(conversation.messages)
    for message in messages:
        for call in message.get("tool_calls") or ():
            function = call.get("function", call)
            if isinstance(function.get("arguments"), dict):
                function["arguments"] = json.dumps(function["arguments"], ensure_ascii=False)
    return conversation.replace(messages=messages)


def input_strings(conversation: Conversation, special_tokens: dict[str, str], *, with_json: bool = True) -> list[str]:
    """Every string a render of ``conversation`` was given (and, with ``with_json``, the JSON of
    its structures, which templates print with ``tojson``), so a pattern in the output can be
    traced to the input rather than to the template."""
    found: list[str] = list(special_tokens.values())
    for part in (conversation.messages, conversation.tools, conversation.documents, conversation.kwargs):
        _collect_strings(part, found)
        if part and with_json:
            found.append(json.dumps(part, ensure_ascii=False))
    return found


def strings_besides_arguments(conversation: Conversation) -> list[str]:
    """Every string of ``conversation`` except its tool calls' arguments: tool results, tool
    definitions, documents, message text, keyword arguments. Text a template prints from these
    (JSON-encoded or not) says nothing about how it prints the arguments."""
    found: list[str] = []
    for message in conversation.messages:
        for key, value in message.items():
            if key != "tool_calls":
                _collect_strings(value, found)
                continue
            for call in value or ():
                if not isinstance(call, dict):
                    _collect_strings(call, found)
                    continue
                # A call's arguments sit in its function (OpenAI's shape) or on the call itself.
                function = call.get("function")
                _collect_strings({name: item for name, item in call.items() if name not in ("function", "arguments")},
                                 found)
                if isinstance(function, dict):
                    _collect_strings({name: item for name, item in function.items() if name != "arguments"}, found)
    for part in (conversation.tools, conversation.documents, conversation.kwargs):
        _collect_strings(part, found)
    return found


def _collect_strings(value: Any, found: list[str]) -> None:
    """Append every string in ``value`` (keys of mappings included) to ``found``."""
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_strings(key, found)
            _collect_strings(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_strings(item, found)


# Sentinel conversations for content preservation: unique contents that no template trims,
# translates or otherwise mistakes for markup, in the shapes real callers send.
def sentinel_conversations() -> list[tuple[str, Conversation, tuple[str, ...]]]:
    """(name, conversation, required capabilities) for the content-preservation check."""
    def message(role: str, tag: str) -> dict:
        return {"role": role, "content": f"Sentinel{tag}Qx7"}

    return [
        ("sentinel:chat", Conversation([message("user", "U1"), message("assistant", "A1"), message("user", "U2")]), ()),
        ("sentinel:system", Conversation([message("system", "S1"), message("user", "U1"), message("assistant", "A1"),
                                          message("user", "U2")]), ("system",)),
        ("sentinel:system-only", Conversation([message("system", "S1")]), ("system",)),
        ("sentinel:mid-system", Conversation([message("user", "U1"), message("assistant", "A1"),
                                              message("system", "S2"), message("user", "U2")]), ("system",)),
    ]


def render_without_tools(behaviour: Behaviour, conversation: Conversation) -> Rendering:
    """``conversation`` rendered with ``tools`` not defined at all.

    transformers always passes ``tools`` (None when absent), but llama.cpp, vLLM's older paths and
    most non-Python renderers leave it undefined; a template must treat both the same. This goes
    through the renderer itself, only leaving the one variable undefined.
    """
    return render_template(behaviour.text, conversation, special_tokens=behaviour.special_tokens,
                           now=PINNED_NOW, budget=BEHAVIOUR_BUDGET, omit=("tools",))


# ---------------------------------------------------------------------------------------------
# checking a given conversation: which built-in fixture's part it can play


def _nothing(conversation: Conversation) -> bool:
    return False


def _has_tool_calls_with_object_arguments(conversation: Conversation) -> bool:
    calls = [call for message in conversation.messages for call in message.get("tool_calls") or ()]
    return bool(calls) and all(isinstance((call.get("function") or {}).get("arguments"), dict) for call in calls)


def _plain_chat(conversation: Conversation) -> bool:
    return (not conversation.continue_final_message and bool(conversation.messages) and all(
        message.get("role") in ("user", "assistant") and isinstance(message.get("content"), str)
        and not message.get("tool_calls") for message in conversation.messages))


def _continues_text(conversation: Conversation) -> bool:
    return (bool(conversation.continue_final_message) and bool(conversation.messages)
            and isinstance(conversation.messages[-1].get("content"), str))


# What a conversation must look like to stand in for a built-in fixture that a rule asks for by
# name: the rules build variants of it (JSON-string arguments, typed parts, tools=[]) that only
# mean something for that shape.
FIXTURE_SHAPES: dict[str, Callable[[Conversation], bool]] = {
    "basic": lambda conversation: bool(conversation.messages) and not conversation.tools,
    "multi-turn": _plain_chat,
    "tool-call": _has_tool_calls_with_object_arguments,
    "prefill": _continues_text,
}


def content_texts(content: Any) -> list[str]:
    """The texts of a message's content: the string itself, or each text part's text."""
    return _texts(content)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return []


def content_reaches(message: dict, rendered: str, *, as_repr: bool = False) -> bool:
    """Whether every text of ``message``'s content appears in ``rendered``: verbatim, without
    surrounding whitespace (templates trim), or JSON-escaped (templates print tool results with
    ``tojson``); with ``as_repr``, also as a Python string repr (``python_repr_of_content``). A
    message without text content trivially does."""
    for text in _texts(message.get("content")):
        if not _text_reaches(text, rendered) and not (as_repr and _repr_offset(text, rendered) is not None):
            return False
    return True


def python_repr_of_content(message: dict, rendered: str) -> int | None:
    """Where a text of ``message``'s content that does not reach ``rendered`` (``content_reaches``)
    appears in it as a Python string repr instead (``'0\\xa00'`` for "0", a no-break space and
    "0"), which is what printing a list or dict of content parts gives: the offset of the first
    such repr, or None. A text that needs no escaping reads the same in a repr and verbatim, so
    only texts with quotes, backslashes or non-printable characters are found this way."""
    for text in _texts(message.get("content")):
        if not _text_reaches(text, rendered):
            at = _repr_offset(text, rendered)
            if at is not None:
                return at
    return None


def _text_reaches(text: str, rendered: str) -> bool:
    core = text.strip()
    if not core or core in rendered:
        return True
    escaped = json.dumps(core, ensure_ascii=False)[1:-1]
    return escaped in rendered or json.dumps(core)[1:-1] in rendered


def _repr_offset(text: str, rendered: str) -> int | None:
    # A repr prints the whole text; the stripped one covers templates that trim each part first.
    for candidate in (text, text.strip()):
        at = rendered.find(repr(candidate)[1:-1])
        if at >= 0:
            return at
    return None


# ---------------------------------------------------------------------------------------------
# trim_blocks / lstrip_blocks


# The settings other renderers use instead of transformers' (trim_blocks, lstrip_blocks) = (True,
# True): plain jinja2.Template and minijinja default to both off; tools set one and not the other.
OTHER_WHITESPACE_SETTINGS = ((False, True), (True, False), (False, False))


def describe_settings(trim_blocks: bool, lstrip_blocks: bool) -> str:
    if not trim_blocks and not lstrip_blocks:
        return "trim_blocks=False, lstrip_blocks=False (Jinja's defaults)"
    return "trim_blocks=False" if not trim_blocks else "lstrip_blocks=False"


def whitespace_sensitive_settings(text: str) -> list[tuple[list[tuple[bool, bool]], int, str]]:
    """The other settings under which ``text`` lexes differently from transformers' settings.

    Returns (settings, line, kind) groups: settings that lex identically render identically,
    so each group needs one compile; ``line`` is where the first lexical difference is (the tag
    whose trailing newline, ``kind="trim"``, or indentation, ``kind="lstrip"``, is kept). Settings
    that lex like transformers' cannot change any output and are left out. Lexing is cheap;
    compiling is not, which is why this comes before any render. The lexes are
    ``environment.lex_variant``'s, so transformers' own is the one the lint already made.
    """
    if acting_settings(text, False, False) == (True, True):
        return []  # every setting lexes like transformers' (the common case: not lexed at all)
    streams_by_settings: dict[tuple[bool, bool], list] = {}

    def printed(settings: tuple[bool, bool]) -> list:
        settings = acting_settings(text, *settings)
        if settings not in streams_by_settings:
            streams_by_settings[settings] = _printed_tokens(lex_variant(text, *settings))
        return streams_by_settings[settings]

    reference = printed((True, True))
    groups: list[tuple[list[tuple[bool, bool]], int, str]] = []
    streams: list[list] = []
    for settings in OTHER_WHITESPACE_SETTINGS:
        tokens = printed(settings)
        if _same_tokens(tokens, reference):
            continue
        for index, seen in enumerate(streams):
            if _same_tokens(seen, tokens):
                groups[index][0].append(settings)
                break
        else:
            streams.append(tokens)
            line, kind = _first_lexical_difference(reference, tokens)
            groups.append(([settings], line, kind))
    return groups


def _printed_tokens(tokens: Iterable[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The token stream as far as output is concerned: the newline trim_blocks removes is kept in
    the closing tag's token (``%}\n``), which prints nothing either way, and a data token the
    settings leave empty prints nothing either. Lines stay for locating differences."""
    printed = []
    for line, kind, value in tokens:
        if kind == "data" and not value:
            continue
        if kind in ("block_end", "comment_end", "raw_end"):
            value = value.rstrip("\r\n")
        printed.append((line, kind, value))
    return printed


def _same_tokens(first: list[tuple[int, str, str]], second: list[tuple[int, str, str]]) -> bool:
    return len(first) == len(second) and all(a[1:] == b[1:] for a, b in zip(first, second))


def _first_lexical_difference(reference: list, variant: list) -> tuple[int, str]:
    index = next((i for i, (a, b) in enumerate(zip(reference, variant)) if a[1:] != b[1:]),
                 min(len(reference), len(variant)))
    if index >= len(variant):
        return (reference[-1][0] if reference else 1), "trim"
    line, kind, value = variant[index]
    before = reference[index] if index < len(reference) else None
    common = ""
    if before is not None and before[1] == "data" and kind == "data":
        common = os.path.commonprefix([before[2], value])
        if before[0] == line:
            line += common.count("\n")
        else:
            line = min(line, before[0])
    extra = value[len(common):] if kind == "data" else ""
    return line, ("trim" if extra.startswith("\n") else "lstrip")


def visible_excerpt(text: str, at: int, width: int = 20) -> str:
    """``text`` around offset ``at`` with whitespace made visible, on one line."""
    start, end = max(0, at - width), min(len(text), at + width)
    piece = make_visible(text[start:end]).replace("\n", "")
    return ("…" if start else "") + piece + ("…" if end < len(text) else "")
