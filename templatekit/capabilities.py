"""What a chat template supports, found by rendering needle conversations (as minja does).

minja (google/minja ``chat-template.hpp``, vendored by llama.cpp) decides what a template can do
by rendering small probe conversations whose values are unique "needles" and checking which
needles reach the output. templatekit probes the same way, with transformers' renderer, and adds
documents, reasoning, the ``{% generation %}`` tag and the generation prompt.

A template may also *declare* what it does not (or does) support, either in the lint config::

    [tool.templatekit]
    capabilities = { tools = false, documents = false }

or in a comment in the template itself::

    {# templatekit: capabilities tools=false documents=false #}

A declaration is a real Jinja comment (found in the lexer's tokens, as suppressions are): the
same words inside ``{% raw %}`` or a string literal are text the template prints, not a
declaration. Settings are ``name=true|false`` separated by spaces or commas; what cannot be
understood is kept as a ``DeclarationProblem`` with the comment's position (lint rule TK092).

Declarations win over probing: probing can only see what renders, while the author knows what
the model was trained on. Behavioural checks skip every fixture that needs a capability the
template lacks and list it as "not evaluated" rather than counting it as passed. What the probe
saw is kept beside the declared value, so a declaration the probe contradicts (declared
unsupported, yet the template renders it) is reported (TK615) instead of silently hiding checks.

A probed capability reads one of four ways, and each probe is judged against a *baseline*, the
same probe without the feature (a plain user turn for the system role, tools, documents and typed
content; tool definitions alone for tool calls and results; a single call for parallel calls; a
user turn and an answer for reasoning; the render without ``add_generation_prompt`` for the
generation prompt; the generation tag is looked for in every probe with an assistant turn):

- **yes**: the feature's needle reached the output. Needles the template prints anyway (tool
  names and parameter names in the tool definitions it lists) do not count, so "yes" is proof:
  parallel calls are "yes" only when each call's own argument value is in the output.
  ``tool_call_id`` is also "yes" when the id is used without being printed: a result naming no
  tool renders differently, or fails, once its id matches no call.
- **no**: the probe rendered without the needle (the system role's note says "dropped").
- **no, raises**: the probe fails while its baseline renders; the note is "raises: " and the
  error. A capability whose baseline probes a capability that is a "no" (tool calls when tool
  definitions raise, parallel calls when single calls raise) reads the same way.
- **unknown** (``None`` in ``values``, ``supported: null`` in JSON, ``?`` in the table): the
  probe fails and so does its baseline, so nothing tells whether the template lacks the feature
  or fails on more than the feature; the note is "unknown: " and why (the baseline fails too,
  or every probe render fails) with the baseline's error. A probe render that spent its whole
  time or output budget reads as unknown too.

A template that fails on a plain user turn unless tool definitions or documents are passed
(Phi-4-mini's iterates ``tools`` even when it is None) leaves most baselines failing. The probes
then run again with them passed (``CONTEXTS``), and each capability that pass can tell, one whose
feature the context does not already pass, is read from it, noted "probed with ... passed".

Checks treat an unknown capability as present: the fixtures that need it are rendered, and a
template that fails on them is reported by the checks that render them, where skipping them
would list them as "not evaluated" for a capability the template was never shown to lack.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .conversation import Conversation
from .fixtures import CAPABILITIES as FIXTURE_CAPABILITIES

# Every capability, in report order. ``generation_prompt`` is not a fixture requirement but a
# property TK601 checks, so a template without one can be declared instead of failing.
CAPABILITY_NAMES = FIXTURE_CAPABILITIES + ("generation_tag", "generation_prompt")

DESCRIPTIONS = {
    "system": "system role",
    "tools": "tool definitions",
    "tool_calls": "assistant tool calls",
    "parallel_tool_calls": "several tool calls in one turn",
    "tool_responses": "tool results (role tool)",
    "tool_call_id": "tool_call_id linking results to calls",
    "documents": "RAG documents",
    "typed_content": "typed content parts ([{type: text, text: ...}])",
    "reasoning": "reasoning (reasoning_content / thinking)",
    "generation_tag": "{% generation %} assistant mask",
    "generation_prompt": "a generation prompt for add_generation_prompt",
}

# Of the ``{# templatekit: ... #}`` comments (LintTarget.directive_comments), a declaration is
# one whose first word is ``KEYWORD``; the suppression parser leaves those, and near misses, alone.
KEYWORD = "capabilities"
_LEADING_WORD = re.compile(r"[^\s=,]*")
_EQUALS = re.compile(r"\s*=\s*")
_SEPARATORS = re.compile(r"[\s,]+")
_VALUES = {"true": True, "false": False}

# The needles; distinctive enough that no template prints them by accident.
SYSTEM_NEEDLE = "<System Needle>"
USER_NEEDLE = "<User Needle>"
ASSISTANT_NEEDLE = "<Assistant Needle>"
TOOL_NAME = "some_tool"
ARGUMENT_NEEDLE = "argument_needle"
RESPONSE_NEEDLE = "Some response!"
CALL_ID = "call_911_"
DOCUMENT_NEEDLE = "<Document Needle>"
REASONING_NEEDLE = "<Reasoning Needle>"
# The parallel probe's two tools, and each call's argument value: what proves both calls rendered.
PARALLEL_TOOLS = ["test_tool1", "test_tool2"]
PARALLEL_NEEDLES = ("first_call_needle", "second_call_needle")
# Each call's id: nine characters, as Mistral's templates demand of every id (they raise otherwise).
CALL_IDS = (CALL_ID, "call_912_")
# Result ids that match no call, for telling whether a template links results to calls by id.
UNLINKED_IDS = ("call_913_", "call_914_")

# How a typed content list prints in a template that expects a string: its Python repr.
PART_REPR = "{'type'"

# The typed-content fact of a template written for content parts only.
REQUIRES_TYPED_CONTENT = "requires typed content"

# The typed-content fact of a string-only template that prints a list of parts as it is.
PARTS_AS_REPR = "parts print as their Python repr ([{'type': 'text', ...}])"

# The typed-content fact of a string-only template that renders a list of parts without its text.
PARTS_DROPPED = "the text of parts is dropped"

# What each baseline renders, for the note of a probe that could not tell.
A_USER_TURN = "a plain user turn"
WITH_TOOLS = "a user turn with tool definitions"
ONE_CALL = "a single tool call"
AN_EXCHANGE = "a user turn and an assistant answer"

# A render function: (cache key, conversation, add_generation_prompt) -> Rendering.
Render = Callable[[str, Conversation, bool], Any]


@dataclasses.dataclass(frozen=True)
class Declaration:
    """One ``name=true|false`` setting of a capability comment, at the comment's opening."""

    name: str
    supported: bool
    line: int
    column: int


@dataclasses.dataclass(frozen=True)
class DeclarationProblem:
    """What is wrong with a capability comment, at the comment's opening (1-based)."""

    line: int
    column: int
    message: str


@dataclasses.dataclass(frozen=True)
class Declarations:
    """Every understood setting of the template's capability comments, in template order, and
    every problem with them."""

    settings: tuple[Declaration, ...] = ()
    problems: tuple[DeclarationProblem, ...] = ()

    def effective(self) -> dict[str, Declaration]:
        """The setting that counts for each declared name: the last one."""
        return {setting.name: setting for setting in self.settings}

    def values(self) -> dict[str, bool]:
        return {name: setting.supported for name, setting in self.effective().items()}


@dataclasses.dataclass
class Capabilities:
    """Each capability's value, and where it came from (``"probed"``, ``"config"``, ``"comment"``).

    A value is True, False, or None when the probe could not tell (its render and its baseline's
    both fail; see the module docstring). ``supports`` counts None as present, so checks render
    the fixtures that need it rather than skipping them as unsupported.
    ``facts`` keeps what probing saw beyond yes/no (the system role raises or is dropped, tool
    arguments must be objects, content must not be null, why a value is unknown...), for reports
    and for rules that treat "raises" (declared by the template) differently from "silently
    dropped"; ``failures`` the render error behind a "raises" or an unknown.
    ``probed`` keeps the probe's own answers under any declaration, and ``declarations`` the
    template's capability comments, problems included (both empty before ``resolve``).
    """

    values: dict[str, bool | None]
    sources: dict[str, str]
    facts: dict[str, str] = dataclasses.field(default_factory=dict)
    probed: dict[str, bool | None] = dataclasses.field(default_factory=dict)
    declarations: Declarations = dataclasses.field(default_factory=Declarations)
    failures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def supports(self, name: str) -> bool:
        return self.values.get(name, True) is not False

    def unknown(self, name: str) -> bool:
        """Whether the value is the probe's "could not tell" (a declaration always tells)."""
        return self.values.get(name, True) is None

    def missing(self, requires: tuple[str, ...] | list[str]) -> list[str]:
        """The capabilities in ``requires`` this template lacks (an unknown one is not lacking)."""
        return [name for name in requires if not self.supports(name)]

    def declared(self, name: str) -> bool:
        return self.sources.get(name, "probed") != "probed"

    def contradicted(self) -> list[str]:
        """Capabilities declared unsupported that the probe saw the template render. A probe's
        "yes" is a needle found in the output, so it cannot be wrong; such a declaration only
        skips checks the template could run. (An unknown probe contradicts nothing.)"""
        return [name for name in CAPABILITY_NAMES
                if self.declared(name) and not self.supports(name) and self.probed.get(name) is True]


def read_declarations(template: Any) -> Declarations:
    """The capability comments of ``template`` (its text, or a ``LintTarget`` of it).

    Only real comment tokens count, found with the same lexer and token stream the lint rules
    and suppressions use; a template that does not lex is read up to where lexing fails.
    """
    from .lint.target import LintTarget

    if isinstance(template, str) and "templatekit" not in template:
        return Declarations()  # no directive to find; skips lexing the template once more
    target = template if isinstance(template, LintTarget) else LintTarget(template)
    settings: list[Declaration] = []
    problems: list[DeclarationProblem] = []
    for body, opening, _closing in target.directive_comments():
        line, column = target.position(opening.offset)
        words = body.split(None, 1)
        if words[:1] != [KEYWORD]:
            near = near_declaration_keyword(body)
            if near:
                problems.append(DeclarationProblem(line, column, near))
            continue
        _read_settings(words[1] if len(words) > 1 else "", line, column, settings, problems)
    return Declarations(tuple(settings), tuple(problems))


def near_declaration_keyword(body: str) -> str:
    """Why a directive that was probably meant as a declaration is not one ("" when it was not)."""
    word = _LEADING_WORD.match(body).group(0)
    if not word or not (word.lower() == KEYWORD or difflib.get_close_matches(word.lower(), [KEYWORD], 1, 0.8)):
        return ""
    if word == KEYWORD:  # glued to what follows: "capabilities=...", "capabilities,tools=false"
        what = f"'{KEYWORD}' must be followed by a space"
    else:
        what = f"'{_shown(word)}' is not '{KEYWORD}'"
    return f"{what}: the comment declares nothing (write 'templatekit: {KEYWORD} tools=false')"


def _read_settings(body: str, line: int, column: int, settings: list[Declaration],
                   problems: list[DeclarationProblem]) -> None:
    parts = [part for part in _SEPARATORS.split(_EQUALS.sub("=", body.strip())) if part]
    if not parts:
        problems.append(DeclarationProblem(line, column,
                                           "the declaration names no capability (write e.g. tools=false)"))
        return
    for part in parts:
        name, equals, value = part.partition("=")
        if not equals or not name:
            message = f"'{_shown(part)}' is not name=true|false; ignored"
        elif name not in CAPABILITY_NAMES:
            close = difflib.get_close_matches(name.lower(), CAPABILITY_NAMES, 1, 0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(CAPABILITY_NAMES)}"
            message = f"unknown capability '{_shown(name)}' ({hint}); ignored"
        elif value.lower() not in _VALUES:
            message = f"'{name}' must be true or false, got '{_shown(value)}'; ignored"
        else:
            supported = _VALUES[value.lower()]
            earlier = next((s for s in reversed(settings) if s.name == name), None)
            if earlier is not None and earlier.supported != supported:
                where = "" if (earlier.line, earlier.column) == (line, column) else \
                    f" (at {earlier.line}:{earlier.column})"
                problems.append(DeclarationProblem(line, column, (
                    f"'{name}' is declared {_word(earlier.supported)}{where} and {_word(supported)}; "
                    f"the last one ({_word(supported)}) counts")))
            settings.append(Declaration(name, supported, line, column))
            continue
        problems.append(DeclarationProblem(line, column, message))


def _word(supported: bool) -> str:
    return "true" if supported else "false"


def _shown(text: str, limit: int = 40) -> str:
    # Whatever the comment holds goes into a one-line message: keep it short and on one line.
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def declared_in_template(text: str) -> dict[str, bool]:
    """``{# templatekit: capabilities tools=false ... #}`` settings (the last one wins per key).

    Settings that cannot be understood are left out here; ``comment_problems`` explains them.
    """
    return read_declarations(text).values()


def comment_problems(text: str) -> list[str]:
    """What is wrong with the template's capability comments (unknown names, bad values...)."""
    return [problem.message for problem in read_declarations(text).problems]


def _user(text: str = USER_NEEDLE) -> dict:
    return {"role": "user", "content": text}


def _call(name: str, arguments: Any, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool(name: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "Some tool.",
            # Described as a real tool is: templates that print each parameter's description
            # (gpt-oss-style) fail on a bare one, and the probe is about tools, not that.
            "parameters": {"type": "object",
                           "properties": {ARGUMENT_NEEDLE: {"type": "string", "description": "Some argument."}},
                           "required": [ARGUMENT_NEEDLE]},
        },
    }


def _tool_call_conversation(arguments: list[Any], *, user_after_results: bool = True,
                            content: str | None = "", context: "_Context | None" = None,
                            result_ids: tuple[str, ...] | None = None, named_results: bool = True) -> Conversation:
    """minja's tool-call probe: one call per item of ``arguments`` (one, or two in one turn) in an
    assistant turn with ``content``, the results, and a user turn after them (or, with
    ``user_after_results=False``, ending at the results, where the model answers next). Each
    result carries its call's id, or the matching one of ``result_ids``, and its tool's name
    unless ``named_results`` is false (OpenAI's results name no tool)."""
    names = [TOOL_NAME] if len(arguments) == 1 else PARALLEL_TOOLS
    tool_calls = [_call(name, each, call_id) for name, each, call_id in zip(names, arguments, CALL_IDS)]
    ids = result_ids or [call["id"] for call in tool_calls]
    messages = [
        _user(),
        {"role": "assistant", "content": content, "tool_calls": tool_calls},
        *({"role": "tool", "tool_call_id": call_id, **({"name": call["function"]["name"]} if named_results else {}),
           "content": RESPONSE_NEEDLE}
          for call, call_id in zip(tool_calls, ids)),
    ]
    if user_after_results:
        messages.append(_user("Thanks."))
    return (context or NO_CONTEXT).conversation(messages, tools=[_tool(name) for name in names])


def _refused(rendering: Any) -> bool:
    return rendering is not None and not rendering.ok and getattr(rendering.error, "kind", None) == "raised"


def _render_tool_calls(render: Render, key: str, arguments: list[Any], content: str | None = "",
                       context: "_Context | None" = None) -> Any:
    """The tool-call probe rendered; when the template itself refuses minja's shape (Mistral's
    templates raise unless an assistant turn follows tool results), the same calls ending at their
    results, the shape every tool-calling client sends before the model's answer."""
    rendering = render(key, _tool_call_conversation(arguments, content=content, context=context), True)
    if _refused(rendering):
        rendering = render(f"{key}:ending-with-results",
                           _tool_call_conversation(arguments, user_after_results=False, content=content,
                                                   context=context), True)
    return rendering


def _links_results_by_id(render: Render, side: Render, key: str, arguments: list[Any], context: "_Context") -> bool:
    """Whether the template uses a result's ``tool_call_id`` without printing it: results that
    name no tool (as OpenAI's do) render differently, or raise, once their id matches no call
    (a template that looks the call up by id to name the result's tool). Its renders go through
    ``side``: ids that match no call are input no client sends, so a template that loops forever
    on them must not stop the probing of everything else (``probe``)."""
    # The shape the probe ``key`` rendered in: its render of minja's shape is cached.
    ends_at_results = _refused(render(key, _tool_call_conversation(arguments, context=context), True))
    shape = ":ending-with-results" if ends_at_results else ""
    texts = []
    for name, ids in (("probe:call-unnamed", None), ("probe:call-unnamed-unlinked", UNLINKED_IDS)):
        rendering = side(name + shape, _tool_call_conversation(
            arguments, user_after_results=not ends_at_results, context=context, result_ids=ids,
            named_results=False), True)
        failure = _failure(rendering)
        if failure is not None:
            # Failing on a result whose id matches no call (refusing it, or crashing where the
            # looked-up call is missing) is using the id; failing either way is not.
            return ids is not None and not getattr(failure, "spent_budget", False)
        texts.append(rendering.text)
    return texts[0] != texts[1]

def _shows_arguments(text: str | None, tools_only: str | None) -> bool:
    # minja accepts the JSON key, a Python-dict key or an XML parameter. The needle is also the
    # parameter's name in the tool schema, so a template that prints the tool definitions but
    # drops the call shows it too: only appearances beyond the tools-only render count.
    if text is None:
        return False
    return text.count(ARGUMENT_NEEDLE) > (tools_only or "").count(ARGUMENT_NEEDLE)


def _text(rendering: Any) -> str | None:
    return rendering.text if rendering is not None and rendering.ok else None


def _has(rendering: Any, needle: str) -> bool:
    text = _text(rendering)
    return text is not None and needle in text


def _failure(rendering: Any) -> Any:
    """The render's error, or None when it rendered."""
    return None if rendering is not None and rendering.ok else getattr(rendering, "error", None)


class _Readings:
    """The probe's readings, each judged against the same probe without the feature (its
    baseline): a failing probe is "raises" only when its baseline renders."""

    def __init__(self) -> None:
        self.values: dict[str, bool | None] = {}
        self.facts: dict[str, str] = {}
        self.failures: dict[str, Any] = {}
        self.probe_failures: dict[str, Any] = {}  # each capability's own probe's failure

    def read(self, name: str, found: bool, feature: Any, baseline: Any, baseline_is: str,
             depends_on: str | None = None) -> None:
        """``found``: the needle reached ``feature``'s output. ``baseline_is`` says what the
        baseline renders, for the note when it fails too. When ``depends_on`` (the capability the
        baseline probes) is a "no", a failing probe is a "no" as well: tool calls cannot render
        where tool definitions already raise."""
        failure = _failure(feature)
        if failure is not None:
            self.probe_failures[name] = failure
        if found or failure is None:
            self.values[name] = found
        elif getattr(failure, "spent_budget", False):
            self.unknown(name, "the probe's render spent its whole budget", failure)
        elif _failure(baseline) is None or (depends_on is not None and self.values.get(depends_on) is False):
            self.values[name] = False
            self.facts[name] = "raises"
            self.failures[name] = failure
        else:
            self.unknown(name, f"the probe without it ({baseline_is}) fails too", _failure(baseline))

    def unknown(self, name: str, why: str, failure: Any) -> None:
        self.values[name] = None
        self.facts[name] = f"unknown: {why}"
        self.failures[name] = failure


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every probe of a pass carries besides its own feature: nothing, or the tool
    definitions or documents a template demands before it renders anything (Phi-4-mini's
    template iterates ``tools`` whenever it is passed, even as None; Command-R's RAG template
    iterates ``documents``). ``covers``: the capabilities it cannot probe, since it passes their
    feature already."""

    suffix: str = ""
    tools: tuple = ()
    documents: tuple = ()
    describes: str = ""
    covers: frozenset = frozenset()
    typed: bool = False  # every string content sent as one typed text part

    def conversation(self, messages: list[dict], **fields: Any) -> Conversation:
        """``Conversation(messages, **fields)`` with the context's tools and documents where the
        probe passes none of its own."""
        if self.tools and fields.get("tools") is None:
            fields["tools"] = [dict(tool) for tool in self.tools]
        if self.documents and fields.get("documents") is None:
            fields["documents"] = [dict(document) for document in self.documents]
        conversation = Conversation(messages, **fields)
        return conversation.with_typed_text() if self.typed else conversation


NO_CONTEXT = _Context()
_TOOL_FEATURES = frozenset({"tools", "tool_calls", "parallel_tool_calls", "tool_responses", "tool_call_id"})
_CONTEXT_TOOLS = (_tool(TOOL_NAME),)
_CONTEXT_DOCUMENTS = ({"title": "Context title", "text": "Some context."},)
# Tried in order when a plain user turn fails; the first under which it renders is probed with.
CONTEXTS = (
    _Context(":with-tools", tools=_CONTEXT_TOOLS, describes="tool definitions", covers=_TOOL_FEATURES),
    _Context(":with-documents", documents=_CONTEXT_DOCUMENTS, describes="documents",
             covers=frozenset({"documents"})),
    _Context(":with-tools-and-documents", tools=_CONTEXT_TOOLS, documents=_CONTEXT_DOCUMENTS,
             describes="tool definitions and documents", covers=_TOOL_FEATURES | {"documents"}),
)
# For a template that renders typed text parts and not a string (vision models' templates): every
# probe again with its contents as parts, since a string probe says nothing about such a template.
TYPED_PARTS = _Context(":typed", typed=True, covers=frozenset({"typed_content"}))


def probe(render: Render, side: Render | None = None) -> Capabilities:
    """Probe a template through ``render`` (which caches, so probes shared with rules are free).
    ``side`` renders the probes of input no client sends (results whose id matches no call),
    whose spending a whole budget says nothing about the template's other renders; by default
    ``render``.

    When a plain user turn fails, every capability whose baseline fails is unknown; if the
    template renders once tool definitions or documents are passed (see ``_Context``), the
    probes run again with them, and each capability that pass can tell (one its context does not
    pass already) is read from it, with a note naming what was passed."""
    side = side or render
    readings, renders, plain = _probe_pass(render, side, NO_CONTEXT)
    if _failure(plain) is not None and not getattr(_failure(plain), "spent_budget", False):
        for context in CONTEXTS:
            if _failure(render(f"probe:user{context.suffix}", context.conversation([_user()]), True)) is not None:
                continue
            contexted, more, _ = _probe_pass(render, side, context)
            renders += more
            for name, value in list(readings.values.items()):
                if value is not None or name in context.covers or contexted.values.get(name) is None:
                    continue
                readings.values[name] = contexted.values[name]
                passed = f"probed with {context.describes} passed, without which a plain user turn fails"
                readings.facts[name] = "; ".join(part for part in (passed, contexted.facts.get(name)) if part)
                if name in contexted.failures:
                    readings.failures[name] = contexted.failures[name]
                else:
                    readings.failures.pop(name, None)
            break
    if readings.facts.get("typed_content", "").startswith(REQUIRES_TYPED_CONTENT):
        typed, more, _ = _probe_pass(render, side, TYPED_PARTS)
        renders += more
        for name, value in typed.values.items():
            if name in TYPED_PARTS.covers:
                continue
            readings.values[name] = value
            readings.facts[name] = "; ".join(part for part in ("probed with contents as typed text parts",
                                                                typed.facts.get(name)) if part)
            if name in typed.failures:
                readings.failures[name] = typed.failures[name]
            else:
                readings.failures.pop(name, None)
    values = readings.values
    if renders and all(_failure(rendering) is not None for rendering in renders):
        # Nothing rendered: one reason for every capability, each with its own probe's failure
        # (probes fail in different places), or the first one's.
        for name in [name for name, value in values.items() if value is None]:
            readings.unknown(name, "every probe render fails",
                             readings.probe_failures.get(name, _failure(renders[0])))
    return Capabilities(values=values, sources={name: "probed" for name in values}, facts=readings.facts,
                        failures=readings.failures)


def _probe_pass(render: Render, side: Render, context: _Context) -> tuple[_Readings, list[Any], Any]:
    """Every probe, each carrying ``context``: the readings, the renders, and the plain user
    turn's render (the baseline most probes are judged against)."""
    renders: list[Any] = []
    make = context.conversation

    def run(key: str, conversation: Conversation, add_generation_prompt: bool) -> Any:
        rendering = render(key + context.suffix, conversation, add_generation_prompt)
        renders.append(rendering)
        return rendering

    readings = _Readings()
    read, values, facts = readings.read, readings.values, readings.facts

    plain = run("probe:user", make([_user()]), True)
    with_system = run("probe:system", make([{"role": "system", "content": SYSTEM_NEEDLE}, _user()]), True)
    read("system", _has(with_system, SYSTEM_NEEDLE), with_system, plain, A_USER_TURN)
    if values["system"] is False and "system" not in facts:
        facts["system"] = "dropped"

    with_tools = run("probe:tools", make([_user()], tools=[_tool(TOOL_NAME)]), True)
    read("tools", _has(with_tools, TOOL_NAME), with_tools, plain, A_USER_TURN)

    call_object = [{ARGUMENT_NEEDLE: "print('Hello, World!')"}]
    as_object = _render_tool_calls(run, "probe:call-object", call_object, context=context)
    as_string = _render_tool_calls(run, "probe:call-string", [json.dumps(call_object[0])], context=context)
    tools_text = _text(with_tools)
    object_ok = _shows_arguments(_text(as_object), tools_text)
    string_ok = _shows_arguments(_text(as_string), tools_text)
    # The call render that counts: one showing the arguments, else one that rendered at all.
    if object_ok or string_ok:
        working = as_object if object_ok else as_string
    else:
        working = as_string if _failure(as_object) is not None and _failure(as_string) is None else as_object
    read("tool_calls", object_ok or string_ok, working, with_tools, WITH_TOOLS, depends_on="tools")
    if object_ok and not string_ok:
        facts["tool_calls"] = "arguments must be objects (a JSON string fails or is not shown)"
    elif string_ok and not object_ok:
        facts["tool_calls"] = "arguments must be JSON strings (an object fails or is not shown)"
    read("tool_responses", _has(working, RESPONSE_NEEDLE), working, with_tools, WITH_TOOLS, depends_on="tools")
    read("tool_call_id", _has(working, CALL_ID), working, with_tools, WITH_TOOLS, depends_on="tools")
    if values["tool_call_id"] is False and "tool_call_id" not in facts and _failure(working) is None:
        working_arguments = call_object if working is as_object else [json.dumps(call_object[0])]
        key = "probe:call-object" if working is as_object else "probe:call-string"
        if _links_results_by_id(run, lambda name, *rest: side(name + context.suffix, *rest), key,
                                working_arguments, context):
            values["tool_call_id"] = True
            facts["tool_call_id"] = "results are matched to their calls by id (the id itself is not printed)"

    # Each call carries its own value, which the tool definitions never hold: both values in the
    # output prove both calls rendered (the tools' names do not: a template that lists its tools,
    # or names each tool result, prints them without rendering any call).
    as_json = not object_ok and string_ok
    parallel = _render_tool_calls(run, "probe:parallel", [
        json.dumps({ARGUMENT_NEEDLE: value}) if as_json else {ARGUMENT_NEEDLE: value} for value in PARALLEL_NEEDLES],
        context=context)
    read("parallel_tool_calls", all(_has(parallel, value) for value in PARALLEL_NEEDLES), parallel, working,
         ONE_CALL, depends_on="tool_calls")

    documents = run("probe:documents", make([_user()], documents=[{"title": "Needle title", "text": DOCUMENT_NEEDLE}]),
                    True)
    read("documents", _has(documents, DOCUMENT_NEEDLE), documents, plain, A_USER_TURN)

    typed = run("probe:typed", make([{"role": "user", "content": [{"type": "text", "text": USER_NEEDLE}]}]), True)
    typed_text = _text(typed)
    # A string-only template prints the list's Python repr, which contains the needle too (only
    # a repr beyond the baseline's counts: tool definitions passed as context may print as one).
    repr_leaked = typed_text is not None and typed_text.count(PART_REPR) > (_text(plain) or "").count(PART_REPR)
    read("typed_content", typed_text is not None and USER_NEEDLE in typed_text and not repr_leaked,
         typed, plain, A_USER_TURN)
    if values["typed_content"] and not _has(plain, USER_NEEDLE):
        facts["typed_content"] = f"{REQUIRES_TYPED_CONTENT} (a plain string does not render)"
    elif repr_leaked and values["typed_content"] is False and "typed_content" not in facts:
        facts["typed_content"] = PARTS_AS_REPR
    elif values["typed_content"] is False and typed_text is not None and _has(plain, USER_NEEDLE):
        facts["typed_content"] = PARTS_DROPPED

    reasoning = run("probe:reasoning", make(
        [_user(), {"role": "assistant", "reasoning_content": REASONING_NEEDLE, "content": ASSISTANT_NEEDLE}],
        add_generation_prompt=False), False)
    exchange = run("probe:exchange", make(
        [_user(), {"role": "assistant", "content": ASSISTANT_NEEDLE}], add_generation_prompt=False), False)
    read("reasoning", _has(reasoning, REASONING_NEEDLE), reasoning, exchange, AN_EXCHANGE)

    unprompted = run("probe:user-no-prompt", make([_user()]), False)

    # The feature is the generation prompt: the render without it is the baseline.
    if _failure(plain) is None and _failure(unprompted) is not None:
        readings.unknown("generation_prompt", "the render without add_generation_prompt fails", _failure(unprompted))
    else:
        read("generation_prompt", _text(plain) is not None and _text(unprompted) is not None
             and _text(plain) != _text(unprompted), plain, unprompted, "the same turn without add_generation_prompt")

    # Clients send a turn of tool calls with null content (OpenAI's shape): the one place null
    # content is normal, so the fact is about that turn, and only where tool calls render.
    null_content = None
    if values.get("tool_calls") and _failure(as_object) is None:
        null_content = _render_tool_calls(run, "probe:call-null-content", call_object, content=None, context=context)
        if _failure(null_content) is not None:
            facts["content"] = "requires non-null content on tool-call turns"

    # The tag is the template's, not the input's: any probe with an assistant turn shows it, and
    # only when none renders is there nothing to tell from.
    answered = [rendering for rendering in (exchange, reasoning, as_object, as_string, parallel, null_content)
                if rendering is not None and _failure(rendering) is None]
    if answered:
        values["generation_tag"] = any(rendering.spans for rendering in answered)
    else:
        readings.unknown("generation_tag", "no probe with an assistant turn renders", _failure(exchange))
    return readings, renders, plain


def resolve(probed: Capabilities, template_text: str, config_values: Mapping[str, bool] | None = None) -> Capabilities:
    """Probed values overridden by the template's comment, then by the lint config.

    The config is the user's last word (as per-file-ignores are), so it overrides the comment.
    The probe's answers stay in ``probed``, so a contradicted declaration can be told.
    """
    values, sources = dict(probed.values), dict(probed.sources)
    declarations = read_declarations(template_text)
    for origin, declared in (("comment", declarations.values()), ("config", dict(config_values or {}))):
        for name, value in declared.items():
            values[name] = bool(value)
            sources[name] = origin
    return Capabilities(values=values, sources=sources, facts=dict(probed.facts), probed=dict(probed.values),
                        declarations=declarations, failures=dict(probed.failures))


# The note of a capability declared unsupported that the probe saw rendered (``contradicted``).
PROBE_DISAGREES = "the probe found it supported: the declaration skips checks the template can run"


# How much of a render error a note quotes: the error's first words say what failed.
NOTE_ERROR_LIMIT = 200


def capability_note(capabilities: Capabilities, name: str, locate: Callable[..., str] | None = None) -> str:
    """What probing saw about ``name`` beyond yes/no ("" when nothing), first of all that it
    disagrees with a declaration. A "raises" or "unknown: ..." fact is followed by the render
    error behind it, located by ``locate`` (``ChatTemplate.location``) when given. The
    null-content fact goes with tool calls, when the template may render them: an assistant turn
    holding only tool calls is where content is null."""
    note = capabilities.facts.get(name, "")
    failure = capabilities.failures.get(name)
    if note and failure is not None:
        note = f"{note}: {_failure_text(failure, locate)}"
    if name == "tool_calls" and "content" in capabilities.facts and capabilities.supports(name):
        note = "; ".join(part for part in (note, capabilities.facts["content"]) if part)
    if name in capabilities.contradicted():
        note = "; ".join(part for part in (PROBE_DISAGREES, note) if part)
    return note


def _failure_text(failure: Any, locate: Callable[..., str] | None) -> str:
    if locate is not None and getattr(failure, "line", None):
        failure = failure.placed(lambda line: locate(line, None))
    text = failure.describe() if hasattr(failure, "describe") else str(failure)
    return text if len(text) <= NOTE_ERROR_LIMIT else text[:NOTE_ERROR_LIMIT] + "..."


def capabilities_data(capabilities: Capabilities, not_evaluated: list[tuple[str, list[str]]] | None = None,
                      *, probing_stopped: bool = False, locate: Callable[[int, int], str] | None = None,
                      ) -> dict[str, Any]:
    """The capabilities as plain JSON data, keyed by name in report order.

    ``supported`` is true, false, or null when the probe could not tell (the table's ``?``; the
    note says why, "unknown: ..."). ``source`` is ``"probed"``, ``"comment"`` or ``"config"``;
    when probing stopped early (``probing_stopped``), a probed "no" or unknown may only mean the
    probe never ran, so its source is ``"unknown"``. ``declaration_problems`` lists what is wrong
    with the template's capability comments (``{line, column, message}``, in the template's own
    lines, plus ``location`` when ``locate`` (``ChatTemplate.location``) is given: the file, and
    the template's name when it is embedded in one, with that line and column, as lint's findings
    are located).
    """
    found = {}
    for name in CAPABILITY_NAMES:
        supported = None if capabilities.unknown(name) else capabilities.supports(name)
        source = capabilities.sources.get(name, "probed")
        if probing_stopped and source == "probed" and supported is not True:
            source = "unknown"
        found[name] = {"supported": supported, "source": source,
                       "note": capability_note(capabilities, name, locate) or None,
                       "description": DESCRIPTIONS[name]}
    return {
        "capabilities": found,
        "not_evaluated": [{"fixture": fixture, "needs": list(missing)} for fixture, missing in not_evaluated or ()],
        "declaration_problems": [
            {**dataclasses.asdict(problem), **({"location": locate(problem.line, problem.column)} if locate else {})}
            for problem in capabilities.declarations.problems
        ],
    }


def format_capabilities(capabilities: Capabilities, not_evaluated: list[tuple[str, list[str]]] | None = None,
                        locate: Callable[[int, int], str] | None = None) -> str:
    """The text ``templatekit capabilities SOURCE`` prints: one line per capability (``yes``,
    ``no``, or ``?`` when the probe could not tell), then the built-in fixtures that behavioural
    checks will skip, then what is wrong with the template's capability comments (located by
    ``locate``, else at the template's line:column; render errors in notes likewise)."""
    width = max(len(name) for name in CAPABILITY_NAMES)
    lines = []
    for name in CAPABILITY_NAMES:
        mark = "?  " if capabilities.unknown(name) else "yes" if capabilities.supports(name) else "no "
        source = capabilities.sources.get(name, "probed")
        note = capability_note(capabilities, name, locate)
        detail = f"  ({source})" if source != "probed" else ""
        lines.append(f"{name:<{width}}  {mark}  {DESCRIPTIONS[name]}{detail}{'  - ' + note if note else ''}")
    if not_evaluated:
        lines.append("")
        lines.append("not evaluated (fixtures needing a capability this template lacks):")
        for fixture, missing in not_evaluated:
            lines.append(f"  {fixture}: needs {', '.join(missing)}")
    problems = capabilities.declarations.problems
    if problems:
        lines.append("")
        lines.append("capability declaration problems (templatekit: capabilities comments):")
        for problem in problems:
            where = locate(problem.line, problem.column) if locate else f"{problem.line}:{problem.column}"
            lines.append(f"  {where}: {problem.message}")
    return "\n".join(lines)
