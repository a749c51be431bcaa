"""TK6xx: behaviour — invariants checked by rendering the template, not by reading it.

Every rule here renders the built-in fixtures (and small variants of them) through
``templatekit.behaviour``, which renders each (fixture, variant) once per template and shares the
result between rules. Fixtures needing a capability the template lacks (probed, or declared in
config or a ``{# templatekit: capabilities ... #}`` comment) are skipped; TK614 lists them as not
evaluated. Each rule reports at most one finding per template, naming the fixture and the place
the invariant breaks. Where it sits: on the line a failing render stopped at, when a render
failed; on the place a rule found to be the cause, when it looked (TK601: the ``set`` that
overwrites ``add_generation_prompt``); otherwise on the first place in the template's code (tags
and expressions, never the text it prints or the prose inside its string literals) that reads
what the rule is about (its ``anchors``); otherwise on line 1.

A render failure is blamed on the feature a rule checks (continuing the final message, null
content on a tool call, an empty conversation) only when the same conversation without that
feature renders, or fails in another way; a template that fails on plain user/assistant
conversations gets one error for that instead (TK616).

These rules are marked ``behavioural``: ``static-only`` in the config skips them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator
from typing import ClassVar

from jinja2 import nodes

from ...behaviour import (
    HISTORY_WINDOW,
    ORDINARY_FIXTURES,
    TEXT_VARIANT_FIXTURES,
    Behaviour,
    behaviour_of,
    changed_span,
    common_prefix_length,
    content_reaches,
    content_texts,
    describe_settings,
    dropped_segment,
    excerpt,
    input_strings,
    not_continued,
    python_repr_of_content,
    render_without_tools,
    strings_besides_arguments,
    strip_reasoning,
    visible_excerpt,
    whitespace_sensitive_settings,
    with_string_arguments,
    with_text_on_tool_calls,
)
from ...capabilities import PART_REPR, PARTS_AS_REPR, PARTS_DROPPED
from ...conversation import REASONING_FIELDS, Conversation
from ...errors import OutOfTime, RenderFailure
from ...rendering import Rendering
from ..model import Diagnostic
from ..registry import Rule, register
from ..target import LintTarget, Token
from ..walk import find_all

# Words that mark a span of a render as reasoning display (think blocks, analysis channels).
_REASONING_MARKERS = re.compile(r"think|reason|thought|analysis", re.IGNORECASE)
# Python reprs that reach the output when a template prints a structure or a Python constant.
_REPR_PATTERNS = (
    ("[{'type'", re.compile(r"\[\{'type'")),
    ("{'", re.compile(r"\{'")),
    ("True", re.compile(r"\bTrue\b")),
    ("False", re.compile(r"\bFalse\b")),
    ("None", re.compile(r"\bNone\b")),
    # A method or object printed as itself ({{ m.items }}): its address, different in every run.
    (" at 0x", re.compile(r"<[^<>\n]{1,200} at 0x[0-9a-fA-F]+>")),
)
_NONE = re.compile(r"\bNone\b")
# How far into a cut a reasoning display's opening may start (after a shared header such as
# "<|im_start|>assistant\n").
_DISPLAY_OPENING = 32


@dataclasses.dataclass(frozen=True)
class Broken:
    """A finding's message and, when a render failed, the template line it failed on; with a
    ``column`` too, the exact place a rule found to be the cause."""

    message: str
    line: int | None = None
    column: int | None = None
    severity: str | None = None  # when lower than the rule's: a finding that is only worth noting


def failed(what: str, failure: RenderFailure) -> Broken:
    """``what`` went wrong because of ``failure``: the finding sits on the line the render stopped at."""
    return Broken(f"{what}: {failure_text(failure)}", failure.line)


def failure_text(failure: RenderFailure) -> str:
    """A render failure described without its location. Behaviour renders the template text on its
    own, so the location would name Jinja's internal template name (``<template>:15``), and a
    line in a message can disagree with the finding's own location (an embedded template's
    lines are not its file's): the finding carries the line instead."""
    return failure.describe_unplaced()


def blamed_on_the_feature(failure: RenderFailure, baseline: Rendering | None) -> bool:
    """Whether a failed render is the failure of the feature a rule checks, given ``baseline``, the
    same conversation rendered without that feature (None: no such render). It is when the
    baseline renders, or fails in another way or place (the feature then broke something of its
    own, such as null content on a template that also lacks a special token). When the baseline
    fails the same way, the template fails on the conversation itself (on a plain one, TK616 says
    so), and blaming the feature would send the author after the wrong code."""
    return baseline is None or baseline.ok or not _same_failure(failure, baseline.error)


def not_checkable(behaviour: Behaviour) -> bool:
    """Whether no behavioural check can run: the template does not compile (every render fails
    alike, and TK001/TK003 say why), or a capability probe spent a whole budget (see
    ``Behaviour.spent_budget``). TK614 says which."""
    return behaviour.compile_failure is not None or behaviour.spent_budget is not None


class BehaviourRule(Rule):
    """A rule that renders: reports at most one finding, from ``findings``."""

    behavioural: ClassVar[bool] = True
    # What the rule is about, in the template's code, most telling first: an identifier (a
    # variable, attribute or filter name, or a subscript key such as 'arguments'), optionally
    # followed by the operator that must come next ("messages[" is ``messages`` indexed).
    anchors: ClassVar[tuple[str, ...]] = ()
    # Whether the rule still runs on a template whose capability probe spent a whole budget (only
    # the rule that says what was not evaluated does).
    checks_templates_past_budget: ClassVar[bool] = False
    # Whether the rule checks the one conversation of ``Behaviour.checking`` (fuzz's invariants).
    checks_given_conversations: ClassVar[bool] = True

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        behaviour = behaviour_of(target)
        if not self.checks_templates_past_budget and not_checkable(behaviour):
            return []
        for found in self.findings(behaviour, target):
            broken = found if isinstance(found, Broken) else Broken(found)
            if broken.line is not None and broken.column is not None:
                line, column = broken.line, broken.column
            else:
                line, column = finding_position(target, self.anchors, broken.line)
            diagnostic = self.diagnostic(line, column, broken.message)
            if broken.severity is not None:
                diagnostic = dataclasses.replace(diagnostic, severity=broken.severity)
            return [diagnostic]
        return []

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        """Messages for each broken instance of the invariant (only the first is reported); a
        ``Broken`` carries the line a failing render stopped at."""
        return iter(())


# Tokens that are not template code: printed text, comments and the whitespace between tokens.
_NOT_CODE = frozenset({"data", "comment_begin", "comment", "comment_end", "linecomment_begin", "linecomment",
                       "linecomment_end", "whitespace"})
_ANCHOR = re.compile(r"(\w+)(.*)")


def finding_position(target: LintTarget, anchors: tuple[str, ...], failure_line: int | None = None) -> tuple[int, int]:
    """Where a behavioural finding sits: on ``failure_line`` when a render failed there (at an
    anchor on that line, else at its first code), else at the first anchor in the template's
    code, else at 1:1."""
    if failure_line is not None and 1 <= failure_line <= len(target.lines):
        on_line = [token for token in _code_tokens(target) if token.line == failure_line]
        found = _first_anchor(on_line, anchors)
        if found is not None:
            return found
        if on_line:
            return failure_line, on_line[0].column
        text = target.lines[failure_line - 1]
        return failure_line, len(text) - len(text.lstrip()) + 1
    return _first_anchor(_code_tokens(target), anchors) or (1, 1)


def _code_tokens(target: LintTarget) -> list[Token]:
    return target.shared("behaviour:code-tokens",
                         lambda target: [token for token in target.tokens if token.type not in _NOT_CODE])


def _first_anchor(tokens: list[Token], anchors: tuple[str, ...]) -> tuple[int, int] | None:
    for anchor in anchors:
        word, following = _ANCHOR.fullmatch(anchor).groups()
        for index, token in enumerate(tokens):
            # A string literal counts only when it is exactly the word: a subscript key such as
            # tc['arguments'] is code; prose that mentions "arguments" is not.
            named = token.value == word if token.type == "name" else (
                token.type == "string" and token.value[1:-1] == word)
            if named and (not following or (index + 1 < len(tokens) and tokens[index + 1].value == following)):
                return token.line, token.column + (token.type == "string")  # a key: at its word, past the quote
    return None


def template_literals(target: LintTarget) -> list[str]:
    """Text the template itself prints or holds as string constants (a pattern found here came
    from the template's author, not from a repr)."""
    def collect(target: LintTarget) -> list[str]:
        if target.tree is None:
            return []
        found = [node.data for node in target.tree.find_all(nodes.TemplateData)]
        found += [node.value for node in target.tree.find_all(nodes.Const) if isinstance(node.value, str)]
        return found

    return target.shared("behaviour:literals", collect)


# What a tool call printed in Python's call syntax, ``name(flag=False, opts={'a': 1})``, holds as
# that syntax (LFM2's and Llama 3.2's pythonic calls), not as a leaked repr.
_PYTHON_CALL_SYNTAX = frozenset({"{'", "True", "False", "None"})
_CALL_SCAN_LIMIT = 20_000


def _python_call_spans(conversation: Conversation, text: str) -> list[tuple[int, int]]:
    """The (start, end) of every ``name(...)`` in ``text`` whose name is a function the
    conversation's tool calls call, from its first keyword argument's ``=`` up to the
    parenthesis that closes it (quotes respected): ``name({'a': 1})`` passes a dict's repr, not
    Python's keyword syntax, and holds no span."""
    names = {call["function"]["name"] for message in conversation.messages for call in message.get("tool_calls") or ()
             if isinstance(call, dict) and isinstance(call.get("function"), dict)
             and isinstance(call["function"].get("name"), str) and call["function"]["name"]}
    spans = []
    for name in names:
        for opening in re.finditer(re.escape(name) + r"\(", text):
            end = _closing_parenthesis(text, opening.end())
            keyword = text.find("=", opening.end(), end) if end is not None else -1
            if keyword >= 0:
                spans.append((keyword, end))
    return spans


def _closing_parenthesis(text: str, start: int) -> int | None:
    depth, quote, position = 1, "", start
    stop = min(len(text), start + _CALL_SCAN_LIMIT)
    while position < stop:
        char = text[position]
        if quote:
            if char == "\\":
                position += 1  # the escaped character cannot close the string
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return None


def _inside(offset: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= offset < end for start, end in spans)


def _from_input(pattern: str, conversation: Conversation, behaviour: Behaviour, target: LintTarget,
                *, with_json: bool = True) -> bool:
    sources = input_strings(conversation, behaviour.special_tokens, with_json=with_json) + template_literals(target)
    return any(pattern in text for text in sources)


def _text_variant(behaviour: Behaviour, fixture: Conversation) -> bool:
    """A built-in fixture the structural checks leave out (``TEXT_VARIANT_FIXTURES``); a
    conversation given to check (fuzzing) is always checked, whatever its name."""
    return behaviour.given is None and fixture.name in TEXT_VARIANT_FIXTURES


def _ending_with(behaviour: Behaviour, role: str) -> Iterator[Conversation]:
    """The fixtures (or the given conversation) whose last message has ``role``, and which ask for
    no continuation of it."""
    for fixture in behaviour.evaluated():
        if fixture.continue_final_message or not fixture.messages or _text_variant(behaviour, fixture):
            continue
        if fixture.messages[-1].get("role") == role:
            yield fixture


# The reply appended to a conversation to see what the template prints before an assistant's text.
_PROBE_REPLY = "Sentinel reply Qx7."
_WHITESPACE = re.compile(r"\s+")
# How much of a render's end a TK601 message quotes.
_SHOWN = 40


@dataclasses.dataclass(frozen=True)
class _ReplyCue:
    """What the template prints between a conversation's last message and an assistant reply to
    it (see ``_reply_cue``)."""

    follows: bool  # the render already ends where the reply starts: there is nothing to add
    cue: str = ""  # the render's ending after the last message's text (``[/INST]``), when it follows
    header: str = ""  # what the template prints before the reply that the render lacks
    dangling: str = ""  # the render's own ending, also printed after the reply (emitted unconditionally)
    closed: str = ""  # what closes a reply, which the render already ends with
    ending: str = ""  # how the render ends, when the reply follows other text than that ending ...
    follows_text: str = ""  # ... and the text the reply follows instead
    unmarked: bool = False  # the reply follows the last message's text with nothing between


def _last_text(conversation: Conversation) -> str:
    texts = content_texts(conversation.messages[-1].get("content"))
    return texts[-1].strip() if texts else ""


def _squashed(text: str) -> str:
    return _WHITESPACE.sub("", text)


def _ends_with_cue(rendered: str, last: str, cue: str) -> bool:
    """Whether ``rendered`` ends with the last message's text then ``cue``, whitespace aside
    (indentation around the cue is a history question, TK602's, not a missing prompt)."""
    return bool(last) and _squashed(rendered).endswith(_squashed(last + cue))


def _reply_cue(behaviour: Behaviour, fixture: Conversation, plain: Rendering) -> _ReplyCue | None:
    """Whether the render of ``fixture`` without the generation prompt already ends where the
    assistant's reply begins, found by rendering the conversation with a reply appended; None
    when that cannot be told (the last message's text is not in the render, the render with the
    reply fails).

    It does when the template prints nothing but whitespace between the render's ending and the
    reply: Mistral's ``[INST] ... [/INST]`` and formats whose user turn ends with the assistant's
    cue (``<_bot>``, ``<｜Assistant｜>``), or formats that keep the assistant's turn open around
    tool results (the reply continues that turn). A template that emits the assistant header
    unconditionally looks the same before the reply, so the reply's own ending is checked too:
    when it also ends with the cue, the cue dangles after every conversation."""
    last = _last_text(fixture)
    ended = plain.text.rstrip()
    at = ended.rfind(last) if last else -1
    if at < 0:
        return None
    cue = ended[at + len(last):]
    messages = [*fixture.messages, {"role": "assistant", "content": _PROBE_REPLY}]
    replied = behaviour.render(f"{fixture.name or 'fixture'}:with-reply", fixture.replace(messages=messages), False)
    reply_at = replied.text.find(_PROBE_REPLY) if replied.ok else -1
    if reply_at < 0:
        return None
    before = replied.text[:reply_at].rstrip()
    after = replied.text[reply_at + len(_PROBE_REPLY):].strip()
    closing = _first_token(after)
    # The cue's end (the header, in "<|end|>\n<|assistant|>") after the reply as well means it is
    # printed whatever the conversation ends with; the reply's own closing token alone is just
    # the end of a turn.
    dangling = _shared_ending(cue.rstrip(), after)
    if dangling == closing or dangling in behaviour.special_tokens.values():
        dangling = ""
    if not _ends_with_cue(before, last, cue):
        if dangling:
            return _ReplyCue(False, dangling=dangling)
        start = before.rfind(last)
        if start < 0:
            return None
        printed = before[start + len(last):].lstrip()
        # What the reply needs beyond the ending the render already has: the missing header.
        if printed.startswith(cue.strip()):
            return _ReplyCue(False, header=printed[len(cue.strip()):].lstrip())
        return _ReplyCue(False, ending=ended[-_SHOWN:], follows_text=before[-_SHOWN:])
    # A render that ends with what closes a reply (Gemma's <turn|>, an eos after every message)
    # ends after a finished turn, not inside one the reply continues.
    if closing and ended.endswith(closing):
        return _ReplyCue(False, closed=closing)
    if dangling:
        return _ReplyCue(False, dangling=dangling)
    if not cue.strip():
        return _ReplyCue(False, unmarked=True)
    return _ReplyCue(True, cue=cue)


def _first_token(text: str) -> str:
    """``text`` up to its second token (``<|end|>`` of ``<|end|><|assistant|>``; see ``_token_starts``)."""
    for at in range(1, len(text)):
        if _token_starts(text, at):
            return text[:at].strip()
    return text


def _shared_ending(first: str, second: str) -> str:
    """The longest common ending of ``first`` and ``second`` that starts on a token boundary in
    both (after whitespace, at ``<`` or ``[``, after ``>`` or ``]``): ``<|assistant_start|>`` of
    ``<|user_end|><|assistant_start|>`` and ``<|assistant_end|><|assistant_start|>``, nothing of
    ``<｜Assistant｜>`` and ``<｜end▁of▁sentence｜>`` (whose ``｜>`` is no token of its own)."""
    common = common_prefix_length(first[::-1], second[::-1])
    for length in range(common, 0, -1):
        if _token_starts(first, len(first) - length) and _token_starts(second, len(second) - length):
            return first[len(first) - length:].strip()
    return ""


def _token_starts(text: str, at: int) -> bool:
    return (at == 0 or text[at - 1].isspace() or text[at].isspace() or text[at] in "<["
            or text[at - 1] in ">]")


@register
class GenerationPromptNotSuffix(BehaviourRule):
    """The generation prompt is not a clean, non-empty suffix of the prompt without it.

    Why: ``add_generation_prompt=True`` must only append the assistant header to the same text:
    if it adds nothing the model continues the user's turn (and a header emitted unconditionally
    ends every training example with a dangling header); if it changes earlier text, prompts
    and training data disagree. A ``{% set add_generation_prompt = true %}`` that ignores the
    caller's value is where the finding points, when there is one. Nothing needs adding where
    the template itself prints an assistant reply right after the prompt's end: formats whose
    user turn ends with the assistant's cue (Mistral's ``[INST] ... [/INST]``), and formats that
    keep the assistant's turn open around tool results (the reply continues it). The first is
    only noted (info), with the cue, until the template declares ``generation_prompt=false``, as
    templates that deliberately have none (base-model formats) should.

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}<|assistant|>

    Good:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}
        {%- if add_generation_prompt %}<|assistant|>{% endif %}
    """

    code = "TK601"
    name = "generation-prompt-not-suffix"
    severity = "warning"
    anchors = ("add_generation_prompt",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[Broken]:
        capabilities = behaviour.capabilities
        # Only a declaration excuses a missing generation prompt (probing finding none is the bug),
        # or the template's own way of printing a reply, which shows nothing is missing (below).
        if capabilities.declared("generation_prompt") and not capabilities.supports("generation_prompt"):
            return
        # The prompt is judged where the model's turn starts: after a user message. After tool
        # results some formats keep the assistant's turn open (the reply continues it), so there
        # an empty prompt is right exactly when the template prints nothing before such a reply.
        cues: dict[str, str] = {}  # per last role: the ending a render ends with where a reply follows
        by_design: Conversation | None = None  # a user-ending fixture whose reply follows the render as it is
        for fixture in [*_ending_with(behaviour, "user"), *_ending_with(behaviour, "tool")]:
            prompted = behaviour.fixture_render(fixture, True)
            plain = behaviour.fixture_render(fixture, False)
            if not (prompted.ok and plain.ok):
                continue
            if prompted.text == plain.text:
                role = fixture.messages[-1].get("role")
                # Once a render is known to end where the reply starts, another render ending
                # with the same cue needs no reply render of its own to tell. A tool result that
                # ends with the cue closing the user's turns (Hunyuan's <|extra_0|>) is followed
                # by the assistant's turn just as they are.
                if role in cues and _ends_with_cue(plain.text, _last_text(fixture), cues[role]):
                    continue
                if role == "tool" and cues.get("user", "").strip() and _squashed(plain.text).endswith(
                        _squashed(cues["user"])):
                    continue
                cue = _reply_cue(behaviour, fixture, plain)
                if cue is not None and cue.follows:
                    cues[role] = cue.cue
                    if role == "user" and by_design is None:
                        by_design = fixture
                    continue
                yield self._no_prompt(behaviour, target, fixture, cue)
                return
            if not prompted.text.startswith(plain.text):
                trailing = trailing_text(target)
                if trailing is not None and trailing.explains(plain.text, prompted.text):
                    remedy = ("delete it, or strip it with '-' in the last tag's closing delimiter"
                              if not trailing.text.strip() else "print it only where a turn ends, not after everything")
                    yield Broken(f"{behaviour.describe(fixture)}: {trailing.describe()}: it follows the generation "
                                 f"prompt, so the model's turn starts after it, and the render without the prompt "
                                 f"ends with it; {remedy}", trailing.line, trailing.column)
                    return
                at = common_prefix_length(prompted.text, plain.text)
                _overwrites, reads = _generation_prompt_uses(target)
                yield _at((reads or [None])[0],
                          f"{behaviour.describe(fixture)}: the render without add_generation_prompt is not a prefix "
                          f"of the render with it; they differ at offset {at}: {excerpt(plain.text, at)} vs "
                          f"{excerpt(prompted.text, at)}")
                return
        if by_design is not None:
            # Nothing is missing, yet the invariant (a non-empty suffix, or a declared absence)
            # does not hold: worth a note, not a warning.
            _overwrites, reads = _generation_prompt_uses(target)
            noted = _at((reads or [None])[0],
                        f"{behaviour.describe(by_design)} renders the same with and without add_generation_prompt: "
                        f"the template needs no generation prompt, since its render of an assistant reply follows "
                        f"the user's turn as it ends ({cues['user'].strip()!r}); declare it with "
                        f"{{# templatekit: capabilities generation_prompt=false #}}")
            yield dataclasses.replace(noted, severity="info")

    @staticmethod
    def _no_prompt(behaviour: Behaviour, target: LintTarget, fixture: Conversation, cue: _ReplyCue | None) -> Broken:
        overwrites, reads = _generation_prompt_uses(target)
        after, continued = (("a tool result", "the tool result") if fixture.messages[-1].get("role") == "tool"
                            else ("a user message", "the user's turn"))
        # The caller's value stops mattering where the template assigns its own (a constant, say)
        # to the variable; otherwise the first place it is read.
        if overwrites:
            why = "the template assigns add_generation_prompt a value of its own here, which ignores the caller's"
        elif cue is not None and cue.dangling:
            why = (f"the template emits {cue.dangling!r} unconditionally: a conversation that ends with the "
                   f"assistant's reply ends with it too")
        elif cue is not None and cue.header.strip():
            why = (f"the template prints {cue.header!r} before an assistant reply to {after}, but "
                   f"add_generation_prompt does not add it, so the model continues {continued}")
        elif cue is not None and cue.closed:
            why = (f"it ends with {cue.closed!r}, which also closes the template's assistant replies, and the "
                   f"template opens no turn before a reply to {after}: the prompt ends after a finished turn")
        elif cue is not None and cue.unmarked:
            why = (f"nothing marks where the assistant's turn starts: in the template's render of an assistant "
                   f"reply to {after}, the reply follows the last message's text directly")
        elif cue is not None and cue.follows_text:
            why = (f"it ends {cue.ending!r}, while in the template's render of an assistant reply to {after} the "
                   f"reply follows {cue.follows_text!r}: the prompt does not end where replies start")
        else:
            why = "the template has no generation prompt, or emits it unconditionally"
        return _at((overwrites or reads or [None])[0],
                   f"{behaviour.describe(fixture)} renders the same with and without add_generation_prompt: {why}")


_GENERATION_PROMPT = "add_generation_prompt"


def _at(token: Token | None, message: str) -> Broken:
    return Broken(message) if token is None else Broken(message, token.line, token.column)


def _generation_prompt_uses(target: LintTarget) -> tuple[list[Token], list[Token]]:
    """(overwrites, reads) of ``add_generation_prompt`` in the template's code, in order.

    An overwrite is the target of a ``{% set add_generation_prompt = ... %}`` (or a block
    ``set``) whose value does not read the variable, outside any ``if`` whose test reads it: from
    there on the caller's value is lost. A ``set`` that reads it (``add_generation_prompt if
    add_generation_prompt is defined else false``) or that an ``if`` about it guards (``{% if
    add_generation_prompt is not defined %}``) only supplies a default: neither it nor a test of
    whether the variable is defined is where the prompt goes wrong. Every other appearance is a
    read of its value.
    """
    def names_it(tokens: list[Token]) -> bool:
        return any(token.type == "name" and token.value == _GENERATION_PROMPT for token in tokens)

    def find(target: LintTarget) -> tuple[list[Token], list[Token]]:
        tokens = _code_tokens(target)
        overwrites: list[Token] = []
        reads: list[Token] = []
        guarded: list[bool] = []  # per enclosing if block: whether a test of it names the variable
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.type == "block_begin" and index + 1 < len(tokens) and tokens[index + 1].type == "name":
                keyword = tokens[index + 1].value
                tag_end = next((at for at in range(index + 1, len(tokens)) if tokens[at].type == "block_end"),
                               len(tokens))
                if keyword == "if":
                    guarded.append(names_it(tokens[index + 2:tag_end]))
                elif keyword == "elif" and guarded:
                    guarded[-1] = guarded[-1] or names_it(tokens[index + 2:tag_end])
                elif keyword == "endif" and guarded:
                    guarded.pop()
                elif (keyword == "set" and index + 3 < len(tokens) and tokens[index + 2].type == "name"
                      and tokens[index + 2].value == _GENERATION_PROMPT
                      and (tokens[index + 3].value == "=" or tokens[index + 3].type == "block_end")):
                    # The value runs to the end of the tag, or for a block set to its endset.
                    end = tag_end
                    if tokens[index + 3].type == "block_end":
                        end = next((at for at in range(tag_end, len(tokens))
                                    if tokens[at].type == "name" and tokens[at].value == "endset"), len(tokens))
                    if not names_it(tokens[index + 3:end]) and not any(guarded):
                        overwrites.append(tokens[index + 2])
                    index = end
                    continue
            elif token.type == "name" and token.value == _GENERATION_PROMPT and not _tests_definedness(tokens, index):
                reads.append(token)
            index += 1
        return overwrites, reads

    return target.shared("behaviour:generation-prompt-uses", find)


def _tests_definedness(tokens: list[Token], index: int) -> bool:
    """Whether the name at ``index`` is only tested for being defined (``x is not defined``)."""
    following = [token.value for token in tokens[index + 1:index + 4]]
    if following[:1] != ["is"]:
        return False
    rest = following[2:3] if following[1:2] == ["not"] else following[1:2]
    return rest in (["defined"], ["undefined"])


@dataclasses.dataclass(frozen=True)
class TrailingText:
    """Text the template prints after its last tag: it ends every render."""

    text: str
    line: int
    column: int

    def explains(self, shorter: str, longer: str) -> bool:
        """Whether ``shorter`` fails to be a prefix of ``longer`` only because both end with this
        text: whatever the longer render adds goes before it."""
        size = len(self.text)
        return shorter.endswith(self.text) and longer.endswith(self.text) and \
            longer[:-size].startswith(shorter[:-size])

    def describe(self) -> str:
        shown = repr(self.text) if len(self.text) <= _TRAILING_SHOWN else (
            f"{self.text[:_TRAILING_SHOWN]!r}... ({len(self.text):,} characters)")
        return (f"the template prints {shown} after its last tag (line {self.line}, column {self.column}), "
                f"so every render ends with it")


# How much of the trailing text a message quotes.
_TRAILING_SHOWN = 60
# The tags that decide what prints: a comment prints nothing, and a raw block's contents are text.
_CODE_ENDS = frozenset({"block_end", "variable_end"})


def trailing_text(target: LintTarget) -> TrailingText | None:
    """What renders after the template's last statement or expression (text, comments between
    it, a raw block's contents; the lexer has already dropped the one final newline Jinja drops),
    or None when nothing does."""
    tokens = target.tokens
    if not tokens:
        return None
    last = max((index for index, token in enumerate(tokens) if token.type in _CODE_ENDS), default=None)
    if last is None:
        return None
    data = [token for token in tokens[last + 1:] if token.type == "data" and token.value]
    if not data:
        return None
    return TrailingText("".join(token.value for token in data), data[0].line, data[0].column)


def history_breaks(behaviour: Behaviour, trailing: TrailingText | None = None) -> list[tuple[str, str]]:
    """(kind, message) for each fixture whose history does not re-render as a prefix.

    For consecutive prefixes ``m[:j]`` and ``m[:j+1]`` of a fixture, the render of the shorter
    (with the generation prompt when ``m[j]`` is the assistant's reply) must be a prefix of the
    longer one's: that is what lets servers reuse the KV cache and what makes training data match
    inference. ``kind`` is ``"reasoning"`` when the only change is reasoning display dropped from
    an earlier turn (a deliberate history policy, TK613) and ``"unstable"`` otherwise (TK602).
    When the template's ``trailing`` text alone explains a break (each new turn is printed before
    it), the message says so rather than that earlier turns re-render.
    """
    found: list[tuple[str, str]] = []
    for fixture in behaviour.evaluated():
        if fixture.continue_final_message or _text_variant(behaviour, fixture):
            continue
        messages = fixture.messages
        count = len(messages)
        kinds_seen: set[str] = set()
        for j in range(1, count):
            if HISTORY_WINDOW < j < count - HISTORY_WINDOW:
                continue
            next_role = messages[j].get("role")
            if next_role == messages[j - 1].get("role"):
                # Consecutive same-role messages (parallel tool results) form one turn that callers
                # send together; templates close the group after its last member, legitimately.
                continue
            added = messages[j]
            if added.get("role") == "assistant" and not added.get("content") and not added.get("tool_calls"):
                # An empty reply is not something a model generates after the prompt; how a
                # template closes one says nothing about the prefix caches of real turns.
                continue
            earlier_conversation = fixture.replace(messages=messages[:j], add_generation_prompt=None)
            earlier = behaviour.render(f"{fixture.name}[:{j}]", earlier_conversation, next_role == "assistant")
            later_key = fixture.name if j + 1 == count else f"{fixture.name}[:{j + 1}]"
            later = behaviour.render(later_key, fixture.replace(messages=messages[:j + 1], add_generation_prompt=None)
                                     if j + 1 < count else fixture, False)
            if not (earlier.ok and later.ok) or later.text.startswith(earlier.text):
                continue
            kind = _classify_break(behaviour, fixture, j, earlier.text, later.text, next_role == "assistant")
            if kind in kinds_seen:
                continue
            kinds_seen.add(kind)
            at = common_prefix_length(earlier.text, later.text)
            role = messages[j].get("role")
            if trailing is not None and trailing.explains(earlier.text, later.text):
                found.append((kind, f"{behaviour.describe(fixture)}: {trailing.describe()}: adding messages[{j}] "
                                    f"({role}) prints the new turn before it, so the earlier render is not a prefix "
                                    f"of the later one (no earlier turn changes)"))
                continue
            if kind == "reasoning":
                # A conversation without reasoning still loses the template's own (empty) block.
                unprompted = behaviour.render(f"{fixture.name}[:{j}]", earlier_conversation, False) \
                    if next_role == "assistant" else None
                if any(message.get(key) for message in messages[:j] for key in REASONING_FIELDS):
                    change = "drops the reasoning shown on the latest assistant turn"
                elif unprompted is not None and unprompted.ok and at >= len(unprompted.text):
                    # The cut is in the generation prompt: it opens a reasoning block the reply
                    # then renders without.
                    change = (f"renders the reply without the reasoning opener the generation prompt prints "
                              f"({earlier.text[len(unprompted.text):][-40:]!r}; the conversation has no reasoning)")
                else:
                    change = ("drops the template's own empty reasoning block from the latest assistant turn (the "
                              "conversation has no reasoning)")
            else:
                change = "re-renders earlier turns"
            found.append((kind, f"{behaviour.describe(fixture)}: adding messages[{j}] ({role}) {change}; first "
                                f"difference at offset {at}: {excerpt(earlier.text, at)} becomes "
                                f"{excerpt(later.text, at)}"))
    return found


def _classify_break(behaviour: Behaviour, fixture: Conversation, j: int, earlier: str, later: str,
                    prompted: bool) -> str:
    segment = dropped_segment(earlier, later[:len(earlier) + 4096])
    reasoning_texts = [str(message[key]).strip() for message in fixture.messages[:j] for key in REASONING_FIELDS
                       if message.get(key)]
    if segment is not None:
        if any(text and _text_dropped(earlier, later, segment, text) for text in reasoning_texts):
            return "reasoning"
        if _reasoning_display_dropped(earlier, later, segment) and not _unrequested_tail(
                behaviour, fixture, j, earlier, segment, prompted):
            return "reasoning"
    if reasoning_texts:
        # The history without reasoning must then re-render as a prefix for this to be policy only.
        stripped = fixture.replace(messages=strip_reasoning(fixture.messages[:j]), add_generation_prompt=None)
        again = behaviour.render(f"{fixture.name}[:{j}]:no-reasoning", stripped, prompted)
        if again.ok and later.startswith(again.text):
            return "reasoning"
    return "unstable"


# How much context before a cut a reasoning marker may start in: "<|START_T" may be shared by
# the two renders and "HINKING|>" dropped.
_CUT_CONTEXT = 16
# How much further a re-rendered piece of a render's tail may reach once its whitespace changes.
_REALIGNMENT = 32


def _text_dropped(earlier: str, later: str, segment: tuple[int, int], text: str) -> bool:
    """Whether a reasoning text of the fixture is in the part of ``earlier`` that ``later`` lacks
    (``segment``), and not printed again further on (moved or re-indented, not dropped)."""
    start, end = segment
    low = max(0, start - _CUT_CONTEXT)
    at = earlier.find(text, low, end)
    while at >= 0 and at + len(text) <= start:
        at = earlier.find(text, at + 1, end)
    return at >= 0 and text not in later[start:]


def _reasoning_display_dropped(earlier: str, later: str, segment: tuple[int, int]) -> bool:
    """Whether the part of ``earlier`` that ``later`` lacks is reasoning display: a reasoning
    marker (a think block, a thinking token, an analysis channel) that ``later`` drops or
    changes, or the content of a reasoning block opened just before the cut.

    The marker must be in the cut, near its start: a marker word further in is prose of a
    rewritten tail ("well-reasoned", a guard model's instructions). One just before the cut
    counts only if it opens a block (``<think>``): after a closing one (``</think>``) the cut is
    not inside reasoning. When the cut runs to the end of ``earlier``, that end may only be
    re-rendered with other whitespace (the indentation around a ``</think>`` that is still
    there): a marker in it counts only if ``later`` does not go on with the same text up to it,
    whitespace aside."""
    start, end = segment
    low = max(0, start - _CUT_CONTEXT)
    opening = earlier[low:min(end, start + _DISPLAY_OPENING)]
    before = None  # the last marker that ends before the cut
    for match in _REASONING_MARKERS.finditer(opening):
        marker_start, marker_end = low + match.start(), low + match.end()
        if marker_end <= start:
            before = marker_start
            continue
        if end < len(earlier):
            return True  # a cut in the middle: later goes on with what followed it, so the cut text is gone
        if not _squashed(later[start:marker_end + _REALIGNMENT]).startswith(_squashed(earlier[start:marker_end])):
            return True
    return before is not None and not _closes(earlier, before)


def _closes(text: str, marker_start: int) -> bool:
    """Whether the reasoning marker word at ``marker_start`` ends a block (``</think>``,
    ``[/THINK]``, ``<|END_THINKING|>``) rather than opening one."""
    lead = text[max(0, marker_start - 5):marker_start].lower()
    return "/" in lead or "end" in lead


def _unrequested_tail(behaviour: Behaviour, fixture: Conversation, j: int, earlier: str, segment: tuple[int, int],
                      prompted: bool) -> bool:
    """Whether the dropped text is the end of a render made without add_generation_prompt that
    asking for the prompt does not change: an assistant header the template always appends (an
    empty think block in it is part of the header, not reasoning shown on a turn). Dropping it
    once the next turn arrives breaks the history like any other rewrite."""
    if prompted or segment[1] != len(earlier):
        return False
    conversation = fixture.replace(messages=fixture.messages[:j], add_generation_prompt=None)
    with_prompt = behaviour.render(f"{fixture.name}[:{j}]", conversation, True)
    return with_prompt.ok and with_prompt.text == earlier


def _history(behaviour: Behaviour, target: LintTarget) -> list[tuple[str, str]]:
    return target.shared("behaviour:history", lambda _target: history_breaks(behaviour, trailing_text(target)))


@register
class UnstableHistory(BehaviourRule):
    """Earlier turns render differently once a new turn is added (history is not append-only).

    Why: servers reuse the KV cache of the previous prompt and trainers assume the prompt plus the
    reply is a prefix of the next prompt. Branches on ``loop.last``, on the position of the last
    user query or on the conversation length re-render old turns, so every request misses the
    prefix cache and training data drifts from inference.

    Bad:
        {% for m in messages %}{% if loop.last %}[LAST]{% endif %}<|{{ m.role }}|>{{ m.content }}
        {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}
        {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}
    """

    code = "TK602"
    name = "unstable-history"
    severity = "warning"

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str]:
        for kind, message in _history(behaviour, target):
            if kind == "unstable":
                yield message


@register
class ContentDropped(BehaviourRule):
    """A message's content never reaches the output, and the template does not raise either.

    Why: a template that ignores a role (a system message after the first, a system-only
    conversation) silently loses instructions; callers cannot tell. Raising with
    ``raise_exception`` is fine: the caller learns the conversation is not supported. Reasoning
    an assistant's content carries before ``</think>`` may be left out, as long as the answer
    after it stays (Qwen3's history rule, noted by TK613).

    Bad:
        {% for m in messages %}{% if m.role == 'user' %}<|user|>{{ m.content }}
        {% elif m.role == 'assistant' %}<|assistant|>{{ m.content }}
        {% endif %}{% endfor %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}
        {% endfor %}
    """

    code = "TK603"
    name = "content-dropped"
    severity = "warning"
    anchors = ("messages",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str]:
        capabilities = behaviour.capabilities
        lost = []
        for key, conversation, requires in behaviour.content_checks():
            # A template that raises on the system role, or declares it unsupported, is not
            # dropping it silently; one that probes as "dropped" is exactly what this rule reports.
            if "system" in requires and not capabilities.supports("system") and (
                    capabilities.declared("system") or capabilities.facts.get("system") == "raises"):
                continue
            rendering = behaviour.render(key, conversation)
            if not rendering.ok:
                continue
            for index, message in enumerate(conversation.messages):
                # Content printed as a Python repr (a list of parts through |trim) is there, only
                # mangled: TK604 reports that, rather than this rule calling it lost.
                if not content_reaches(message, rendering.text, as_repr=True):
                    if _reasoning_in_content_stripped(message, rendering.text):
                        continue
                    whose = behaviour.describe(conversation) if behaviour.given is not None else key.split(":")[-1]
                    lost.append(f"messages[{index}] ({message['role']}) of {whose}")
        if lost:
            yield "content silently dropped: " + "; ".join(lost)


# A reasoning block's end written into an assistant's content (a client echoing raw model output).
_CLOSING_REASONING_TAG = re.compile(r"</(?:think|thinking|reasoning|thought)>|\[/THINK\]|<\|END_THINKING\|>",
                                    re.IGNORECASE)


def _reasoning_in_content_stripped(message: dict, rendered: str) -> bool:
    """Whether an assistant's content holds a reasoning block's end and only the text after it
    reaches the prompt: the template keeps reasoning out of history (Qwen3's, EXAONE's), a policy
    TK613 notes, not a message dropped."""
    content = message.get("content")
    if message.get("role") != "assistant" or not isinstance(content, str):
        return False
    ends = list(_CLOSING_REASONING_TAG.finditer(content))
    if not ends:
        return False
    answer = content[ends[-1].end():]
    return content_reaches({"content": answer}, rendered)


@register
class PythonReprLeak(BehaviourRule):
    """Python reprs reach the prompt (``{'``, ``[{'type'``, ``True``, ``None``) that no input holds.

    Why: printing a dict, a list of content parts or a Python constant gives the model text it
    never saw in training (``[{'type': 'text', ...}]``, ``None`` for a missing field). The
    pattern must come from the input or the template's own text, never from a repr. A message
    whose text reaches the prompt only with Python's escapes (``'0\\xa00'``) is reported here
    too, not as dropped content (TK603). A tool call printed in Python's own call syntax
    (``search(in_stock=False)``, LFM2's format) holds its constants as that syntax, not as reprs.

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }} last={{ loop.last }}
        {% endfor %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% if loop.last %} last{% endif %}
        {% endfor %}
    """

    code = "TK604"
    name = "python-repr-leak"
    severity = "warning"

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str]:
        for fixture in behaviour.evaluated():
            rendering = behaviour.fixture_render(fixture)
            if not rendering.ok:
                continue
            calls = _python_call_spans(fixture, rendering.text)
            for pattern, regex in _REPR_PATTERNS:
                match = next((found for found in regex.finditer(rendering.text)
                              if pattern not in _PYTHON_CALL_SYNTAX or not _inside(found.start(), calls)), None)
                if match and not _from_input(pattern, fixture, behaviour, target):
                    yield (f"{behaviour.describe(fixture)} renders {pattern!r} that no input holds: "
                           f"{excerpt(rendering.text, match.start())}")
                    return
            # A repr the patterns miss (a list of strings): some message's text is in the output
            # only with Python's escapes (\xa0, \n, \'), never as written.
            for index, message in enumerate(fixture.messages):
                at = python_repr_of_content(message, rendering.text)
                if at is not None:
                    yield (f"{behaviour.describe(fixture)} renders messages[{index}] ({message.get('role')}) only as a "
                           f"Python repr, with escapes instead of the text: {excerpt(rendering.text, at)}")
                    return


@register
class ToolArgumentsShape(BehaviourRule):
    """Tool-call arguments work as an object but not as a JSON string (or the reverse), or get
    encoded twice.

    Why: transformers' convention is a mapping, the OpenAI wire format is a JSON string, and
    servers pass either. ``|tojson`` on a string double-encodes it (``"{\\"city\\": ...}"``),
    ``|items`` on a string raises, ``for key in arguments`` walks it one character at a time
    (``{=, "=, c=, ...``). Branch on ``arguments is string``. Only what changes with the
    arguments' shape counts: a tool result the template JSON-encodes is not the arguments.

    Bad:
        {% for t in tools or [] %}{{ t.function.name }}{% endfor %}
        {% for m in messages %}{{ m.content }}{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}{% endfor %}
        {% endfor %}

    Good:
        {% for t in tools or [] %}{{ t.function.name }}{% endfor %}
        {% for m in messages %}{{ m.content }}{% for c in m.tool_calls or [] %}{% set a = c.function.arguments %}{{ a if a is string else a|tojson }}{% endfor %}
        {% endfor %}
    """

    code = "TK605"
    name = "tool-arguments-shape"
    severity = "warning"
    anchors = ("arguments",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        for fixture in behaviour.evaluated(["tool-call"]):
            as_object = behaviour.fixture_render(fixture)
            string_fixture = with_string_arguments(fixture)
            as_string = behaviour.render("tool-call:arguments-string", string_fixture)
            if as_object.ok and not as_string.ok:
                yield failed("tool-call arguments as a JSON string fail", as_string.error)
                return
            if as_string.ok and not as_object.ok:
                yield failed("tool-call arguments as an object fail", as_object.error)
                return
            if not as_string.ok:
                return
            if as_string.text == as_object.text:
                return
            # Only what changes with the arguments' shape is their doing: a tool result or a tool
            # definition the template JSON-encodes renders the same either way.
            start, end = changed_span(as_object.text, as_string.text)
            others = strings_besides_arguments(string_fixture)
            keys = [key for message in fixture.messages for call in message.get("tool_calls") or ()
                    for key in call["function"]["arguments"]]
            for key in keys:
                escaped = f'\\"{key}\\"'
                # Raw inputs only: the JSON of a message holding a string argument escapes it too.
                if _from_input(escaped, string_fixture, behaviour, target, with_json=False):
                    continue
                for match in re.finditer(re.escape(escaped), as_string.text):
                    if match.start() < end and match.end() > start and not _encoded_input_around(
                            as_string.text, match.start(), match.end(), others):
                        yield (f"JSON-string tool-call arguments are encoded twice: "
                               f"{excerpt(as_string.text, match.start())}")
                        return
            for arguments in _string_arguments(string_fixture):
                at = _iterated_characters(as_string.text, start, end, arguments)
                if at is not None:
                    yield (f"JSON-string tool-call arguments are iterated character by character (a string is not a "
                           f"mapping): {excerpt(as_string.text, at)}")
                    return


# How many leading characters of a JSON-string argument must come out one per loop iteration,
# each followed by the same text, for the string to count as iterated.
_ITERATED_CHARACTERS = 6


def _string_arguments(conversation: Conversation) -> list[str]:
    functions = [call.get("function") or {} for message in conversation.messages
                 for call in message.get("tool_calls") or ()]
    return [function["arguments"] for function in functions if isinstance(function.get("arguments"), str)]


def _iterated_characters(text: str, start: int, end: int, arguments: str) -> int | None:
    """Where ``text`` prints the first characters of ``arguments`` one at a time, each followed by
    the same non-empty text (``{=, "=, q=, ...``: a ``for key in arguments`` loop given the string),
    within ``start``..``end``; None when it does not."""
    head = arguments[:_ITERATED_CHARACTERS]
    if len(head) < _ITERATED_CHARACTERS:
        return None
    # A named back-reference: a numbered one followed by an escaped digit reads as group 10..19.
    pattern = re.escape(head[0]) + r"(?P<between>.{1,40}?)" + re.escape(head[1]) + "".join(
        r"(?P=between)" + re.escape(character) for character in head[2:])
    for match in re.finditer(pattern, text, re.DOTALL):
        if match.start() < end and match.end() > start:
            return match.start()
    return None


def _encoded_input_around(text: str, start: int, end: int, strings: list[str]) -> bool:
    """Whether ``text[start:end]`` lies inside the JSON encoding of one of ``strings`` (a tool
    result or a tool's description printed with ``tojson``), so those inputs explain it."""
    piece = text[start:end]
    for string in strings:
        for encoded in {json.dumps(string, ensure_ascii=False)[1:-1], json.dumps(string)[1:-1]}:
            if piece not in encoded:
                continue
            at = text.find(encoded, max(0, end - len(encoded)))
            while 0 <= at <= start:
                if at + len(encoded) >= end:
                    return True
                at = text.find(encoded, at + 1)
    return False


@register
class NullContentOnToolCall(BehaviourRule):
    """A tool-call turn with content missing, null or "" crashes the template or prints ``None``.

    Why: assistant turns that only call tools carry no text; OpenAI clients send ``null``,
    others omit the key or send "". transformers drops null keys, so null and missing are the
    same to the template; both shapes must render without ``None``. A render failure counts
    unless the same turns with text content fail the same way.

    Bad:
        {% for t in tools or [] %}{{ t.function.name }}{% endfor %}
        {% for m in messages %}{{ '<|' + m.role + '|>' + m.content }}{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}{% endfor %}
        {% endfor %}

    Good:
        {% for t in tools or [] %}{{ t.function.name }}{% endfor %}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content or '' }}{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}{% endfor %}
        {% endfor %}
    """

    code = "TK606"
    name = "null-content-on-tool-call"
    severity = "warning"
    anchors = ("content",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        for fixture in behaviour.evaluated(["tool-call"]):
            messages = [dict(message) for message in fixture.messages]
            for message in messages:
                if message.get("tool_calls"):
                    message["content"] = ""
            variants = [("content missing (or null)", fixture, behaviour.fixture_render(fixture)),
                        ('content ""', fixture.replace(messages=messages),
                         behaviour.render("tool-call:content-empty", fixture.replace(messages=messages)))]
            for label, conversation, rendering in variants:
                if not rendering.ok:
                    with_text = behaviour.render("tool-call:content-text", with_text_on_tool_calls(fixture))
                    if blamed_on_the_feature(rendering.error, with_text):
                        yield failed(f"a tool-call turn with {label} fails", rendering.error)
                    return
                match = _NONE.search(rendering.text)
                if match and not _from_input("None", conversation, behaviour, target):
                    yield f"a tool-call turn with {label} prints None: {excerpt(rendering.text, match.start())}"
                    return


@register
class EmptyToolsDiffer(BehaviourRule):
    """``tools`` undefined, None or [] renders differently from a conversation without tools.

    Why: transformers passes None, servers pass [] or leave ``tools`` undefined; a guard such as
    ``tools is defined`` or ``tools is not none`` then prints a tool preamble with no tools, or
    ``for t in tools`` crashes on None. Test truthiness: ``{% if tools %}``.

    Bad:
        {% if tools is not none %}You may call these tools:{% endif %}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}

    Good:
        {% if tools %}You may call these tools:{% endif %}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}
    """

    code = "TK607"
    name = "empty-tools-differ"
    severity = "warning"
    anchors = ("tools",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        basic = next(behaviour.evaluated(["basic"]), None)
        if basic is None:
            return
        reference = behaviour.fixture_render(basic)
        if not reference.ok:
            return
        variants = [("tools=[]", behaviour.render("basic:tools-empty", basic.replace(tools=[]))),
                    ("tools undefined", target.shared("behaviour:tools-undefined",
                                                      lambda _target: render_without_tools(behaviour, basic)))]
        for label, rendering in variants:
            if not rendering.ok:
                yield failed(f"{label} fails where tools=None renders", rendering.error)
                return
            if rendering.text != reference.text:
                at = common_prefix_length(rendering.text, reference.text)
                yield (f"{label} renders differently from tools=None at offset {at}: "
                       f"{excerpt(rendering.text, at)} vs {excerpt(reference.text, at)}")
                return


@register
class TypedTextDiffers(BehaviourRule):
    """Content given as typed text parts renders differently from the same text as a string.

    Why: OpenAI-style clients send ``[{"type": "text", "text": ...}]``; a template that supports
    parts must render text parts exactly like the plain string, or the same conversation gives
    two prompts depending on the client. A template that reads content only as a string prints
    the parts' Python repr instead, which transformers passes through as it is (servers such as
    vLLM flatten parts to a string first): that is noted (info), until the template declares
    ``typed_content=false``. Worse is a template that renders nothing of what it cannot read:
    parts dropped by a string-only template (Qwen3's), or a plain string dropped by one written
    for parts only (vision models'), lose the message without an error.

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %} {{ p.text }}{% endfor %}{% endif %}
        {% endfor %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}
        {% endfor %}
    """

    code = "TK608"
    name = "typed-text-differs"
    severity = "warning"
    anchors = ("content",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        capabilities = behaviour.capabilities
        if behaviour.requires_typed_content:
            if behaviour.given is None:
                yield from self._strings_dropped(behaviour)
            return
        if not capabilities.supports("typed_content"):
            fact = capabilities.facts.get("typed_content", "")
            if capabilities.declared("typed_content"):
                return
            if PARTS_AS_REPR in fact:
                yield self._printed_as_repr(behaviour)
            elif PARTS_DROPPED in fact:
                yield self._parts_dropped(behaviour)
            return
        # A system message too: templates often read it apart from the turns (|trim, [0]).
        for fixture in behaviour.evaluated(["multi-turn", "system-multi-turn"]):
            as_string = behaviour.fixture_render(fixture)
            as_parts = behaviour.render(f"{fixture.name}:typed", fixture.with_typed_text())
            if not as_string.ok:
                continue
            if not as_parts.ok:
                yield failed(f"{behaviour.describe(fixture)}: typed text parts fail where strings render",
                             as_parts.error)
                return
            if as_parts.text != as_string.text:
                at = common_prefix_length(as_parts.text, as_string.text)
                yield (f"{behaviour.describe(fixture)}: typed text parts render differently from strings at offset "
                       f"{at}: {excerpt(as_parts.text, at)} vs {excerpt(as_string.text, at)}")
                return


    @staticmethod
    def _parts_dropped(behaviour: Behaviour) -> str:
        shown = ""
        basic = next(behaviour.evaluated(["basic"]), None)
        if basic is not None:
            as_parts = behaviour.render("basic:typed", basic.with_typed_text())
            as_string = behaviour.fixture_render(basic)
            if as_parts.ok and as_string.ok:
                at = common_prefix_length(as_parts.text, as_string.text)
                shown = (f": {behaviour.describe(basic)} with its text as parts renders {excerpt(as_parts.text, at)} "
                         f"where the string renders {excerpt(as_string.text, at)}")
        return (f"content given as typed text parts is silently dropped{shown}; the template reads content only "
                f"as a string and renders nothing of a list, which OpenAI-style clients send: render each text "
                f"part's text, or raise_exception on a list; or declare {{# templatekit: capabilities "
                f"typed_content=false #}}")

    @staticmethod
    def _strings_dropped(behaviour: Behaviour) -> Iterator[str]:
        """A template for typed parts only that renders a plain string without its text (a
        client of a text model sends strings): the prompt silently loses the message."""
        basic = behaviour.builtin_fixture("basic")
        as_strings = behaviour.render("basic:strings", basic)
        if not as_strings.ok:
            return  # raising on a string is a clear refusal
        lost = [f"messages[{index}]" for index, message in enumerate(basic.messages)
                if not content_reaches(message, as_strings.text)]
        if not lost:
            return
        as_parts = behaviour.fixture_render(behaviour.fixture("basic"))
        at = common_prefix_length(as_strings.text, as_parts.text) if as_parts.ok else 0
        yield (f"content given as a plain string is silently dropped: fixture 'basic' with string contents renders "
               f"{excerpt(as_strings.text, at)}, without {', '.join(lost)}; the template reads content only as "
               f"typed parts: render a string as it is, or raise_exception on one")

    @staticmethod
    def _printed_as_repr(behaviour: Behaviour) -> Broken:
        basic = next(behaviour.evaluated(["basic"]), None)
        shown = ""
        if basic is not None:
            as_parts = behaviour.render("basic:typed", basic.with_typed_text())
            at = as_parts.text.find(PART_REPR) if as_parts.ok else -1
            if at >= 0:
                shown = f": {behaviour.describe(basic)} with its text as parts renders {excerpt(as_parts.text, at)}"
        return Broken(f"content given as typed text parts prints as the list's Python repr{shown}; the template "
                      f"reads content only as a string, so clients must flatten parts to a string before rendering "
                      f"(transformers passes them as they are); declare it with "
                      f"{{# templatekit: capabilities typed_content=false #}}", severity="info")


@register
class ToolResultEncodedTwice(BehaviourRule):
    """A tool result sent as a string is printed JSON-encoded: quoted, its own quotes escaped.

    Why: clients send tool results as strings (OpenAI's format), usually JSON text already. A
    template that runs every result through ``|tojson`` prints ``"{\\"temperature\\": 41}"``, a
    string literal where the model was trained on the result itself; Llama 3.1's template does it
    because its test ``content is mapping or content is iterable`` is true for a string too. A
    result printed as the value of a JSON field (``"content": "..."``) must be encoded, and is not
    reported.

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{% if m.content is iterable %}{{ m.content|tojson }}{% endif %}{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}{% endfor %}
        {% endfor %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{% if m.content is string %}{{ m.content }}{% elif m.content is iterable %}{{ m.content|tojson }}{% endif %}{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}{% endfor %}
        {% endfor %}
    """

    code = "TK617"
    name = "tool-result-encoded-twice"
    severity = "warning"
    anchors = ("tojson", "content")

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        for fixture in behaviour.evaluated(["tool-call", "parallel-tool-calls"]):
            rendering = behaviour.fixture_render(fixture)
            if not rendering.ok:
                continue
            for index, message in enumerate(fixture.messages):
                content = message.get("content")
                if message.get("role") != "tool" or not isinstance(content, str) or not content.strip():
                    continue
                at = _standalone_json_string(content, rendering.text)
                if at is not None:
                    line, column = _tojson_on_content(target)
                    yield Broken(f"{behaviour.describe(fixture)} prints messages[{index}] (tool), a string, "
                                 f"JSON-encoded: {excerpt(rendering.text, at)}; print a string result as it is and "
                                 f"encode only a mapping or list (strings pass 'is iterable' too)", line, column)
                    return


def _standalone_json_string(content: str, rendered: str) -> int | None:
    """Where ``content`` appears in ``rendered`` only as a JSON string literal that is not the
    value of a JSON field or list item, or None."""
    if _text_in(content, rendered):
        return None
    for encoded in dict.fromkeys((json.dumps(content, ensure_ascii=False), json.dumps(content))):
        start = rendered.find(encoded)
        while start >= 0:
            before = rendered[:start].rstrip()[-1:]
            after = rendered[start + len(encoded):].lstrip()[:1]
            if before not in (":", "[", ",") and after not in (",", "}", "]", ":"):
                return start
            start = rendered.find(encoded, start + 1)
    return None


def _text_in(content: str, rendered: str) -> bool:
    return content in rendered or content.strip() in rendered


def _tojson_on_content(target: LintTarget) -> tuple[int | None, int | None]:
    """The position of the first ``|tojson`` applied to a message's content, if the code has one."""
    tree = getattr(target, "tree", None)
    if tree is None:
        return None, None
    for node in find_all(target, tree, nodes.Filter):
        subject = node.node
        if node.name == "tojson" and (
                (isinstance(subject, nodes.Getattr) and subject.attr == "content")
                or (isinstance(subject, nodes.Getitem) and isinstance(subject.arg, nodes.Const)
                    and subject.arg.value == "content")):
            return target.node_position(node, "tojson")
    return None, None


@register
class ContinueFinalMessageBroken(BehaviourRule):
    """``continue_final_message`` does not leave the final message's text verbatim at the end.

    Why: prefill (continue the assistant's partial reply) cuts the render right after the final
    content; a template that trims, rewrites or closes that content makes transformers raise or
    cut in the wrong place, and the model continues from altered text. A render failure counts
    unless the same messages fail the same way without ``continue_final_message`` (then the
    template fails on the conversation itself: TK616).

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content|upper }}<|end|>{% endfor %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}
    """

    code = "TK609"
    name = "continue-final-message-broken"
    severity = "warning"

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        for fixture in behaviour.evaluated(["prefill"]):
            rendering = behaviour.fixture_render(fixture)
            # transformers cuts after the last text part of typed content.
            texts = content_texts(fixture.messages[-1].get("content"))
            final = texts[-1] if texts else ""
            if not rendering.ok:
                if rendering.error.kind != "raised" and blamed_on_the_feature(
                        rendering.error, behaviour.render(f"{fixture.name}:not-continued", not_continued(fixture), False)):
                    yield failed("continue_final_message fails", rendering.error)
            elif not rendering.text.endswith(final):
                yield (f"with continue_final_message the render does not end with the final content verbatim; "
                       f"it ends {excerpt(rendering.text, len(rendering.text))}")


@register
class NondeterministicOutput(BehaviourRule):
    """The same conversation renders to different text twice, with the clock pinned.

    Why: ``|random`` or anything else nondeterministic makes prompts unreproducible, defeats
    prefix caches and golden tests, and gives training examples that never match inference.

    Bad:
        {{ ['Hi.', 'Hello.', 'Hey.', 'Greetings.', 'Welcome.', 'Howdy.', 'Salut.', 'Hola.']|random }}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}

    Good:
        Hi.
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}
    """

    code = "TK610"
    name = "nondeterministic-output"
    severity = "warning"
    anchors = ("random",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str]:
        if not _may_use_chance(behaviour, target):
            return
        fixture = next(behaviour.evaluated(["basic"]), None)
        if fixture is None:
            return
        first = behaviour.fixture_render(fixture)
        # Several fresh renders: a choice among n options repeats with probability 1/n per try.
        for _ in range(4):
            again = behaviour.render_fresh(fixture)
            if first.ok and again.ok and first.text != again.text:
                at = common_prefix_length(first.text, again.text)
                yield (f"two renders of {behaviour.describe(fixture)} differ at offset {at}: "
                       f"{excerpt(first.text, at)} vs {excerpt(again.text, at)}")
                return


_CHANCE_NAMES = re.compile(r"random|lipsum")


def _may_use_chance(behaviour: Behaviour, target: LintTarget) -> bool:
    """Whether a render can differ from the next at all. The sandbox's only sources of chance are
    the random filter and lipsum(), and the clock is pinned; a global is read by its name and a
    filter by its name or through ``map(name)``, so a template naming neither, with no ``map``
    whose filter name is computed, renders the same every time (and needs no repeated renders)."""
    if _CHANCE_NAMES.search(behaviour.text) or target.tree is None:
        return True
    return any(node.name == "map" and node.args and not isinstance(node.args[0], nodes.Const)
               for node in find_all(target, target.tree, nodes.Filter))


@register
class EmptyConversationCrash(BehaviourRule):
    """The template crashes on an empty conversation instead of rendering or raising a message.

    Why: servers render ``messages=[]`` to extract stop strings, probe capabilities or reset
    history; ``messages[0]['role']`` on an empty list crashes them. Guard with
    ``{% if messages %}`` or raise a clear error with ``raise_exception``. Not reported when a
    one-message conversation fails the same way (TK616 reports that).

    Bad:
        {% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}

    Good:
        {% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}
    """

    code = "TK611"
    name = "empty-conversation-crash"
    severity = "info"
    anchors = ("messages[",)

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        rendering = behaviour.render("empty", Conversation([]), True, allow_empty=True)
        if not rendering.ok and rendering.error.kind not in ("raised", "budget"):
            basic = next(behaviour.evaluated(["basic"]), None)
            if blamed_on_the_feature(rendering.error, None if basic is None else behaviour.fixture_render(basic)):
                yield failed("an empty conversation crashes the template", rendering.error)


@register
class ReasoningDroppedFromHistory(BehaviourRule):
    """Reasoning shown on the latest assistant turn disappears from it once the conversation goes on.

    Why: many reasoning models are trained to see only the current turn's thinking, so dropping
    it from history is a deliberate policy, not a bug (that is why TK602 does not report it).
    It still means the prompt is not append-only at that turn: the prefix cache misses and an
    assistant mask computed by diffing renders is wrong there. Know that it happens. Only what
    the longer conversation no longer prints counts: the turn's reasoning text, a reasoning
    marker (an empty think block the template adds to the latest turn of a conversation with no
    reasoning too), or the content of a think block the prompt opened; indentation that changes next to
    a ``</think>`` still printed is an unstable history (TK602).

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{% if loop.last and m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}
        {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}
        {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}
    """

    code = "TK613"
    name = "reasoning-dropped-from-history"
    severity = "info"
    anchors = ("reasoning_content", "reasoning", "thinking", "enable_thinking")

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str]:
        for kind, message in _history(behaviour, target):
            if kind == "reasoning":
                yield message


@register
class ChecksNotEvaluated(BehaviourRule):
    """Behavioural checks were skipped for fixtures needing a capability the template lacks.

    Why: a template without tool support cannot fail (or pass) the tool fixtures, so they are
    skipped, and saying so keeps "no findings" from reading as "every check passed". Declare
    the capabilities (``{# templatekit: capabilities tools=false #}`` or the ``capabilities``
    config table) to record that the gap is intended (a declared gap is not listed here; one the
    probe contradicts is TK615, a declaration that cannot be understood TK092). When the
    template does not compile, or a probe render runs out of its time budget (nested loops that
    never end), no behavioural check runs at all, since every render would fail the same way or
    spend the whole budget again; this says so too, as it does when every fixture's render fails
    (a template that refuses every conversation with ``raise_exception``).

    Bad:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}

    Good:
        {# templatekit: capabilities tools=false tool_calls=false parallel_tool_calls=false tool_responses=false tool_call_id=false documents=false typed_content=false reasoning=false #}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}
    """

    code = "TK614"
    name = "checks-not-evaluated"
    severity = "info"
    checks_templates_past_budget = True

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[str | Broken]:
        if behaviour.compile_failure is not None:
            failure = behaviour.compile_failure
            yield Broken(f"not evaluated: every behavioural check (TK6xx), because the template does not compile: "
                         f"{failure_text(failure)}", failure.line)
            return
        if behaviour.spent_budget is not None:
            failure = behaviour.spent_budget.error
            spent = "time" if failure.exception_type == OutOfTime.__name__ else "output or memory"
            yield Broken(f"not evaluated: every behavioural check (TK6xx), because the capability probe's render "
                         f"'{behaviour.spent_budget_probe}' failed: {failure_text(failure)}; every render "
                         f"of this template would spend its whole {spent} budget", failure.line)
            return
        # Rendered, yet nothing to check: a template that refuses every fixture (its own
        # raise_exception) or takes content in a form no fixture uses would otherwise look clean.
        renders = [(fixture, behaviour.fixture_render(fixture)) for fixture in behaviour.evaluated()]
        if renders and not any(rendering.ok for _fixture, rendering in renders):
            fixture, rendering = renders[0]
            yield Broken(f"not evaluated: the behavioural checks that compare fixture renders (TK6xx), because "
                         f"the render of every fixture fails ({len(renders)} of {len(renders)}), the first, "
                         f"{behaviour.describe(fixture)}, with "
                         f"{failure_text(rendering.error)}", rendering.error.line)
            return
        capabilities = behaviour.capabilities
        # Declared gaps are the author's decision: only undeclared (probed) gaps are news.
        skipped = [(name, missing) for name, missing in behaviour.not_evaluated()
                   if not all(capabilities.declared(capability) for capability in missing)]
        if skipped:
            yield "not evaluated: " + "; ".join(f"{name} (needs {', '.join(missing)})" for name, missing in skipped)


@register
class PlainConversationFails(BehaviourRule):
    """A plain user/assistant conversation makes the template fail with a render error.

    Why: transformers raises on every such conversation, so the template cannot serve ordinary
    chat at all: a variable only the author's own setup defined, ``tools`` iterated while it is
    None, an attribute assigned on a message. The behavioural checks skip every render that
    fails, so without this finding such a template would look almost clean. A template that
    rejects a conversation on purpose with ``raise_exception`` is not reported here.

    Bad:
        {% for m in messages %}{% set m.seen = true %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}

    Good:
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}
    """

    code = "TK616"
    name = "plain-conversation-fails"
    severity = "error"
    checks_given_conversations = False  # a given conversation that fails is fuzzing's own render-error

    def findings(self, behaviour: Behaviour, target: LintTarget) -> Iterator[Broken]:
        if behaviour.given is not None:
            return
        # transformers picks a template named tool_use only when tools are passed.
        tools = (behaviour.fixture("tool-definitions").tools
                 if getattr(getattr(target, "template", None), "name", None) == "tool_use" else None)
        failures = []
        typed_only = behaviour.requires_typed_content
        for name in ORDINARY_FIXTURES:
            fixture = behaviour.fixture(name)
            key = name
            if tools:
                fixture, key = fixture.replace(tools=tools), f"{name}:with-tools"
            rendering = behaviour.render(key, fixture)
            if rendering.ok or not _plain_failure(behaviour, rendering.error):
                continue
            # A template written for typed content parts only (MiniMax, vision models) renders
            # the same turns given as parts: a design (`templatekit capabilities` notes it), not a
            # failure on every conversation. One that takes a user's string but not an
            # assistant's is not written for parts: it fails on plain chats.
            if typed_only and behaviour.render(f"{key}:typed", fixture.with_typed_text()).ok:
                continue
            failures.append((name, rendering.error))
        if not failures:
            return
        (first, failure), others = failures[0], failures[1:]
        message = f"fixture '{first}' fails: {failure_text(failure)}"
        same = [name for name, other in others if _same_failure(other, failure)]
        different = [f"fixture '{name}': {failure_text(other)}" for name, other in others
                     if not _same_failure(other, failure)]
        if same:
            message += f" ({_names(same)} {'fails' if len(same) == 1 else 'fail'} the same way)"
        if different:
            message += "; also " + "; ".join(different)
        yield Broken(message + "; transformers cannot render a plain user/assistant conversation with this "
                               "template, and the behavioural checks skip every render that fails", failure.line)


def _plain_failure(behaviour: Behaviour, failure: RenderFailure) -> bool:
    """Whether a failed render is the template's own failure: a render error or a sandbox refusal,
    not its ``raise_exception`` (deliberate), an exhausted budget (the security rules') or an
    input transformers refuses before rendering. An undefined special token (``sep_token``) of a
    template given without its tokenizer is left out: the tokenizer would supply it."""
    if failure.kind not in ("error", "security"):
        return False
    return failure.undefined_special_token() is None or bool(behaviour.source_special_tokens)


def _same_failure(first: RenderFailure, second: RenderFailure) -> bool:
    return (first.kind, first.exception_type, first.message, first.line) == (
        second.kind, second.exception_type, second.message, second.line)


def _names(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return ("fixture " if len(quoted) == 1 else "fixtures ") + " and ".join(quoted)


@register
class EngineDependentWhitespace(BehaviourRule):
    """The prompt's whitespace changes when Jinja's trim_blocks or lstrip_blocks is off.

    Why: transformers renders with ``trim_blocks`` and ``lstrip_blocks`` on. Plain
    ``jinja2.Template``, minijinja's defaults and tools that load a template into their own Jinja
    setup leave them off, so a template that relies on them to drop the newline after a
    ``{% ... %}`` line or the indentation before it gives those engines extra blank lines and
    spaces the model never saw in training. Whitespace control (``{%-``, ``-%}``) makes the
    output the same everywhere. Reported as info: transformers' output is still the reference,
    this says the prompt is engine-dependent.

    Bad:
        {% for m in messages %}
        <|{{ m.role }}|>{{ m.content }}<|end|>
        {% endfor %}

    Good:
        {% for m in messages -%}
        <|{{ m.role }}|>{{ m.content }}<|end|>{{ '\\n' }}
        {%- endfor %}
    """

    code = "TK612"
    name = "engine-dependent-whitespace"
    severity = "info"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        behaviour = behaviour_of(target)
        if not_checkable(behaviour):
            return []
        try:
            groups = whitespace_sensitive_settings(behaviour.text)
        except Exception:  # noqa: BLE001 - a template that does not lex is TK0xx's finding
            return []
        first = None
        differing = []
        for settings, line, kind in groups:
            difference = _whitespace_difference(behaviour, settings[0])
            if difference is None:
                continue
            if first is None:
                first = (settings[0], line, kind, difference)
            differing += settings
        if first is None:
            return []
        settings, line, kind, difference = first
        what = "keeps the newline after it" if kind == "trim" else "keeps its indentation"
        message = (f"whitespace depends on Jinja's trim_blocks/lstrip_blocks (transformers turns both on): under "
                   f"{describe_settings(*settings)}, {difference}; the first tag this changes ({what}) is at "
                   f"line {line}, column {_tag_column(target, line, kind)}")
        others = [describe_settings(*other) for other in differing if other != settings]
        if others:
            message += "; also differs under " + " and under ".join(others)
        # Which kept newline or indentation makes the first difference is not known (only that
        # one of them does), so the finding stays on line 1 rather than pointing at a guess.
        return [self.diagnostic(1, 1, message)]


def _whitespace_difference(behaviour: Behaviour, settings: tuple[bool, bool]) -> str | None:
    for fixture in behaviour.evaluated():
        reference = behaviour.fixture_render(fixture)
        if not reference.ok:
            continue
        variant = behaviour.render_with_settings(fixture, *settings, reference=reference)
        if not variant.ok:
            return f"{behaviour.describe(fixture)} fails: {failure_text(variant.error)}"
        if variant.text != reference.text:
            at = common_prefix_length(variant.text, reference.text)
            return (f"{behaviour.describe(fixture)} renders {visible_excerpt(variant.text, at)} where transformers "
                    f"renders {visible_excerpt(reference.text, at)} (offset {at})")
    return None


def _tag_column(target: LintTarget, line: int, kind: str) -> int:
    # lstrip_blocks acts on the first tag of a line (only indentation may precede it), trim_blocks
    # on the newline right after the last one.
    text = target.lines[line - 1] if 0 < line <= len(target.lines) else ""
    starts = [text.find(opener) if kind == "lstrip" else text.rfind(opener) for opener in ("{%", "{#")]
    found = [start for start in starts if start >= 0]
    if not found:
        return 1
    return (min(found) if kind == "lstrip" else max(found)) + 1
