"""Property-based search for conversations that break a template's behavioural invariants.

``fuzz_template`` probes what the template supports (``capabilities.py``), draws conversations of
that shape from ``templatekit.strategies`` (tools only if it supports tools, and then
conversations without tools as well; and so on; system messages are sometimes moved later in the
conversation, as clients send them), and runs each one
through the same invariants the TK6xx lint rules check on the built-in fixtures: each rule
evaluates on the drawn conversation through ``Behaviour.checking``. A conversation that makes the
template fail with a render error (not its own ``raise_exception``) breaks the invariant
``render-error``. When one breaks, hypothesis shrinks the conversation to a minimal one, which
comes back as a fixture file the user can keep and render with ``templatekit render -f``; the
search then goes on, with the examples left, for the invariants not broken yet.

Only the rules of severity warning and above are invariants here: the info-level TK6 rules
report policies (reasoning dropped from history), portability (TK612) or facts about the whole
template (TK611, TK614), not a conversation the template gets wrong.

A conversation the template rejects with its own ``raise_exception`` (a shape it declares
unsupported, such as tool-call ids that are not 9 characters) is counted as declined, not as a
failure, as the TK6 rules treat it. Exceeding the render budget is the security rules' concern:
such a conversation is counted as over budget, not as a failure. A template whose capability
probe already spent a whole budget (time, output or memory) is not fuzzed: every example would
spend it again (see ``Behaviour``).

Runs are deterministic for a given seed and write no hypothesis example database; hypothesis'
own cache goes to templatekit's cache directory, never the working directory. hypothesis is
imported only when a run starts (``templatekit lint`` never imports this module).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .behaviour import DEFAULT_SPECIAL_TOKENS, Behaviour
from .capabilities import Capabilities
from .conversation import Conversation
from .errors import InputError, one_line
from .fixtures import used_capabilities

RENDER_ERROR = "render-error"
RENDER_ERROR_SUMMARY = "The template fails on a valid conversation (not through its own raise_exception)."

# What Checker.check returns for a conversation that is not a failure and was not checked: the
# template declined it with raise_exception, or its render went over budget (see module docstring).
DECLINED = "declined"
OVER_BUDGET = "over-budget"
_UNCHECKED_BY_KIND = {"raised": DECLINED, "budget": OVER_BUDGET}

# The rule whose invariant a failed render with continue_final_message breaks (see Checker.check).
CONTINUE_FINAL_MESSAGE_CODE = "TK609"

# How findings name a drawn (unnamed) conversation (Behaviour.describe).
_DRAWN_LABEL = "the generated conversation"



@dataclasses.dataclass
class FuzzFailure:
    """One broken invariant and the minimal conversation that breaks it."""

    invariant: str
    summary: str
    explanation: str
    conversation: Conversation
    fixture_text: str
    flaky: bool = False
    # The fixture file's content as data (what ``fixture_text`` holds after its comment lines).
    fixture: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def code(self) -> str | None:
        """The rule code of the invariant (``TK603``), None for ``render-error``."""
        first = self.invariant.split()[0]
        return first if first != self.invariant else None

    @property
    def name(self) -> str:
        """The invariant's name without its code (``content-dropped``, ``render-error``)."""
        return self.invariant.split()[-1]


@dataclasses.dataclass
class FuzzResult:
    """What ``fuzz_template`` found."""

    source: str
    template_name: str
    seed: int
    examples: int
    shape: dict[str, Any]
    invariants: list[str]
    failures: list[FuzzFailure]
    tested: int
    declined: int
    over_budget: int = 0
    # Set when nothing was fuzzed because the capability probe spent a whole budget: the probe's
    # key and the failure, described in the user's file.
    stopped: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and self.stopped is None

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON data; each failure's ``conversation`` is its fixture file's
        mapping, loadable as it is by ``templatekit render -f``."""
        return {
            "schema_version": 1,
            "source": self.source,
            "template": self.template_name,
            "seed": self.seed,
            "examples": self.examples,
            "examples_run": self.tested,
            "declined": self.declined,
            "over_budget": self.over_budget,
            "stopped": self.stopped,
            "shape": self.shape,
            "invariants": list(self.invariants),
            "ok": self.ok,
            "broken": [
                {"invariant": failure.invariant, "code": failure.code, "name": failure.name,
                 "summary": failure.summary, "message": failure.explanation, "flaky": failure.flaky,
                 "conversation": failure.fixture}
                for failure in self.failures
            ],
        }


class InvariantBroken(Exception):
    """Raised inside the property for hypothesis to shrink; one subclass per invariant, so that
    hypothesis tracks (and shrinks) each broken invariant as a distinct bug."""

    def __init__(self, invariant: str, summary: str, explanation: str, conversation: Conversation) -> None:
        super().__init__(f"{invariant}: {explanation}")
        self.invariant = invariant
        self.summary = summary
        self.explanation = explanation
        self.conversation = conversation


_BROKEN_TYPES: dict[str, type[InvariantBroken]] = {}


def _broken_type(invariant: str) -> type[InvariantBroken]:
    if invariant not in _BROKEN_TYPES:
        name = "Broken_" + "".join(char if char.isalnum() else "_" for char in invariant)
        _BROKEN_TYPES[invariant] = type(name, (InvariantBroken,), {})
    return _BROKEN_TYPES[invariant]


# ---------------------------------------------------------------------------------------------
# the invariants


class Checker:
    """Evaluates every invariant of one template on a given conversation."""

    def __init__(self, text: str, special_tokens: dict[str, str] | None = None,
                 config_capabilities: dict[str, bool] | None = None, locate: Any = None) -> None:
        from .lint.registry import all_rules
        from .lint.rules.behaviour import BehaviourRule, template_literals
        from .lint.target import LintTarget

        self.text = text
        self.locate = locate  # line -> where, in the user's file (ChatTemplate.location)
        self.special_tokens = dict(special_tokens or {})
        self.behaviour = Behaviour(text, self.special_tokens, config_capabilities)
        self._target_type = LintTarget
        rules = [rule() for rule in all_rules() if issubclass(rule, BehaviourRule)
                 and rule.severity in ("warning", "error") and rule.checks_given_conversations]
        # Every other invariant compares renders, so a template that is not deterministic would
        # break whichever runs first; checking determinism first names the real cause.
        self.rules = sorted(rules, key=lambda rule: rule.name != "nondeterministic-output")
        self._literals = template_literals(LintTarget(text, special_tokens=self.special_tokens))
        self._summaries = {f"{rule.code} {rule.name}": rule.doc().summary for rule in self.rules}

    def _continue_final_message_failure(self, checked: Behaviour, base: Any) -> str | None:
        """TK609's invariant when ``base`` (the given conversation's failed render) is a failure of
        ``continue_final_message`` (transformers refusing a render that dropped or altered the
        final message): the same messages render, or fail otherwise, without it. None otherwise,
        or when TK609 is not among the invariants."""
        from .behaviour import not_continued
        from .lint.rules.behaviour import blamed_on_the_feature

        invariant = next((name for name in self._summaries if name.startswith(CONTINUE_FINAL_MESSAGE_CODE + " ")), None)
        if invariant is None or not checked.given.continue_final_message or base.error.kind == "raised":
            return None
        baseline = checked.render("given:not-continued", not_continued(checked.given), False)
        return invariant if blamed_on_the_feature(base.error, baseline) else None

    @property
    def capabilities(self) -> Capabilities:
        return self.behaviour.capabilities

    @property
    def invariants(self) -> list[str]:
        return [RENDER_ERROR] + [f"{rule.code} {rule.name}" for rule in self.rules]

    def check(self, conversation: Conversation, only: set[str] | None = None,
              skip: frozenset[str] = frozenset()) -> tuple[str, str, str] | str | None:
        """(invariant, its summary, what went wrong) for the first invariant ``conversation``
        breaks; None when it breaks none; ``DECLINED`` or ``OVER_BUDGET`` when it was not checked
        (see module docstring). ``only`` limits the rules run to those invariants (render errors
        are always checked); the invariants in ``skip`` (already reported) are not checked, and a
        conversation the template fails on then breaks nothing, as no rule can judge it."""
        checked = self.behaviour.checking(conversation, None if conversation.name else _DRAWN_LABEL)
        base = checked.fixture_render(checked.given)
        if not base.ok:
            if base.error.kind in _UNCHECKED_BY_KIND:
                return _UNCHECKED_BY_KIND[base.error.kind]
            error = base.error.placed(self.locate) if self.locate is not None else base.error
            continued = self._continue_final_message_failure(checked, base)
            if continued is not None:
                return None if continued in skip else (continued, self._summaries[continued],
                                                       f"continue_final_message fails: {error.describe()}")
            if RENDER_ERROR in skip:
                return None
            return RENDER_ERROR, RENDER_ERROR_SUMMARY, error.describe()
        # A fresh target per conversation: rules cache variant renders on it. The renders and the
        # template's literals are handed over instead of being recomputed.
        target = self._target_type(self.text, special_tokens=self.special_tokens)
        target.shared("renders", lambda _target: checked)
        target.shared("behaviour:literals", lambda _target: self._literals)
        for rule in self.rules:
            invariant = f"{rule.code} {rule.name}"
            if (only is not None and invariant not in only) or invariant in skip:
                continue
            for diagnostic in rule.check(target):
                if diagnostic.severity in ("warning", "error"):  # a note (info) breaks nothing
                    return f"{rule.code} {rule.name}", rule.doc().summary, diagnostic.message
        return None


# ---------------------------------------------------------------------------------------------
# the conversations


def strategy_options(capabilities: Capabilities) -> dict[str, Any]:
    """``strategies.conversations`` options for a template with these capabilities."""
    supports = capabilities.supports
    # Not gated on "tools": templates that never list tool definitions (DeepSeek-V3's) still
    # render calls and results, and conversations with calls pass definitions all the same.
    tool_calls = supports("tool_calls") and supports("tool_responses")
    arguments_fact = capabilities.facts.get("tool_calls", "")
    arguments = "any"
    if arguments_fact.startswith("arguments must be objects"):
        arguments = "object"
    elif arguments_fact.startswith("arguments must be JSON strings"):
        arguments = "string"
    return {
        "system": None if supports("system") else False,
        "tools": supports("tools"),
        "tool_calls": tool_calls,
        "parallel_tool_calls": tool_calls and supports("parallel_tool_calls"),
        "tool_call_arguments": arguments,
        "documents": supports("documents"),
        "reasoning": supports("reasoning"),
        "typed_content": supports("typed_content"),
    }


def describe_shape(options: dict[str, Any]) -> str:
    """One line saying what the drawn conversations contain."""
    names = {"system": "system messages", "tools": "tool definitions", "tool_calls": "tool calls",
             "parallel_tool_calls": "parallel tool calls", "documents": "documents", "reasoning": "reasoning",
             "typed_content": "typed content parts"}
    used = [label for key, label in names.items() if options.get(key) not in (False, None) or
            (key == "system" and options.get(key) is None)]
    left = [label for key, label in names.items() if label not in used]
    text = "with " + ", ".join(used) if used else "plain user/assistant turns"
    if options.get("tool_calls") and options.get("tool_call_arguments") != "any":
        text += f" (arguments as {'objects' if options['tool_call_arguments'] == 'object' else 'JSON strings'})"
    if left:
        text += "; without " + ", ".join(left) + " (not supported)"
    return text


def _late_system(conversation: Conversation, position: int, text: str) -> Conversation:
    """``conversation`` with a system message before one of its user turns that follow an
    assistant or tool turn (the ``position``-th, cyclically)."""
    messages = conversation.messages
    later_users = [index for index, message in enumerate(messages) if index > 0 and message.get("role") == "user"
                   and messages[index - 1].get("role") in ("assistant", "tool")]
    if not later_users:
        return conversation
    index = later_users[position % len(later_users)]
    moved = conversation.replace(messages=messages[:index] + [{"role": "system", "content": text}] + messages[index:])
    moved.requires = used_capabilities(moved)
    return moved


def _typed(conversation: Conversation) -> Conversation:
    typed = conversation.with_typed_text()
    typed.requires = used_capabilities(typed)
    return typed


def _conversation_strategy(options: dict[str, Any], typed_only: bool = False) -> Any:
    from hypothesis import strategies as st

    from .strategies import conversations, text_content

    drawn = conversations(**options)
    if options.get("tools"):
        # Clients call tool-capable models without tools too: a template that fails on a chat
        # without them (iterating tools that are None) fails every plain request. First, so
        # failures shrink towards a conversation without tools where one shows them.
        plain = {**options, "tools": False, "tool_calls": False, "parallel_tool_calls": False}
        drawn = st.one_of(conversations(**plain), drawn)
    if typed_only:
        drawn = drawn.map(_typed)
    if options.get("system") is False:
        return drawn

    @st.composite
    def with_late_system(draw: Any) -> Conversation:
        conversation = draw(drawn)
        # About half the examples get a system message before a later user turn, which real
        # clients send (to change instructions mid-chat) and templates often drop. Shrinks towards
        # False, that is towards no such message.
        if not draw(st.booleans()):
            return conversation
        moved = _late_system(conversation, draw(st.integers(0, 8)), draw(text_content()))
        return _typed(moved) if typed_only else moved

    return with_late_system()


# ---------------------------------------------------------------------------------------------
# the run


def fuzz_template(
    source: str | os.PathLike,
    *,
    examples: int = 100,
    seed: int | None = None,
    template_name: str | None = None,
    config_capabilities: dict[str, bool] | None = None,
) -> FuzzResult:
    """Search ``examples`` drawn conversations for one that breaks an invariant of the template.

    ``source`` is anything ``templatekit render`` reads. Without ``seed`` a random one is chosen
    (and returned in the result, so a run can be repeated). Raises ``InputError`` for a source
    that cannot be loaded or a template that does not compile.
    """
    from .rendering import compile_failure
    from .sources import load_source

    if examples < 1:
        raise InputError(None, f"--examples must be at least 1, got {examples}")
    loaded = load_source(source)
    template = loaded.select(template_name, None)
    failure = compile_failure(template)
    if failure is not None:
        raise InputError(template.location(failure.line), f"the template does not compile: {failure.message}")
    checker = Checker(template.text, loaded.special_tokens, config_capabilities, locate=template.location)
    options = strategy_options(checker.capabilities)
    # Templates for typed content only (vision models) print nothing for a plain string.
    typed_only = checker.behaviour.requires_typed_content
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    counts = {"tested": 0, DECLINED: 0, OVER_BUDGET: 0}
    spent = checker.behaviour.spent_budget
    failures = _search(checker, options, typed_only, examples, seed, counts) if spent is None else []
    label = str(source)
    named = None if loaded.single else template.name
    result = FuzzResult(
        source=label, template_name=template.name, seed=seed, examples=examples, shape=options,
        invariants=checker.invariants, failures=[], tested=counts["tested"], declined=counts[DECLINED],
        over_budget=counts[OVER_BUDGET],
    )
    if spent is not None:
        result.stopped = {"probe": checker.behaviour.spent_budget_probe,
                          "message": spent.error.placed(template.location).describe()}
    tokens = {name: value for name, value in DEFAULT_SPECIAL_TOKENS.items()
              if name not in loaded.special_tokens and name in template.text}
    for broken, flaky in failures:
        text = fixture_text(broken, seed, label, named, tokens)
        result.failures.append(FuzzFailure(broken.invariant, broken.summary, broken.explanation,
                                           broken.conversation, text, flaky, fixture_mapping(broken, tokens)))
    return result


def _search(checker: Checker, options: dict[str, Any], typed_only: bool, examples: int, seed: int,
            counts: dict[str, Any]) -> list[tuple[InvariantBroken, bool]]:
    """Every invariant broken within ``examples`` drawn conversations. hypothesis stops drawing at
    the first failure and shrinks it; the search then goes on, with the examples left, for
    invariants not broken yet (round ``n`` draws with seed ``seed + n``, so a seed still fixes the
    whole run), until the examples are spent or a round finds nothing."""
    found: list[tuple[InvariantBroken, bool]] = []
    reported: frozenset[str] = frozenset()
    for round_number in range(len(checker.invariants)):
        remaining = examples - counts["tested"]
        if remaining < 1:
            break
        failures = _search_round(checker, options, typed_only, remaining, seed + round_number, counts, reported)
        failures = [(broken, flaky) for broken, flaky in failures if broken.invariant not in reported]
        if not failures:
            break
        found += failures
        reported |= {broken.invariant for broken, _flaky in failures}
    return found


def _search_round(checker: Checker, options: dict[str, Any], typed_only: bool, examples: int, seed: int,
                  counts: dict[str, Any], reported: frozenset[str]) -> list[tuple[InvariantBroken, bool]]:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as seeded

    strategy = _conversation_strategy(options, typed_only)
    # Once an invariant broke, hypothesis is shrinking (or looking near) that failure: checking
    # only the invariants already broken keeps each shrink step cheap. Deterministic, so replays
    # of an example give the same outcome.
    broken: set[str] = set()

    @settings(max_examples=examples, database=None, deadline=None, derandomize=False,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
              report_multiple_bugs=True, verbosity=Verbosity.quiet, print_blob=False)
    @seeded(seed)
    @given(strategy)
    def holds(conversation: Conversation) -> None:
        outcome = checker.check(conversation, broken if broken else None, reported)
        if not broken:
            counts["tested"] += 1
            if isinstance(outcome, str):
                counts[outcome] += 1
        if isinstance(outcome, tuple):
            invariant, summary, explanation = outcome
            broken.add(invariant)
            raise _broken_type(invariant)(invariant, summary, explanation, conversation)

    with _hypothesis_storage():
        try:
            holds()
        except BaseException as exc:  # noqa: BLE001 - hypothesis reports several bugs as a group
            found = list(_broken(exc))
            if not found:
                raise
            return found
    return []


def _broken(exc: BaseException, flaky: bool = False) -> Iterator[tuple[InvariantBroken, bool]]:
    from hypothesis.errors import FlakyFailure

    if isinstance(exc, InvariantBroken):
        yield exc, flaky
    elif isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _broken(inner, flaky or isinstance(exc, FlakyFailure))


@contextlib.contextmanager
def _hypothesis_storage() -> Iterator[None]:
    """Point hypothesis' storage (its Unicode table cache) at templatekit's cache directory for the
    run, unless the user configured one; it would otherwise create ``.hypothesis/`` in the
    working directory."""
    from hypothesis import configuration

    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or getattr(configuration, "__hypothesis_home_directory", None):
        yield
        return
    from .lint.runner import cache_directory

    configuration.set_hypothesis_home_dir(cache_directory().parent / "hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(None)


# ---------------------------------------------------------------------------------------------
# the fixture file


def fixture_mapping(broken: InvariantBroken, special_tokens: dict[str, str]) -> dict[str, Any]:
    """The failing conversation as a fixture mapping. ``special_tokens`` are the tokens the checks
    rendered with that the source does not define; they go into ``kwargs`` so ``templatekit
    render`` renders exactly what was checked."""
    conversation = broken.conversation.replace(
        name=f"fuzz-{broken.invariant.split()[0]}",
        description=f"A minimal conversation that breaks {broken.invariant} (found by templatekit fuzz).",
        kwargs={**special_tokens, **broken.conversation.kwargs},
    )
    return conversation.to_mapping()


def fixture_text(broken: InvariantBroken, seed: int, source: str, template_name: str | None,
                 special_tokens: dict[str, str]) -> str:
    """The failing conversation as a fixture file (YAML, valid against the fixture schema) with
    a comment saying how to reproduce it (see ``fixture_mapping``)."""
    import yaml

    mapping = fixture_mapping(broken, special_tokens)
    body = yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False, width=100)
    again = yaml.safe_load(body)
    if again != mapping:
        # YAML is a superset of JSON: fall back to the exact form if the YAML did not round-trip.
        body = json.dumps(mapping, ensure_ascii=True, indent=2) + "\n"
    Conversation.from_mapping(json.loads(json.dumps(mapping)), "<fuzz fixture>")
    import shlex

    option = f" -t {shlex.quote(template_name)}" if template_name else ""
    explanation = " ".join(broken.explanation.split())
    # A template read from standard input has no name to give: it is read the same way again.
    from_stdin = source in ("-", "/dev/stdin")
    command = f"templatekit render {'-' if from_stdin else shlex.quote(source)}{option} -f THIS_FILE"
    command += " < TEMPLATE" if from_stdin else ""
    header = (f"# Found by templatekit fuzz (seed {seed}): {broken.invariant}\n"
              f"# {explanation}\n"
              f"# Render it: {one_line(command)}\n")
    return header + body


def write_fixture(failure: FuzzFailure, path: Path) -> None:
    """Write ``failure``'s fixture file; an unwritable path is an ``InputError``."""
    try:
        Path(path).write_text(failure.fixture_text, encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot write the fixture: {exc.strerror or exc}") from None
