"""Render a chat template exactly as transformers' ``apply_chat_template(..., tokenize=False)``.

The steps, in transformers' order (``tokenization_utils_base.apply_chat_template`` then
``chat_template_utils.render_jinja_template``): refuse an empty conversation, drop None-valued
message keys, refuse ``continue_final_message`` with ``add_generation_prompt``, merge special
tokens under the user's kwargs, convert tools, check documents, rebuild everything from plain JSON
types, alias reasoning fields, tag the message to continue, render, and cut at the tag. Each
failure carries transformers' exact message, classified for the user (``RenderFailure.kind``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from . import guards
from .conversation import (
    REASONING_FIELDS,
    Conversation,
    alias_reasoning_fields,
    check_render_jinja_template_call,
    plain_template_data,
    split_apply_chat_template_kwargs,
    tool_schemas,
)
from .environment import (
    RAISED_BY_TEMPLATE,
    CompileBudgetExceeded,
    compile_template,
    compile_variant,
    compile_with_text_slots,
)
from .errors import BudgetExceeded, RenderFailure
from .guards import DEFAULT_BUDGET, Budget, RenderGuard

if TYPE_CHECKING:
    from .sources import ChatTemplate, TemplateSource

CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_TEMPLATE_FILENAME = "<template>"
# The names transformers passes explicitly; a kwarg with one of them collides in render().
_RENDER_ARGUMENTS = ("messages", "tools", "documents", "add_generation_prompt")


@dataclasses.dataclass
class Rendering:
    """The outcome of one render.

    ``text`` is the prompt (None when rendering failed), ``spans`` the ``(start, end)`` character
    spans of ``{% generation %}`` blocks in it, ``error`` the failure (None on success).
    """

    text: str | None
    spans: list[tuple[int, int]]
    error: RenderFailure | None
    template: Any
    conversation: Conversation
    add_generation_prompt: bool

    @property
    def ok(self) -> bool:
        return self.error is None

    def generation_texts(self) -> list[str]:
        """The text inside each ``{% generation %}`` span."""
        return [self.text[start:end] for start, end in self.spans] if self.text is not None else []


class _Failed(Exception):
    def __init__(self, failure: RenderFailure) -> None:
        self.failure = failure


def render_template(
    template: "ChatTemplate | str",
    conversation: Conversation,
    *,
    special_tokens: dict[str, str] | None = None,
    add_generation_prompt: bool | None = None,
    now: datetime | None = None,
    budget: Budget = DEFAULT_BUDGET,
    allow_empty: bool = False,
    omit: tuple[str, ...] = (),
    trim_blocks: bool = True,
    lstrip_blocks: bool = True,
    text_slots: bool = False,
) -> Rendering:
    """Render ``template`` (a ``ChatTemplate`` or template text) with ``conversation``.

    ``add_generation_prompt=None`` takes the conversation's own setting. ``now`` pins
    ``strftime_now``. ``allow_empty`` skips transformers' refusal of an empty message list (the
    template itself then decides what an empty conversation renders as). ``omit`` names variables
    transformers always passes (``tools``, ...) to leave undefined, as other renderers do.
    ``trim_blocks``/``lstrip_blocks`` other than transformers' (both on) compile the template in
    ``environment.variant_environment``, to see what engines with other settings print.
    ``text_slots`` renders those settings through the template's one text-slotted compile
    (``environment.compile_with_text_slots``) where it has one: TK612's shortcut, whose caller
    checks it against the real compile.
    """
    text = template if isinstance(template, str) else template.text
    generation_prompt = conversation.wants_generation_prompt() if add_generation_prompt is None else add_generation_prompt
    spans: list[tuple[int, int]] = []
    try:
        variables, continued = _prepare(text, conversation, special_tokens or {}, generation_prompt, allow_empty)
        for name in omit:
            variables.pop(name, None)
        slotted = compile_with_text_slots(text) if text_slots and len(text) <= budget.max_template else None
        slot_variables = slotted.variables(trim_blocks, lstrip_blocks) if slotted is not None else None
        if slot_variables is not None:
            compiled = slotted.template
            variables = {**variables, **slot_variables}
        else:
            compiled = _compile(template, text, budget, trim_blocks, lstrip_blocks)
        output, spans = _run(template, compiled, variables, budget, now)
        if continued is not None:
            output = _cut_at_continue_tag(output, continued)
    except _Failed as failed:
        return Rendering(None, spans, failed.failure, template, conversation, bool(generation_prompt))
    return Rendering(output, spans, None, template, conversation, bool(generation_prompt))


class RenderRun:
    """The renders of one command over several conversations (``render``, ``diff``).

    A template whose render spent its whole time or output budget (an endless loop) is not
    rendered again in the run: every later render would spend the budget too, and 18 fixtures of
    such a template kept ``templatekit render`` silent for 36 s before it printed the same failure
    18 times. Benign templates never come near a budget, so their renders are unchanged.
    """

    def __init__(self) -> None:
        self._spent: dict[str, Rendering] = {}

    def render(self, template: "ChatTemplate | str", conversation: Conversation, **options: Any) -> Rendering:
        """``render_template(template, conversation, **options)``, or the failure it would give
        without rendering when an earlier render of the same template spent a whole budget."""
        text = template if isinstance(template, str) else template.text
        earlier = self._spent.get(text)
        if earlier is None:
            rendering = render_template(template, conversation, **options)
            if rendering.error is not None and rendering.error.spent_budget:
                self._spent[text] = rendering
            return rendering
        spent = earlier.error
        name = earlier.conversation.name or "the first conversation"
        failure = RenderFailure("budget", f"not rendered: the render of '{name}' spent its whole budget, and "
                                          f"every render of this template would ({spent.message})",
                                exception_type=spent.exception_type, location=spent.location, line=spent.line)
        prompt = options.get("add_generation_prompt")
        return Rendering(None, [], failure, template, conversation,
                         bool(conversation.wants_generation_prompt() if prompt is None else prompt))


def _input_failure(exc: BaseException) -> _Failed:
    return _Failed(RenderFailure("input", str(exc), exception_type=type(exc).__name__))


def _prepare(
    text: str,
    conversation: Conversation,
    special_tokens: dict[str, str],
    add_generation_prompt: Any,
    allow_empty: bool,
) -> tuple[dict[str, Any], str | None]:
    """The template's variables, built as transformers builds them; and the text being continued."""
    messages = conversation.messages
    continue_final = conversation.continue_final_message
    try:
        # kwargs named like apply_chat_template's own parameters are its arguments, not variables.
        arguments, kwargs = split_apply_chat_template_kwargs(conversation.kwargs)
        if arguments.get("return_assistant_tokens_mask"):
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        if not messages and not allow_empty:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        messages = [{key: value for key, value in message.items() if value is not None} for message in messages]
        if continue_final and add_generation_prompt:
            raise ValueError(
                "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message "
                "when you want the model to continue the final message, and add_generation_prompt when you want "
                "to add a header that will prompt it to start a new assistant message instead."
            )
        if arguments.get("sanitize_control_tokens"):
            raise ValueError(
                "`sanitize_control_tokens=True` requires `tokenize=True` and is not compatible with "
                "`return_assistant_tokens_mask=True`."
            )
        template_kwargs = {**special_tokens, **kwargs}
        check_render_jinja_template_call(template_kwargs)
        tools = tool_schemas(conversation.tools)
        documents = conversation.documents
        if documents is not None:
            for document in documents:
                if not isinstance(document, dict):
                    raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
        tools = plain_template_data(tools)
        documents = plain_template_data(documents)
        template_kwargs = plain_template_data(template_kwargs)
        chat = plain_template_data(messages)
        for message in chat:
            if not isinstance(message, dict):
                raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}.")
        chat = alias_reasoning_fields(chat)
        continued = _tag_final_message(chat, text, continue_final) if continue_final else None
        for key in _RENDER_ARGUMENTS:
            if key in template_kwargs:
                raise TypeError(
                    f"jinja2.environment.Template.render() got multiple values for keyword argument '{key}'"
                )
    except _Failed:
        raise
    except Exception as exc:  # transformers raises these before rendering; report them as input errors
        raise _input_failure(exc) from None
    variables = {
        "messages": chat,
        "tools": tools,
        "documents": documents,
        "add_generation_prompt": add_generation_prompt,
        **template_kwargs,
    }
    return variables, continued


def _tag_final_message(chat: list[dict], template_text: str, continue_final: bool | str) -> str:
    """Append transformers' continuation tag to the field being continued; returns its text."""
    if not chat:
        raise ValueError("continue_final_message is set but the conversation is empty!")
    field = continue_final if isinstance(continue_final, str) else "content"
    final = chat[-1].get(field)
    if final is None:
        raise ValueError(f'continue_final_message is set but the final message has no "{field}" to continue!')
    fields = [field]
    if field in REASONING_FIELDS:
        fields = [name for name in REASONING_FIELDS if chat[-1].get(name) == final]
    if not any(name in template_text for name in fields):
        raise ValueError(
            f'continue_final_message is set to "{field}" but this is not an accepted field in the chat_template'
        )
    if isinstance(final, (list, tuple)):
        for block in reversed(final):
            if "text" in block:
                final = block["text"]
                block["text"] = block["text"] + CONTINUE_TAG
                break
        else:
            raise ValueError(
                "continue_final_message is set but we could not find any text to continue in the final message!"
            )
    else:
        for name in fields:
            chat[-1][name] = chat[-1][name] + CONTINUE_TAG
    return final


def prepare_variables(
    template_text: str,
    conversation: Conversation,
    *,
    special_tokens: dict[str, str] | None = None,
    add_generation_prompt: bool | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The variables transformers passes to the template for ``conversation`` (for handing the
    same context to another engine), and the text being continued (None unless continuing).
    Raises ``RenderFailure`` (kind "input") where transformers rejects the inputs."""
    generation_prompt = conversation.wants_generation_prompt() if add_generation_prompt is None else add_generation_prompt
    try:
        return _prepare(template_text, conversation, special_tokens or {}, generation_prompt, False)
    except _Failed as failed:
        raise failed.failure from None


def cut_at_continue_tag(rendered: str, continued: Any) -> str:
    """Cut another engine's output where the continued message ends, as transformers cuts its
    own; raises ``RenderFailure`` when the continued text is not in ``rendered``."""
    try:
        return _cut_at_continue_tag(rendered, continued)
    except _Failed as failed:
        raise failed.failure from None


def _cut_at_continue_tag(rendered: str, final: Any) -> str:
    """Cut the render where the continued message ends, exactly as transformers does."""
    try:
        missing = final.strip() not in rendered or CONTINUE_TAG.strip() not in rendered
    except Exception as exc:
        raise _input_failure(exc) from None
    if missing:
        raise _input_failure(
            ValueError(
                "continue_final_message is set but the final message does not appear in the chat after "
                "applying the chat template! This can happen if the chat template deletes portions of "
                "the final message. Please verify the chat template and final message in your chat to "
                "ensure they are compatible."
                f"Final message to continue: {final.strip()}\nRendered chat:\n{rendered}"
            )
        )
    position = rendered.rindex(CONTINUE_TAG.strip())
    if rendered[position : position + len(CONTINUE_TAG)] == CONTINUE_TAG:
        return rendered[:position]
    return rendered[:position].rstrip()


def compile_failure(template: "ChatTemplate | str", budget: Budget | None = None) -> RenderFailure | None:
    """Why ``template`` cannot be compiled (a syntax error, nesting too deep for Jinja's
    compiler, a template over the size budget), or None when it compiles."""
    text = template if isinstance(template, str) else template.text
    try:
        _compile(template, text, budget or DEFAULT_BUDGET)
    except _Failed as failed:
        return failed.failure
    return None


def _compile(template: Any, text: str, budget: Budget, trim_blocks: bool = True,
             lstrip_blocks: bool = True) -> jinja2.Template:
    if len(text) > budget.max_template:
        raise _Failed(
            RenderFailure(
                "budget",
                f"template of {len(text):,} characters exceeds the template size budget of {budget.max_template:,}",
                location=_location(template, None),
            )
        )
    try:
        if trim_blocks and lstrip_blocks:
            return compile_template(text)
        return compile_variant(text, trim_blocks, lstrip_blocks)
    except jinja2.TemplateSyntaxError as exc:
        raise _Failed(
            RenderFailure("syntax", str(exc.message or exc), exception_type=type(exc).__name__,
                          location=_location(template, exc.lineno), line=exc.lineno)
        ) from None
    except CompileBudgetExceeded as exc:
        raise _Failed(RenderFailure("budget", str(exc), exception_type=type(exc).__name__,
                                    location=_location(template, None))) from None
    except (RecursionError, MemoryError, SyntaxError) as exc:
        raise _Failed(
            RenderFailure("budget", f"template is nested too deeply to compile ({type(exc).__name__}: {exc})",
                          exception_type=type(exc).__name__, location=_location(template, None))
        ) from None


def _run(
    template: Any, compiled: jinja2.Template, variables: dict, budget: Budget, now: datetime | None
) -> tuple[str, list[tuple[int, int]]]:
    # Only a budget without a fixed time scales with the conversation (lint's renders have one).
    parts, characters = _conversation_size(variables) if budget.seconds is None else (0, 0)
    guard = RenderGuard(budget, parts=parts, characters=characters)
    guard.now = now
    token = guards.activate(guard)
    chunks: list[str] = []
    limit = budget.max_output
    try:
        for chunk in compiled.generate(**variables):
            chunks.append(chunk)
            # Kept current chunk by chunk: {% generation %} spans start at this length.
            guard.output_length += len(chunk)
            if guard.output_length > limit:
                raise guard.output_exceeded()
            if len(chunk) > guard.small_text:
                guard.note_allocation(len(chunk))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a classified RenderFailure
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _Failed(_classify(template, exc)) from None
    finally:
        guards.deactivate(token)
    return "".join(chunks), guard.generation_spans


def _conversation_size(variables: dict) -> tuple[int, int]:
    """How many messages, tools and documents the template gets, and the characters of text in
    their fields and content parts: what the default time budget scales with."""
    parts = characters = 0
    for name in ("messages", "tools", "documents"):
        entries = variables.get(name)
        if not isinstance(entries, (list, tuple)):
            continue
        parts += len(entries)
        for entry in entries:
            for field in entry.values() if isinstance(entry, dict) else ():
                if isinstance(field, str):
                    characters += len(field)
                elif isinstance(field, list):
                    characters += sum(len(text) for part in field if isinstance(part, dict)
                                      for text in part.values() if isinstance(text, str))
    return parts, characters


def _classify(template: Any, exc: BaseException) -> RenderFailure:
    line = _template_line(exc)
    location = _location(template, line)
    name = type(exc).__name__
    if getattr(exc, RAISED_BY_TEMPLATE, False):
        return RenderFailure("raised", str(exc.message if exc.message is not None else exc), exception_type=name,
                             location=location, line=line)
    if isinstance(exc, BudgetExceeded):
        return RenderFailure("budget", str(exc), exception_type=name, location=location, line=line)
    if isinstance(exc, RecursionError):
        return RenderFailure("budget", "recursion too deep (a macro or recursive loop that never ends?)",
                             exception_type=name, location=location, line=line)
    if isinstance(exc, MemoryError):
        return RenderFailure("budget", "out of memory while rendering", exception_type=name,
                             location=location, line=line)
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return RenderFailure("security", str(exc), exception_type=name, location=location, line=line)
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return RenderFailure("syntax", str(exc.message or exc), exception_type=name, location=location,
                             line=exc.lineno)
    return RenderFailure("error", str(exc), exception_type=name, location=location, line=line)


def _template_line(exc: BaseException) -> int | None:
    """The template line of the innermost template frame in the (Jinja-rewritten) traceback."""
    line = None
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _location(template: Any, line: int | None) -> str | None:
    if hasattr(template, "location"):
        return template.location(line)
    return f"<template>:{line}" if line else None


# ---------------------------------------------------------------------------------------------
# the public entry point


def render(
    source: "str | Path | TemplateSource | ChatTemplate",
    messages: list | None = None,
    *,
    conversation: Conversation | None = None,
    tools: list | None = None,
    documents: list | None = None,
    add_generation_prompt: bool | None = None,
    continue_final_message: bool | str = False,
    template_name: str | None = None,
    special_tokens: dict[str, str] | None = None,
    now: datetime | None = None,
    budget: Budget | None = None,
    **kwargs: Any,
) -> Rendering:
    """Render a chat template as ``tokenizer.apply_chat_template(..., tokenize=False)`` would.

    ``source`` is a path (a ``.jinja`` file, tokenizer_config.json, chat_template.json, a model
    directory or a GGUF file), a loaded ``TemplateSource`` or a ``ChatTemplate``; use
    ``templatekit.template_from_text`` for a template held in a string. Give either ``messages``
    (plus ``tools``, ``documents``, ``add_generation_prompt``, ``continue_final_message`` and extra
    template variables as keyword arguments) or a whole ``conversation``. The source's special
    tokens are passed like transformers passes them; ``special_tokens`` adds or overrides some.

    The one default that differs from ``apply_chat_template``: ``add_generation_prompt=None`` (the
    default here; the conversation's own setting when one is given) turns the generation prompt
    on unless the conversation ends with an assistant message or continues its final message, as
    transformers' text-generation pipeline, the CLI and fixture files decide it.
    ``apply_chat_template`` defaults to False: pass ``add_generation_prompt=False`` for its output.

    Extra keyword arguments are what ``apply_chat_template`` gets as ``**kwargs`` besides
    ``tools``, ``documents``, ``chat_template``, ``add_generation_prompt``,
    ``continue_final_message`` and ``tokenize=False``, which templatekit passes itself (a kwarg with
    one of those names fails as a second value would). One named like a tokenizing parameter
    (``padding``, ``max_length``, ``return_dict``, ...) is taken by transformers and never reaches
    the template.

    Returns a ``Rendering``; a template that fails does not raise, its ``error`` says why. Bad
    paths raise ``templatekit.InputError``.

    >>> import templatekit
    >>> template = templatekit.template_from_text(
    ...     "{% for m in messages %}{{ m.role }}: {{ m.content }}\\n{% endfor %}"
    ...     "{% if add_generation_prompt %}assistant:{% endif %}")
    >>> templatekit.render(template, [{"role": "user", "content": "Hi"}]).text
    'user: Hi\\nassistant:'
    >>> templatekit.render(template, [{"role": "user", "content": "Hi"}], add_generation_prompt=False).text
    'user: Hi\\n'
    >>> templatekit.render(template, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]).text
    'user: Hi\\nassistant: Hello\\n'
    """
    from .sources import TemplateSource, load_source

    if conversation is None:
        if messages is None:
            raise TypeError("render() needs messages or a conversation")
        conversation = Conversation(
            messages=list(messages), tools=tools, documents=documents,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            kwargs=dict(kwargs),
        )
    if isinstance(source, (str, Path)):
        source = load_source(source)
    tokens: dict[str, str] = {}
    if isinstance(source, TemplateSource):
        tokens.update(source.special_tokens)
        template = source.select(template_name, conversation.tools)
    else:
        template = source
    tokens.update(special_tokens or {})
    return render_template(template, conversation, special_tokens=tokens, now=now, budget=budget or DEFAULT_BUDGET)
