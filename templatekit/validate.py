"""Prove on the model itself that a chat template makes it answer as the assistant and stop.

A template can pass every lint and still make the model continue the user's message, answer as
the user, or never stop. ``validate`` closes that loop in two stages:

1. Structural checks, tokenizer only (milliseconds): the generation prompt followed by a reply is
   a prefix of the conversation holding that reply, in text and in tokens (implicit generation
   prompts, as in Mistral's formats, pass); the token after an assistant message is an
   end-of-turn id (``generation_config.eos_token_id`` ∪ the tokenizer's eos); role markers are
   single tokens of the vocabulary; the prompt does not start with two BOS tokens.
2. One batched greedy ``generate`` (left padding) over the fixture conversations and a built-in
   set of short-answer prompts. Per prompt: the reply with special tokens visible, whether and
   where it stopped, the probability that the first generated token is a turn token (end of turn,
   BOS, the template's role-header tokens), turn markers written inside the reply, and the role
   margin: how much likelier the reply's first tokens are after the generation prompt than at the
   start of the user's next turn (one scoring pass over the conversation closed and the
   template's user header opened).

Measured on SmolLM2-135M-Instruct (its own template, ChatML variants, Llama 3 headers, the broken
variants in tests/test_validate.py):

- P(first token is a turn token) is about 1e-5 with the right template, and at least 0.1 when the
  generation prompt is missing (the model writes the assistant header itself) or when the
  template's format makes the model end its turn at once (Mistral's ``[INST]``). It stays low,
  1e-5 to 3e-3, when foreign markers are split into plain-text pieces (Llama 3 headers): the
  model then reads them as text, does not stop at once, and often asks the user's question back.
- The role margin catches that case and a generation prompt that opens a user turn: its median
  over a run is 0.28 to 0.42 nats per token with ChatML templates, -0.03 with Llama 3 headers and
  0 (within rounding) when the generation prompt is the user header. Single replies are noisier (0.05 to
  1.2 with ChatML, up to 0.21 with Llama 3 headers), so the run's median decides.
- A missing end-of-turn token does not show in behaviour on such a model: only the structural
  checks catch it.

A template that does not compile is an input error found before the model loads; a prompt the
template cannot render fails without generating (only successful renders reach the tokenizer).

The prompt is tokenized as ``apply_chat_template(..., tokenize=True)`` does: the text rendered
with the tokenizer's ``special_tokens_map`` as template variables, then encoded with
``add_special_tokens=False`` (the template writes its own BOS).
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

from .conversation import Conversation
from .errors import InputError, RenderFailure
from .models import (
    LoadedModel,
    ProgressCallback,
    _no_progress,
    load_model,
    locate_model,
    require_validate_extra,
)
from .rendering import Rendering, compile_failure, render_template
from .sources import TemplateSource, load_source
from .visible import make_visible, special_token_pattern

SCHEMA_VERSION = 1

DEFAULT_MAX_NEW_TOKENS = 48
DEFAULT_MAX_TURN_PROBABILITY = 0.01
DEFAULT_MIN_ANSWERED_FRACTION = 0.5
DEFAULT_MIN_ROLE_MARGIN = 0.05
# Reply tokens the role margin reads: whose voice a reply is in shows in its first tokens; later
# ones follow from the reply's own words in either context and pull every margin towards 0.
ROLE_WINDOW = 8
# How much of the rendered prompt the report shows: the generation prompt and a little before it.
PROMPT_TAIL_CHARACTERS = 60
# The reply every structural check appends as the assistant's message.
STRUCTURAL_REPLY = "Paris is the capital of France."

PASS, FAIL, WARN = "pass", "fail", "warn"

# Short questions a chat model answers in a few tokens and then ends its turn: the stop signal is
# only meaningful when an answer can finish within the token budget.
PROBES: tuple[tuple[str, str], ...] = (
    ("probe-arithmetic", "What is 2 + 2? Reply with just the number."),
    ("probe-capital", "What is the capital of France? Answer in one word."),
    ("probe-greeting", "Say hello."),
    ("probe-yes-no", "Is the sun a star? Answer yes or no."),
    ("probe-color", "Name one primary color."),
    ("probe-weekday", "Which day of the week comes after Monday?"),
    ("probe-legs", "How many legs does a cat have?"),
    ("probe-synonym", "Give one synonym for the word 'happy'."),
)

# Reasoning tokens open the assistant's turn in reasoning models; they are never turn markers.
_REASONING_MARKER = re.compile(r"think|thought|reason", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When the behavioural check fails.

    ``max_turn_probability``: a prompt fails when P(first generated token is a turn token) is at
    least this. ``min_answered_fraction``: the run fails when fewer prompts than this fraction give
    a non-empty answer that ends with an end-of-turn token within ``max_new_tokens``.
    ``min_role_margin``: the run fails when the median role margin of its replies (see
    ``PromptResult``) is below this; the prompts below it then fail too.
    """

    max_turn_probability: float = DEFAULT_MAX_TURN_PROBABILITY
    min_answered_fraction: float = DEFAULT_MIN_ANSWERED_FRACTION
    min_role_margin: float = DEFAULT_MIN_ROLE_MARGIN

    def __post_init__(self) -> None:
        if not 0 < self.max_turn_probability <= 1:
            raise InputError(None, f"--max-turn-probability must be in (0, 1], got {self.max_turn_probability}")
        if not 0 <= self.min_answered_fraction <= 1:
            raise InputError(None, f"--min-answered must be in [0, 1], got {self.min_answered_fraction}")
        if not math.isfinite(self.min_role_margin):
            raise InputError(None, f"--min-role-margin must be a finite number, got {self.min_role_margin}")


@dataclasses.dataclass
class StructuralCheck:
    """One tokenizer-only check. ``status`` is pass, fail or warn; ``fixtures`` names where it failed."""

    name: str
    status: str
    message: str
    fixtures: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PromptResult:
    """One generation: what the model wrote after the rendered prompt, and the verdict.

    ``reply`` keeps special tokens (up to and including the end-of-turn token); ``answer`` is the
    reply's text without special tokens or reasoning. ``stop_index`` is the position of the
    end-of-turn token among the generated tokens (None when the model did not stop).
    ``role_margin`` is how much more likely the reply's first ``ROLE_WINDOW`` tokens are as the
    assistant's turn than as the user's next one, in mean nats per token (None when there is no
    reply or no user header to compare with). A prompt the template could not render has ``render_error`` set, no
    generation, and fails.
    """

    name: str
    kind: str
    prompt: str
    prompt_tokens: int
    reply: str
    reply_token_ids: list[int]
    answer: str
    stopped: bool
    stop_index: int | None
    first_token: str
    turn_probability: float | None
    markers: list[str]
    reasoning: bool
    verdict: str
    reasons: list[str]
    role_margin: float | None = None
    render_error: str | None = None

    @property
    def answered(self) -> bool:
        return self.stopped and bool(self.answer.strip())

    @property
    def generated(self) -> bool:
        return self.render_error is None

    def prompt_tail(self, characters: int = PROMPT_TAIL_CHARACTERS) -> str:
        return ("…" if len(self.prompt) > characters else "") + self.prompt[-characters:]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prompt_tail"] = self.prompt_tail()
        data["answered"] = self.answered
        return data


@dataclasses.dataclass
class SkippedConversation:
    name: str
    reason: str


@dataclasses.dataclass
class ValidationReport:
    """Everything ``templatekit validate`` found; ``passed`` is the verdict, ``reasons`` why not."""

    model: str
    template: str
    device: str
    dtype: str
    load_seconds: float
    loaded_from: str
    generate_seconds: float
    max_new_tokens: int
    thresholds: Thresholds
    special_tokens: list[str]
    structural: list[StructuralCheck]
    prompts: list[PromptResult]
    skipped: list[SkippedConversation]
    reasons: list[str]
    role_margin: float | None = None

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def answered_fraction(self) -> float:
        """Of the prompts the model generated after (a prompt the template could not render has
        failed already), the fraction answered and stopped; a reply still thinking at the limit
        is left out."""
        counted = [prompt for prompt in self.prompts if prompt.generated and not _still_reasoning(prompt)]
        return sum(prompt.answered for prompt in counted) / len(counted) if counted else 0.0

    def summary(self) -> str:
        failed_prompts = sum(prompt.verdict == FAIL for prompt in self.prompts)
        failed_checks = sum(check.status == FAIL for check in self.structural)
        answered = sum(prompt.answered for prompt in self.prompts)
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict}: {len(self.prompts)} prompts, {failed_prompts} failed, {answered} answered and stopped "
                f"({self.answered_fraction:.0%}); {len(self.structural) - failed_checks} of "
                f"{len(self.structural)} structural checks passed")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "template": self.template,
            "device": self.device,
            "dtype": self.dtype,
            "load": {"seconds": round(self.load_seconds, 3), "from": self.loaded_from},
            "generate_seconds": round(self.generate_seconds, 3),
            "max_new_tokens": self.max_new_tokens,
            "thresholds": dataclasses.asdict(self.thresholds),
            "passed": self.passed,
            "reasons": self.reasons,
            "answered_fraction": round(self.answered_fraction, 4),
            "role_margin": None if self.role_margin is None else round(self.role_margin, 4),
            "summary": self.summary(),
            "structural": [check.to_json() for check in self.structural],
            "prompts": [prompt.to_json() for prompt in self.prompts],
            "skipped": [dataclasses.asdict(item) for item in self.skipped],
        }


# ---------------------------------------------------------------------------------------------
# the entry point


def validate(
    model: str | Path | LoadedModel,
    *,
    template: str | Path | TemplateSource | None = None,
    template_name: str | None = None,
    fixtures: list[Conversation] | None = None,
    probes: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    thresholds: Thresholds | None = None,
    batch_size: int | None = None,
    cache_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> ValidationReport:
    """Validate ``template`` (default: the model's own) against ``model``'s tokenizer and weights.

    ``model`` is a model directory, a GGUF file, a Hub id, or an already loaded model.
    ``fixtures`` are the conversations to generate after (default: the built-in fixtures that end
    with a turn the assistant answers and whose requirements the template meets); ``probes`` adds
    the built-in short-answer prompts. ``batch_size`` splits the generation (default: one batch).
    Raises ``InputError`` for unusable input, a template that does not compile among it (before
    the model loads); a template that fails, renders that raise included, is a report with
    ``passed`` False.
    """
    require_validate_extra()
    progress = progress or _no_progress
    if max_new_tokens < 1:
        raise InputError(None, f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if batch_size is not None and batch_size < 1:
        raise InputError(None, f"--batch-size must be at least 1, got {batch_size}")
    thresholds = thresholds or Thresholds()
    if isinstance(model, LoadedModel):
        loaded = model
        source = _template_source(template, loaded.location)
        refuse_uncompilable(source, template_name)
    else:
        location = locate_model(model)
        # The template is read and compiled before the model loads, so a bad one costs no loading time.
        source = _template_source(template, location)
        refuse_uncompilable(source, template_name)
        loaded = load_model(location, device=device, dtype=dtype, cache_dir=cache_dir, progress=progress)
    session = _Session(loaded, source, template_name)
    entries, skipped = session.conversations(fixtures, probes)
    if not entries:
        raise InputError(source.path, "no conversation to validate with: every fixture was skipped ("
                         + "; ".join(f"{item.name}: {item.reason}" for item in skipped) + ")")
    rendered = [conversation for conversation, rendering in entries if rendering.ok]
    structural = session.structural_checks(rendered) if rendered else []
    started = time.perf_counter()
    prompts = session.generate(entries, max_new_tokens, thresholds, batch_size, progress)
    generate_seconds = time.perf_counter() - started
    role_margin = judge_roles(prompts, thresholds)
    report = ValidationReport(
        model=loaded.location.label, template=session.template_label, device=loaded.device, dtype=loaded.dtype,
        load_seconds=loaded.load_seconds, loaded_from=loaded.loaded_from, generate_seconds=generate_seconds,
        max_new_tokens=max_new_tokens, thresholds=thresholds, special_tokens=sorted(session.special_strings),
        structural=structural, prompts=prompts, skipped=skipped, reasons=[], role_margin=role_margin,
    )
    report.reasons.extend(_verdict_reasons(report))
    return report


def _template_source(template: Any, location: Any) -> TemplateSource:
    if isinstance(template, TemplateSource):
        return template
    if template is not None:
        return load_source(template)
    try:
        return load_source(location.path)
    except InputError as error:
        # The error's own location stays: it names the file (and field) that is wrong.
        raise InputError(error.location or location.spec, f"{error.problem}; give a template with --template") from None


def refuse_uncompilable(source: TemplateSource, template_name: str | None) -> None:
    """Raise ``InputError`` naming the file when a template validate would render does not compile.

    Nothing can be generated after a template that does not parse, so this is bad input, found
    before any model loads; a template that compiles but raises is judged per prompt instead.
    """
    chosen = [source.select(template_name, None)]
    with_tools = source.select(template_name, [])
    if with_tools is not chosen[0]:
        chosen.append(with_tools)
    for template in chosen:
        failure = compile_failure(template)
        if failure is not None:
            # The failure without its location: InputError puts the file first itself.
            problem = failure.describe_unplaced()
            raise InputError(failure.location or template.location(),
                             f"the template does not compile, so nothing can be generated: {problem}")


def judge_roles(prompts: list[PromptResult], thresholds: Thresholds) -> float | None:
    """The median role margin of ``prompts`` (None when none was measured); when it is below the
    threshold, each prompt below it fails.

    One reply's margin is noisy (on SmolLM2-135M with right templates single replies go down to
    0.05, with Llama 3 markers single replies reach 0.21), the median over a run is not (0.28 and
    up against -0.03), so the run decides and the prompts then show which replies say so.
    """
    margins = [prompt.role_margin for prompt in prompts if prompt.role_margin is not None]
    if not margins:
        return None
    median = statistics.median(margins)
    if median < thresholds.min_role_margin:
        for prompt in prompts:
            if prompt.role_margin is not None and prompt.role_margin < thresholds.min_role_margin:
                prompt.verdict = FAIL
                prompt.reasons.insert(0, f"the model would write this reply as readily in the user's next turn "
                                         f"(role margin {prompt.role_margin:.2f} < {thresholds.min_role_margin:g})")
    return median


def _verdict_reasons(report: ValidationReport) -> list[str]:
    reasons = [f"structural check {check.name} failed: {check.message}" for check in report.structural
               if check.status == FAIL]
    if report.role_margin is not None and report.role_margin < report.thresholds.min_role_margin:
        reasons.append(f"the replies are about as likely as the user's next message as they are as the assistant's "
                       f"(median role margin {report.role_margin:.2f} < {report.thresholds.min_role_margin:g} nats "
                       f"per token): the generation prompt does not put the model in the assistant's turn")
    unrendered = [prompt for prompt in report.prompts if not prompt.generated]
    if unrendered:
        names = ", ".join(prompt.name for prompt in unrendered[:5]) + (" …" if len(unrendered) > 5 else "")
        reasons.append(f"the template cannot render {len(unrendered)} of {len(report.prompts)} prompts ({names}) "
                       f"as a prompt to generate from: {unrendered[0].render_error}")
    failed = [prompt for prompt in report.prompts if prompt.verdict == FAIL and prompt.generated]
    if failed:
        names = ", ".join(prompt.name for prompt in failed[:5]) + (" …" if len(failed) > 5 else "")
        reasons.append(f"{len(failed)} of {len(report.prompts)} prompts failed ({names})")
    fraction = report.answered_fraction
    if any(prompt.generated for prompt in report.prompts) and fraction < report.thresholds.min_answered_fraction:
        unfinished = sum(1 for prompt in report.prompts if not prompt.stopped and not prompt.markers)
        hint = (f"; {unfinished} were still writing a plain answer at the limit, so a larger --max-new-tokens may "
                f"let them finish" if unfinished else "")
        reasons.append(f"only {fraction:.0%} of prompts gave a non-empty answer ending with end-of-turn within "
                       f"{report.max_new_tokens} tokens (need {report.thresholds.min_answered_fraction:.0%}){hint}")
    return reasons


def _still_reasoning(prompt: PromptResult) -> bool:
    """A reasoning reply cut by the token limit before its thinking ended says nothing about stopping."""
    return prompt.reasoning and not prompt.stopped


# ---------------------------------------------------------------------------------------------
# one model + one template


class _Session:
    """The model, its tokenizer and the template being validated, with what both share."""

    def __init__(self, loaded: LoadedModel, source: TemplateSource, template_name: str | None) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.source = source
        self.template_name = template_name
        # apply_chat_template passes the tokenizer's special_tokens_map; so does every render here.
        self.special_tokens = {key: value for key, value in dict(self.tokenizer.special_tokens_map).items()
                               if isinstance(value, str)}
        self.eos_ids = loaded.eos_token_ids
        self.bos_id = self.tokenizer.bos_token_id
        self.special_strings = self._special_strings()
        self._marker_pattern = special_token_pattern(self.special_strings)
        self._wrappers: dict[str, Any] = {}
        self.template_label = source.select(template_name, None).location()

    def _special_strings(self) -> set[str]:
        strings = set(getattr(self.tokenizer, "all_special_tokens", []) or [])
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        strings.update(token.content for token in decoder.values() if getattr(token, "special", False))
        return {text for text in strings if text}

    # -- conversations ------------------------------------------------------------------------
    def conversations(self, fixtures: list[Conversation] | None,
                      probes: bool) -> tuple[list[tuple[Conversation, Rendering]], list[SkippedConversation]]:
        """The conversations to report on, each with its prompt rendering, and those skipped and why.

        A rendering that failed stays in the list (the prompt fails, nothing is generated) for a
        conversation the user chose and for the probes, which every chat template must render. A
        built-in fixture the template cannot render is skipped, as one needing a feature it lacks
        is, unless no conversation renders at all: a template that renders nothing is broken.
        """
        explicit = fixtures is not None
        candidates = list(fixtures) if explicit else _default_fixtures()
        entries: list[tuple[Conversation, Rendering]] = []
        skipped: list[SkippedConversation] = []
        unrenderable: list[tuple[Conversation, Rendering, SkippedConversation]] = []
        missing = self._missing_capabilities() if not explicit else (lambda requires: [])
        for conversation in candidates:
            name = conversation.name or "conversation"
            if conversation.continue_final_message or not conversation.wants_generation_prompt():
                skipped.append(SkippedConversation(name, "ends with an assistant turn (nothing for the assistant "
                                                         "to answer)"))
                continue
            lacking = missing(conversation.requires)
            if lacking:
                skipped.append(SkippedConversation(name, f"the template does not support {', '.join(lacking)}"))
                continue
            rendering = self.render(conversation, True)
            if not rendering.ok and not explicit:
                skip = SkippedConversation(name, f"the template cannot render it: {rendering.error.describe()}")
                skipped.append(skip)
                unrenderable.append((conversation, rendering, skip))
                continue
            entries.append((conversation, rendering))
        if probes:
            entries.extend((probe, self.render(probe, True)) for probe in probe_conversations())
        if unrenderable and not any(rendering.ok for _, rendering in entries):
            reported = {id(skip) for _, _, skip in unrenderable}
            skipped = [item for item in skipped if id(item) not in reported]
            entries = [(conversation, rendering) for conversation, rendering, _ in unrenderable] + entries
        return entries, skipped

    def _missing_capabilities(self):
        from .behaviour import Behaviour

        try:
            behaviour = Behaviour(self.source.select(self.template_name, None).text, self.special_tokens)
            capabilities = behaviour.capabilities
        except InputError:
            return lambda requires: []
        return capabilities.missing

    def template_for(self, conversation: Conversation) -> Any:
        return self.source.select(self.template_name, conversation.tools)

    def render(self, conversation: Conversation, add_generation_prompt: bool) -> Rendering:
        return render_template(self.template_for(conversation), conversation, special_tokens=self.special_tokens,
                               add_generation_prompt=add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids exactly as apply_chat_template(tokenize=True) produces them for ``text``."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def wrappers(self, conversation: Conversation) -> Any:
        from .comparison import role_wrappers

        template = self.template_for(conversation)
        if template.name not in self._wrappers:
            single = TemplateSource(template.path, "validate", {template.name: template}, True, self.special_tokens)
            self._wrappers[template.name] = role_wrappers(single, special_tokens=self.special_tokens)
        return self._wrappers[template.name]

    # -- markers ------------------------------------------------------------------------------
    def marker_strings(self, texts: list[str | None]) -> list[str]:
        """Special-token-shaped substrings of ``texts`` (reasoning markers excluded), in order."""
        found: list[str] = []
        for text in texts:
            for match in self._marker_pattern.finditer(text or ""):
                marker = match.group(0)
                if marker not in found and not _REASONING_MARKER.search(marker):
                    found.append(marker)
        return found

    def turn_markers(self, conversation: Conversation) -> tuple[list[str], set[int]]:
        """What starts a turn in this template: the marker strings of the user and system headers
        and of the generation prompt, and the ids of those that are single tokens, plus BOS and
        the end-of-turn ids. Assistant-side markers after the generation prompt (channels, tool
        tags) are not turn starts; reasoning markers never are."""
        wrappers = self.wrappers(conversation)
        texts = [wrappers.start]
        for role in ("user", "system"):
            texts.append(wrappers.roles[role].prefix)
        texts.append(wrappers.generation_prompt.prefix)
        markers = self.marker_strings(texts)
        ids = set(self.eos_ids)
        if isinstance(self.bos_id, int):
            ids.add(self.bos_id)
        for marker in markers:
            encoded = self.encode(marker)
            if len(encoded) == 1:
                ids.add(encoded[0])
        ids -= {token_id for token_id in list(ids) if _REASONING_MARKER.search(self.piece(token_id))}
        return markers, ids

    # -- structural checks --------------------------------------------------------------------
    def structural_checks(self, conversations: list[Conversation]) -> list[StructuralCheck]:
        end_of_turn = self._check_end_of_turn(conversations)
        return [self._check_generation_prompt(conversations), end_of_turn,
                *self._special_token_checks(conversations, end_of_turn)]

    def _with_reply(self, conversation: Conversation) -> Conversation:
        messages = [*conversation.messages, {"role": "assistant", "content": STRUCTURAL_REPLY}]
        return conversation.replace(messages=messages, add_generation_prompt=False, continue_final_message=False)

    def _check_generation_prompt(self, conversations: list[Conversation]) -> StructuralCheck:
        name = "generation-prompt-prefix"
        text_failures, token_failures, first_message = [], [], None
        for conversation in conversations:
            prompted = self.render(conversation, True)
            replied = self.render(self._with_reply(conversation), False)
            if not prompted.ok or not replied.ok:
                continue
            label = conversation.name or "conversation"
            if not _reply_follows(prompted.text, replied.text):
                text_failures.append(label)
                first_message = first_message or self._prefix_problem(conversation, prompted.text, replied.text)
                continue
            if not replied.text.startswith(prompted.text):
                continue  # a reasoning run differs at the boundary; the token boundary then differs too
            prompt_ids = self.encode(prompted.text)
            if self.encode(replied.text)[:len(prompt_ids)] != prompt_ids:
                token_failures.append(label)
        if text_failures:
            return StructuralCheck(name, FAIL, first_message, text_failures)
        if token_failures:
            return StructuralCheck(name, WARN, "the prompt's last token merges with the reply's first when the "
                                   "conversation is tokenized whole, so the model generates from a token boundary it "
                                   "never saw in training (often a trailing space in the generation prompt)",
                                   token_failures)
        return StructuralCheck(name, PASS, "the generation prompt followed by a reply is a prefix of the conversation "
                               "with that reply, in text and in tokens")

    def _prefix_problem(self, conversation: Conversation, prompt: str, replied: str) -> str:
        wrappers = self.wrappers(conversation)
        generation = wrappers.generation_prompt.prefix or ""
        user = wrappers.roles["user"].prefix or ""
        assistant = wrappers.roles["assistant"].prefix or ""
        if generation.strip() and user.strip() and generation.strip() == user.strip() != assistant.strip():
            return (f"the generation prompt {_show(generation)} opens a user turn, but an assistant turn starts with "
                    f"{_show(assistant)}: the model is asked to write the user's next message")
        if not generation.strip() and assistant.strip():
            return (f"add_generation_prompt=True adds nothing, but an assistant turn starts with {_show(assistant)}: "
                    f"the model must write the assistant header itself (or continue the user's turn)")
        from .behaviour import common_prefix_length

        common = common_prefix_length(prompt + STRUCTURAL_REPLY, replied)
        return (f"the prompt with the generation prompt plus a reply is not how the conversation with that reply "
                f"renders: they part at character {common}: {_show(prompt[common:common + 40] or '(end)')} vs "
                f"{_show(replied[common:common + 40] or '(end)')}")

    def _check_end_of_turn(self, conversations: list[Conversation]) -> StructuralCheck:
        name = "end-of-turn-after-assistant"
        failures, message, whitespace_before = [], None, []
        eos_names = ", ".join(f"{_show(self.piece(token_id))}={token_id}" for token_id in self.eos_ids) or "(none)"
        for conversation in conversations:
            replied = self.render(self._with_reply(conversation), False)
            if not replied.ok:
                continue
            end = replied.text.rfind(STRUCTURAL_REPLY)
            if end < 0:
                continue
            end += len(STRUCTURAL_REPLY)
            encoding = self.tokenizer(replied.text, add_special_tokens=False, return_offsets_mapping=True)
            # A token that straddles the reply's end has merged the reply's last characters with
            # what follows: it is the token after the message.
            after = [token_id for token_id, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"])
                     if stop > end and stop > start]
            following = None
            skipped_space = False
            for token_id in after:
                if token_id not in self.eos_ids and not self.piece(token_id).strip():
                    skipped_space = True
                    continue
                following = token_id
                break
            label = conversation.name or "conversation"
            if following is None or following not in self.eos_ids:
                failures.append(label)
                if message is None:
                    rest = replied.text[end:end + 24]
                    written = ("nothing" if following is None else
                               f"{_show(rest)} (first token {_show(self.piece(following))}, id {following})")
                    message = (f"after an assistant message the template writes {written}, not an end-of-turn token "
                               f"({eos_names}): the model never learns from this format where its turn ends")
            elif skipped_space:
                whitespace_before.append(label)
        if failures:
            return StructuralCheck(name, FAIL, message, failures)
        if whitespace_before:
            return StructuralCheck(name, WARN, f"whitespace comes between an assistant message and its end-of-turn "
                                   f"token ({eos_names}); the model must generate it before it can stop",
                                   whitespace_before)
        return StructuralCheck(name, PASS, f"an end-of-turn token ({eos_names}) follows every assistant message")

    def _special_token_checks(self, conversations: list[Conversation],
                              end_of_turn: StructuralCheck) -> list[StructuralCheck]:
        """The TK5xx lint rules against this tokenizer: markers that are not single tokens or not in
        the vocabulary, BOS written twice or added again, turn ends that are not eos ids."""
        from .lint.rules.tokenizer import tokenizer_findings
        from .vocabulary import vocabulary_from_tokenizer

        vocabulary = vocabulary_from_tokenizer(self.tokenizer, getattr(self.loaded.model, "generation_config", None))
        checks, seen = [], set()
        for conversation in conversations:
            template = self.template_for(conversation)
            if template.name in seen:
                continue
            seen.add(template.name)
            for finding in tokenizer_findings(template.text, self.special_tokens, vocabulary):
                if finding.code == "TK502" and end_of_turn.status == FAIL:
                    continue  # the same missing end-of-turn, already reported with the rendered text
                status = WARN if finding.severity == "info" else FAIL
                checks.append(StructuralCheck(f"{finding.code} {finding.name}", status,
                                              f"{template.location(finding.line, finding.column)}: {finding.message}"))
        if not any(check.status == FAIL for check in checks):
            checks.insert(0, StructuralCheck("special-tokens", PASS, "every special-token marker the template writes "
                                             "is one token of this vocabulary, BOS appears once, and turns end with an "
                                             "eos id (TK501–TK505)"))
        return checks

    # -- generation ---------------------------------------------------------------------------
    def generate(self, entries: list[tuple[Conversation, Rendering]], max_new_tokens: int, thresholds: Thresholds,
                 batch_size: int | None, progress: ProgressCallback) -> list[PromptResult]:
        """One result per entry, in order: a generation judged for each rendered prompt, a failed
        result for each rendering that failed (only successful renders reach the tokenizer)."""
        ready = [(index, conversation, rendering.text) for index, (conversation, rendering) in enumerate(entries)
                 if rendering.ok]
        encoded = [self.encode(text) for _, _, text in ready]
        # A prompt of no tokens leaves the model nothing to continue (generate fails reshaping an
        # empty batch): it fails as a prompt the template gives nothing for.
        empty = {index: _empty_prompt(conversation, text) for (index, conversation, text), ids in zip(ready, encoded)
                 if not ids}
        ready = [item for item in ready if item[0] not in empty]
        encoded = [ids for ids in encoded if ids]
        outputs = generate_greedy(self.loaded, encoded, max_new_tokens, batch_size, progress) if encoded else []
        bodies = [self._body(output.ids) for output in outputs]
        margins = self.role_margins([conversation for _, conversation, _ in ready], bodies,
                                    [output.logprobs for output in outputs], batch_size)
        results: list[PromptResult | None] = [None] * len(entries)
        for (index, conversation, text), ids, output, margin in zip(ready, encoded, outputs, margins):
            markers, turn_ids = self.turn_markers(conversation)
            probabilities = output.first_probabilities
            in_vocabulary = [token_id for token_id in turn_ids if token_id < probabilities.shape[0]]
            turn_probability = float(probabilities[in_vocabulary].sum()) if in_vocabulary else 0.0
            results[index] = self._judge(conversation, text, len(ids), output.ids, turn_probability, markers,
                                         turn_ids, max_new_tokens, thresholds, margin)
        for index, (conversation, rendering) in enumerate(entries):
            if not rendering.ok:
                results[index] = _unrendered(conversation, rendering.error)
        for index, result in empty.items():
            results[index] = result
        return results

    def _body(self, generated: list[int]) -> list[int]:
        """The reply's tokens before its end-of-turn token."""
        stop_index = next((index for index, token_id in enumerate(generated) if token_id in self.eos_ids), None)
        return generated[:stop_index] if stop_index is not None else list(generated)

    # -- answering as the assistant, not as the user ------------------------------------------
    def user_turn_context(self, conversation: Conversation) -> str | None:
        """The conversation closed and the user's next turn opened: the template's rendering
        without a generation prompt (less what it writes only at a conversation's end), then its
        user header. None when the template has no clear, non-empty user header."""
        from .comparison import WRAPPER_OK

        wrappers = self.wrappers(conversation)
        user = wrappers.roles.get("user")
        if user is None or user.status != WRAPPER_OK or not user.prefix:
            return None
        closed = self.render(conversation, False)
        if not closed.ok:
            return None
        text = closed.text
        if wrappers.end and text.endswith(wrappers.end):
            text = text[:-len(wrappers.end)]
        return text + user.prefix

    def role_margins(self, conversations: list[Conversation], bodies: list[list[int]],
                     assistant_logprobs: list[list[float]], batch_size: int | None) -> list[float | None]:
        """Per reply, mean over its first ``ROLE_WINDOW`` tokens of log P(token | generation prompt)
        − log P(token | the user's next turn opened instead).

        A template that puts the model in the assistant's turn makes the model's own reply far
        likelier there than as the user's next message; where the two are about as likely, the
        generation prompt did not tell the model whose turn it is (foreign markers it reads as
        plain text, a generation prompt that opens a user turn), whatever the reply looks like.
        """
        contexts: list[list[int]] = []
        positions: list[int] = []
        bodies = [body[:ROLE_WINDOW] for body in bodies]
        for position, (conversation, body) in enumerate(zip(conversations, bodies)):
            text = self.user_turn_context(conversation) if body else None
            if text is not None:
                contexts.append(self.encode(text))
                positions.append(position)
        margins: list[float | None] = [None] * len(conversations)
        user_logprobs = score_continuations(self.loaded, contexts, [bodies[position] for position in positions],
                                            batch_size)
        for position, as_user in zip(positions, user_logprobs):
            as_assistant = assistant_logprobs[position][:len(bodies[position])]
            margins[position] = (sum(as_assistant) - sum(as_user)) / len(as_user)
        return margins

    def _judge(self, conversation: Conversation, prompt: str, prompt_tokens: int, generated: list[int],
               turn_probability: float, markers: list[str], turn_ids: set[int], max_new_tokens: int,
               thresholds: Thresholds, role_margin: float | None = None) -> PromptResult:
        stop_index = next((index for index, token_id in enumerate(generated) if token_id in self.eos_ids), None)
        reply_ids = generated[:stop_index + 1] if stop_index is not None else generated
        body_ids = reply_ids[:stop_index] if stop_index is not None else reply_ids
        reply = self.tokenizer.decode(reply_ids, skip_special_tokens=False)
        body = self.tokenizer.decode(body_ids, skip_special_tokens=False)
        first_token = self.piece(generated[0]) if generated else ""
        reasoning = bool(generated) and bool(_REASONING_MARKER.search(first_token)) and first_token.strip() != ""
        answer = self.tokenizer.decode(body_ids, skip_special_tokens=True)
        if reasoning:
            # The answer of a reasoning reply is what follows its thinking; the thinking counts when
            # the reply ends inside it.
            answer = _after_reasoning(body) or answer
        found = [self.piece(token_id) for token_id in body_ids if token_id in turn_ids]
        found += [marker for marker in markers if marker in body and marker not in found]
        reasons, verdict = [], PASS
        if turn_probability >= thresholds.max_turn_probability:
            reasons.append(f"P(first token is a turn token) = {turn_probability:.2g} ≥ "
                           f"{thresholds.max_turn_probability:g}: the model expects a turn to end or start here, "
                           f"not an answer")
        if found:
            reasons.append(f"the reply writes turn markers before its end-of-turn: {', '.join(found)}")
        if reasons:
            verdict = FAIL
        elif stop_index is None:
            verdict = WARN
            reasons.append("still reasoning at the token limit" if reasoning else
                           f"did not end its turn within {max_new_tokens} tokens")
        elif not answer.strip():
            verdict = WARN
            reasons.append("ended its turn without answering (empty reply)")
        return PromptResult(
            name=conversation.name or "conversation", kind=_prompt_kind(conversation), prompt=prompt, prompt_tokens=prompt_tokens,
            reply=reply, reply_token_ids=list(reply_ids), answer=answer.strip(), stopped=stop_index is not None,
            stop_index=stop_index, first_token=first_token, turn_probability=turn_probability, markers=found,
            reasoning=reasoning, verdict=verdict, reasons=reasons, role_margin=role_margin,
        )


def _prompt_kind(conversation: Conversation) -> str:
    return "probe" if (conversation.name or "").startswith("probe-") else "fixture"


def _unrendered(conversation: Conversation, error: RenderFailure) -> PromptResult:
    """The failed result of a conversation the template cannot render: nothing was generated."""
    why = error.describe()
    return PromptResult(
        name=conversation.name or "conversation", kind=_prompt_kind(conversation), prompt="", prompt_tokens=0,
        reply="", reply_token_ids=[], answer="", stopped=False, stop_index=None, first_token="",
        turn_probability=None, markers=[], reasoning=False, verdict=FAIL,
        reasons=[f"the template cannot render it: {why}"], render_error=why,
    )


def _empty_prompt(conversation: Conversation, text: str) -> PromptResult:
    """The failed result of a conversation whose rendered prompt has no tokens: nothing generated."""
    label = conversation.name or "conversation"
    shown = "renders an empty prompt" if not text else f"renders {_show(text[:40])}, which tokenizes to no tokens"
    why = f"{label} {shown}: there is nothing for the model to continue"
    return PromptResult(
        name=label, kind=_prompt_kind(conversation), prompt=text, prompt_tokens=0,
        reply="", reply_token_ids=[], answer="", stopped=False, stop_index=None, first_token="",
        turn_probability=None, markers=[], reasoning=False, verdict=FAIL,
        reasons=[why], render_error=why,
    )


# A run of reasoning markers with the whitespace after them ("<think>\n", "<think>\n\n</think>\n\n").
_REASONING_RUN = r"(?:<[^<>\s]*(?:think|thought|reason)[^<>\s]*>\s*)+"


def _reply_follows(prompt: str, replied: str) -> bool:
    """Whether the conversation with the reply starts with the prompt and then the reply.

    Reasoning templates open the generation prompt with a think marker (``<think>\n``, or an
    empty ``<think></think>`` block when thinking is off) that history turns drop or keep; a
    reasoning run at the end of the prompt or before the reply in history is not a mismatch.
    """
    if replied.startswith(prompt + STRUCTURAL_REPLY):
        return True
    trailing = re.search(_REASONING_RUN + r"$", prompt, re.IGNORECASE)
    base = prompt[:trailing.start()] if trailing else prompt
    if not replied.startswith(base):
        return False
    rest = replied[len(base):]
    leading = re.match(_REASONING_RUN, rest, re.IGNORECASE)
    return rest[leading.end():].startswith(STRUCTURAL_REPLY) if leading else rest.startswith(STRUCTURAL_REPLY)


def _after_reasoning(text: str) -> str:
    """The text after the last closing reasoning marker (``</think>`` and kin), else ""."""
    closing = list(re.finditer(r"</[^<>]*(?:think|thought|reason)[^<>]*>|<\|end_of_thought\|>", text, re.IGNORECASE))
    return text[closing[-1].end():] if closing else ""


def _show(text: str) -> str:
    return "'" + make_visible(text).replace("\n", "") + "'"


def _default_fixtures() -> list[Conversation]:
    from .fixtures import builtin_fixtures

    return builtin_fixtures()


def probe_conversations() -> list[Conversation]:
    """The built-in short-answer prompts as single-turn conversations."""
    return [Conversation(messages=[{"role": "user", "content": question}], name=name,
                         description="short-answer probe") for name, question in PROBES]


# ---------------------------------------------------------------------------------------------
# batched greedy generation


# A prompt starts a new batch when it is more than this many times as long as the batch's shortest
# prompt and at least PADDING_SLACK tokens longer.
LENGTH_RATIO = 2.0
PADDING_SLACK = 64


def length_batches(lengths: list[int], batch_size: int | None = None) -> list[list[int]]:
    """Indices of prompts grouped into generate calls, shortest first.

    Every row of a batch is padded to its longest prompt, and the prompt pass costs time in
    proportion to rows × width: on SmolLM2-135M (2 CPU cores) one 646-token fixture padded 13
    prompts of 33–210 tokens and made the prompt pass of the batch 5× slower than batches by
    length. Prompts of similar length stay in one call, so the usual run is one batch;
    ``batch_size`` caps rows per call (GPU memory).
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    batches: list[list[int]] = []
    for index in order:
        current = batches[-1] if batches else None
        if current is not None:
            shortest = lengths[current[0]]
            too_long = lengths[index] > LENGTH_RATIO * shortest and lengths[index] > shortest + PADDING_SLACK
            full = batch_size is not None and len(current) >= batch_size
            if not too_long and not full:
                current.append(index)
                continue
        batches.append([index])
    return batches


class Generation(NamedTuple):
    """One greedy continuation: its ids (up to and including an end-of-turn token), a CPU tensor
    with the probability of every vocabulary entry as the first token, and the log-probability
    of each generated id given everything before it (softmax of the raw logits, before any
    logits processor)."""

    ids: list[int]
    first_probabilities: Any
    logprobs: list[float]


def generate_greedy(
    loaded: LoadedModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int | None = None,
    progress: ProgressCallback = _no_progress,
    *,
    batches: list[list[int]] | None = None,
) -> list[Generation]:
    """Greedy continuations of token-id prompts, batched with left padding, one per prompt in the
    given order (see ``Generation``; padding after an end-of-turn token removed).

    Prompts are grouped by length so batches hold little padding; greedy output with left
    padding and an attention mask equals generating each prompt alone.
    """
    import torch
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    model, eos_ids = loaded.model, loaded.eos_token_ids
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0
    if batches is None:
        batches = length_batches([len(prompt) for prompt in prompts], batch_size)
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_ids or None, pad_token_id=pad_id, return_dict_in_generate=True,
                              output_logits=True)
    device = model.get_input_embeddings().weight.device
    results: dict[int, Generation] = {}
    label_total = len(batches)

    class _Ticker(StoppingCriteria):
        """Reports one step of progress per generated token; never stops generation itself."""

        def __init__(self, label: str) -> None:
            self.label = label
            self.step = 0

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.step += 1
            progress(self.label, self.step, max_new_tokens)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    for number, batch in enumerate(batches, 1):
        width = max(len(prompts[index]) for index in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids = prompts[index]
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        label = f"generating ({len(prompts)} prompts" + (f", batch {number}/{label_total})" if label_total > 1 else ")")
        progress(label, 0, max_new_tokens)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config,
                stopping_criteria=StoppingCriteriaList([_Ticker(label)]),
            )
        first = torch.softmax(output.logits[0].float(), dim=-1).cpu()
        new_ids = output.sequences[:, width:]
        # One step at a time: the whole [rows, steps, vocabulary] block in float32 can be large.
        chosen = torch.stack([torch.log_softmax(step.float(), dim=-1).gather(1, new_ids[:, at:at + 1].to(step.device))
                              .squeeze(1).cpu() for at, step in enumerate(output.logits)], dim=1)
        sequences = new_ids.cpu().tolist()
        for row, index in enumerate(batch):
            generated = sequences[row]
            stop = next((position for position, token_id in enumerate(generated) if token_id in eos_ids), None)
            kept = generated[:stop + 1] if stop is not None else generated
            results[index] = Generation(kept, first[row], chosen[row, :len(kept)].tolist())
        progress(label, max_new_tokens, max_new_tokens)
    return [results[index] for index in range(len(prompts))]


def score_continuations(
    loaded: LoadedModel,
    contexts: list[list[int]],
    continuations: list[list[int]],
    batch_size: int | None = None,
) -> list[list[float]]:
    """log P(each continuation token | its context and the continuation before it), per pair.

    One forward pass per length batch, left-padded, with positions counted from each row's first
    real token as ``generate`` counts them; only the last positions' logits are computed where
    the model supports ``logits_to_keep``.
    """
    if not contexts:
        return []
    import torch

    model = loaded.model
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = loaded.eos_token_ids[0] if loaded.eos_token_ids else 0
    device = model.get_input_embeddings().weight.device
    rows = [context + continuation for context, continuation in zip(contexts, continuations)]
    scores: dict[int, list[float]] = {}
    for batch in length_batches([len(row) for row in rows], batch_size):
        width = max(len(rows[index]) for index in batch)
        keep = max(len(continuations[index]) for index in batch) + 1
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            input_ids[row, width - len(rows[index]):] = torch.tensor(rows[index], dtype=torch.long)
            attention[row, width - len(rows[index]):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        arguments = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device),
                     "position_ids": positions.to(device)}
        with torch.inference_mode():
            try:
                logits = model(**arguments, logits_to_keep=keep).logits
            except TypeError:
                logits = model(**arguments).logits
            logits = logits[:, -keep:]
            for row, index in enumerate(batch):
                count = len(continuations[index])
                # The logits at kept position k predict the token at kept position k + 1.
                predicting = torch.log_softmax(logits[row, keep - count - 1:keep - 1].float(), dim=-1)
                targets = torch.tensor(continuations[index], dtype=torch.long, device=predicting.device)
                scores[index] = predicting.gather(1, targets.unsqueeze(1)).squeeze(1).cpu().tolist()
    return [scores[index] for index in range(len(rows))]


# ---------------------------------------------------------------------------------------------
# the text report

_MARKS = {PASS: "✓", FAIL: "✗", WARN: "!"}
_COLORS = {PASS: "\x1b[32m", FAIL: "\x1b[31m", WARN: "\x1b[33m"}
_RESET = "\x1b[0m"


def _paint(text: str, status: str, color: bool) -> str:
    return f"{_COLORS[status]}{text}{_RESET}" if color else text


def _indented_visible(text: str, special_tokens: list[str], color: bool, indent: str) -> str:
    visible = make_visible(text, special_tokens, color=color).rstrip("\n")
    return visible.replace("\n", "\n" + indent)


def report_text(report: ValidationReport, *, color: bool = False) -> str:
    """The human-readable report: model and template, structural checks, one block per prompt
    (prompt tail, reply with special tokens and whitespace visible, signals, verdict and why),
    skipped conversations, and the summary line."""
    tokens = report.special_tokens
    lines = [
        f"model: {report.model} ({report.device}, {report.dtype}; loaded from {report.loaded_from} in "
        f"{report.load_seconds:.1f} s)",
        f"template: {report.template}",
        "structural checks (tokenizer only):",
    ]
    for check in report.structural:
        where = ""
        if check.fixtures:
            shown = ", ".join(check.fixtures[:4]) + (f", +{len(check.fixtures) - 4}" if len(check.fixtures) > 4 else "")
            where = f" [{shown}]"
        lines.append(_paint(f"  {_MARKS[check.status]} {check.name}: ", check.status, color) + check.message + where)
    if not report.structural:
        lines.append("  (none: the template rendered no conversation to check)")
    lines.append(f"generations ({len(report.prompts)} prompts, greedy, at most {report.max_new_tokens} new tokens, "
                 f"{report.generate_seconds:.1f} s):")
    for prompt in report.prompts:
        lines.append(_paint(f"── {prompt.name} ({prompt.kind}) · {prompt.verdict.upper()} ──", prompt.verdict, color))
        if not prompt.generated:
            lines.append(_paint(f"  {prompt.verdict}: ", prompt.verdict, color) + "; ".join(prompt.reasons))
            continue
        lines.append("  prompt: " + _indented_visible(prompt.prompt_tail(), tokens, color, "          "))
        lines.append("  reply:  " + (_indented_visible(prompt.reply, tokens, color, "          ") or "(nothing)"))
        stop = f"stopped at token {prompt.stop_index}" if prompt.stopped else \
            f"did not stop within {report.max_new_tokens} tokens"
        markers = ", ".join(prompt.markers) if prompt.markers else "none"
        first = make_visible(prompt.first_token) if prompt.first_token else "(none)"
        margin = "n/a" if prompt.role_margin is None else f"{prompt.role_margin:.2f}"
        lines.append(f"  signals: {stop} · P(first token is a turn token) = {prompt.turn_probability:.2g} · "
                     f"role margin {margin} · first token {first!r} · turn markers in reply: {markers}"
                     + (" · opens with reasoning" if prompt.reasoning else ""))
        if prompt.reasons:
            lines.append(_paint(f"  {prompt.verdict}: ", prompt.verdict, color) + "; ".join(prompt.reasons))
    if report.skipped:
        lines.append("skipped:")
        lines.extend(f"  {item.name}: {item.reason}" for item in report.skipped)
    if report.role_margin is not None:
        lines.append(f"role margin (median over the replies' first {ROLE_WINDOW} tokens of log P as the assistant's "
                     f"turn − log P as the user's next turn): {report.role_margin:.2f} nats/token (fails below "
                     f"{report.thresholds.min_role_margin:g})")
    status = PASS if report.passed else FAIL
    lines.append(_paint(report.summary(), status, color))
    lines.extend(f"  - {reason}" for reason in report.reasons)
    return "\n".join(lines)
