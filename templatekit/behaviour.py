"""Render a template once per (fixture, variant) and share the results between behavioural rules.

Behavioural rules (TK6xx) check invariants of what a template *renders*: the generation prompt is
a clean suffix, history re-renders identically when a turn is added, no message is lost, and so
on. Rendering is their whole cost, and several rules need the same renders (the basic fixture
with a generation prompt, say), so every render goes through ``Behaviour.render`` keyed by a name
for the (conversation, variant) pair; ``behaviour_of(target)`` keeps one ``Behaviour`` per lint
target in ``target.shared("renders", ...)``.

Fixtures whose ``requires`` the template lacks (probed or declared, see ``capabilities.py``) are
skipped and remembered as not evaluated, never counted as passed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from . import capabilities as caps
from .conversation import REASONING_FIELDS, Conversation
from .fixtures import builtin_fixtures
from .guards import Budget
from .rendering import Rendering, render_template

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
# 43-message conversation, and every extra prefix is a render.
HISTORY_WINDOW = 5


class Behaviour:
    """The renders of one template, cached by key, and its capabilities."""

    def __init__(self, text: str, special_tokens: dict[str, str] | None = None,
                 config_capabilities: dict[str, bool] | None = None) -> None:
        self.text = text
        self.special_tokens = {**DEFAULT_SPECIAL_TOKENS, **(special_tokens or {})}
        self._config_capabilities = dict(config_capabilities or {})
        self._renders: dict[tuple[str, bool], Rendering] = {}
        self._capabilities: caps.Capabilities | None = None
        self._fixtures: list[Conversation] | None = None
        self.render_count = 0

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
            probed = caps.probe(lambda key, conversation, agp: self.render(key, conversation, agp))
            self._capabilities = caps.resolve(probed, self.text, self._config_capabilities)
        return self._capabilities

    @property
    def fixtures(self) -> list[Conversation]:
        if self._fixtures is None:
            self._fixtures = builtin_fixtures()
        return self._fixtures

    def fixture(self, name: str) -> Conversation:
        return next(fixture for fixture in self.fixtures if fixture.name == name)

    def evaluated(self, names: Iterable[str] | None = None) -> Iterator[Conversation]:
        """The fixtures (all, or those named) whose requirements this template meets."""
        wanted = set(names) if names is not None else None
        for fixture in self.fixtures:
            if wanted is not None and fixture.name not in wanted:
                continue
            if not self.capabilities.missing(fixture.requires):
                yield fixture

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


def with_typed_text(conversation: Conversation) -> Conversation:
    """The same conversation with every string content as one typed text part."""
    messages = []
    for message in copy.deepcopy(conversation.messages):
        if isinstance(message.get("content"), str):
            message["content"] = [{"type": "text", "text": message["content"]}]
        messages.append(message)
    return conversation.replace(messages=messages)


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

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for part in (conversation.messages, conversation.tools, conversation.documents, conversation.kwargs):
        walk(part)
        if part and with_json:
            found.append(json.dumps(part, ensure_ascii=False))
    return found


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
