"""templatekit fuzz: finds planted bugs within 200 examples, shrinks them to fixtures that reproduce
the failure, passes correct templates, is repeatable with a seed and writes nothing into the
working directory."""

from __future__ import annotations

import os

import pytest
import yaml

from templatekit.conversation import Conversation
from templatekit.fixtures import load_fixture
from templatekit.fuzz import Checker, fuzz_template

# ChatML with tools, tool calls (arguments as given, objects as JSON) and typed text parts; ``keep``
# decides which messages are printed, ``arguments`` how object arguments are.
def chatml(keep: str = "true", arguments: str = "c.function.arguments | tojson") -> str:
    return """\
{%- if tools -%}
<|im_start|>tools
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}<|im_end|>
{% endif -%}
{%- for m in messages -%}{%- if KEEP -%}
<|im_start|>{{ m.role }}
{% if m.content is string %}{{ m.content }}{% elif m.content %}{% for p in m.content if p.type == 'text' %}{{ p.text }}{% endfor %}{% endif %}
{%- for c in m.tool_calls or [] %}
<tool_call>{"name": {{ c.function.name | tojson }}, "arguments": {{ c.function.arguments if c.function.arguments is string else ARGUMENTS }}}</tool_call>
{%- endfor %}<|im_end|>
{% endif -%}{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}
""".replace("KEEP", keep).replace("ARGUMENTS", arguments)


# Plain ChatML, no tools: conversations without tools are much cheaper to draw and shrink.
def plain_chatml(keep: str = "true") -> str:
    return ("{% for m in messages %}{% if KEEP %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}").replace("KEEP", keep)


CORRECT_CHATML = chatml()
# Planted bug: a system message anywhere but first is silently left out.
LATE_SYSTEM_DROPPED = plain_chatml(keep="m.role != 'system' or loop.first")
# Planted bug: the system prompt only survives while the conversation is in its first turn.
SYSTEM_ONLY_IN_FIRST_TURN = plain_chatml(keep="m.role != 'system' or messages|length <= 2")
# Planted bug: object arguments printed directly, which is their Python repr ({'city': 'Paris'}).
ARGUMENTS_REPR = chatml(arguments="c.function.arguments")
# Not a bug: the template rejects late system messages itself.
LATE_SYSTEM_REJECTED = plain_chatml(keep="not (m.role == 'system' and not loop.first) or raise_exception('System "
                              "messages must come first.')")


@pytest.fixture
def template(tmp_path):
    def write(text, name="chat_template.jinja"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def in_empty_dir(tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def test_planted_late_system_drop_is_found_and_the_fixture_reproduces_it(template, run, tmp_path, in_empty_dir):
    source = template(LATE_SYSTEM_DROPPED)
    output = tmp_path / "found.yaml"
    result = run("fuzz", source, "--examples", "200", "--seed", "11", "--output", str(output))
    assert result.exit_code == 1, result.output
    assert "FAILED TK603 content-dropped" in result.output
    assert "(system)" in result.output

    # The printed fixture is the written one, valid against the schema and loadable by render -f.
    printed = result.output.split("minimal failing conversation:\n", 1)[1].split("wrote ", 1)[0]
    written = output.read_text(encoding="utf-8")
    assert printed == written
    conversation = load_fixture(str(output))
    late_systems = [m["content"] for i, m in enumerate(conversation.messages) if i > 0 and m["role"] == "system"]
    assert late_systems, "the minimal conversation needs a late system message"

    # Rendering it shows the loss; checking it again breaks the same invariant.
    rendered = run("render", source, "-f", str(output), "--raw")
    assert rendered.exit_code == 0
    assert late_systems[0].strip() not in rendered.output
    user_texts = [m["content"] for m in conversation.messages if m["role"] == "user"]
    assert all(text.strip() in rendered.output for text in user_texts)
    outcome = Checker(open(source, encoding="utf-8").read()).check(conversation)
    assert outcome and outcome[0] == "TK603 content-dropped"
    # Shrunk: no more than a user turn, the answer, the late system message and the next user turn
    # (plus, at most, a first system message).
    assert len(conversation.messages) <= 5
    assert not list(in_empty_dir.iterdir()), "fuzz wrote into the working directory"



def test_the_fixtures_render_command_runs_as_printed_in_a_shell(tmp_path):
    """The "Render it:" line is shell-quoted (a path with a space or a quote used to split)."""
    import shlex
    import subprocess
    import sys

    source = tmp_path / "sp ace" / "it's.jinja"
    source.parent.mkdir()
    source.write_text(LATE_SYSTEM_DROPPED, encoding="utf-8")
    result = fuzz_template(source, examples=200, seed=11)
    fixture = tmp_path / "found.yaml"
    fixture.write_text(result.failures[0].fixture_text, encoding="utf-8")
    line = next(line for line in result.failures[0].fixture_text.splitlines() if line.startswith("# Render it: "))
    command = line.removeprefix("# Render it: ").replace("THIS_FILE", shlex.quote(str(fixture)))
    argv = shlex.split(command)
    assert argv[:3] == ["templatekit", "render", str(source)]
    completed = subprocess.run([sys.executable, "-m", "templatekit", *argv[1:], "--raw"], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_late_system_drop_is_found_whatever_the_seed(template, seed):
    result = fuzz_template(template(LATE_SYSTEM_DROPPED), examples=200, seed=seed)
    assert [failure.invariant for failure in result.failures] == ["TK603 content-dropped"]


def test_every_broken_invariant_is_reported_not_only_the_first(template):
    # Two independent bugs: assistant turns are dropped (TK603), and a system message after the
    # first turn crashes the render. The search goes on after the first one it finds.
    text = ("{% for m in messages %}{% if m.role == 'system' and not loop.first %}{{ m.content.missing.deeper }}"
            "{% endif %}{% if m.role != 'assistant' %}<|{{ m.role }}|>{{ m.content }}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    result = fuzz_template(template(text), examples=200, seed=3)
    found = [failure.invariant for failure in result.failures]
    assert "render-error" in found and "TK603 content-dropped" in found
    assert len(found) == len(set(found))
    assert result.tested <= 200


def test_system_prompt_lost_after_the_first_turn_is_found(template):
    result = fuzz_template(template(SYSTEM_ONLY_IN_FIRST_TURN), examples=200, seed=4)
    assert result.failures
    assert {failure.invariant for failure in result.failures} <= {"TK603 content-dropped", "TK602 unstable-history"}
    conversation = result.failures[0].conversation
    assert conversation.messages[0]["role"] == "system" and len(conversation.messages) >= 3


def test_python_repr_of_tool_arguments_is_found(template, run):
    source = template(ARGUMENTS_REPR)
    result = fuzz_template(source, examples=200, seed=3)
    invariants = [failure.invariant for failure in result.failures]
    assert "TK604 python-repr-leak" in invariants
    failure = result.failures[invariants.index("TK604 python-repr-leak")]
    calls = [call for message in failure.conversation.messages for call in message.get("tool_calls") or ()]
    assert calls and all(isinstance(call["function"]["arguments"], dict) for call in calls)
    fixture = Conversation.from_mapping(yaml.safe_load(failure.fixture_text))
    rendered = run("render", source, "-f", _write(failure.fixture_text, source + ".found.yaml"), "--raw")
    assert "{'" in rendered.output or "{}" in rendered.output
    assert Checker(ARGUMENTS_REPR).check(fixture)[0] == "TK604 python-repr-leak"


def test_correct_chatml_passes_200_examples(template, run, in_empty_dir):
    result = run("fuzz", template(CORRECT_CHATML), "--examples", "200", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "no invariant broken in 200 example(s)" in result.output
    assert "with system messages, tool definitions, tool calls" in result.output
    assert not list(in_empty_dir.iterdir())


def test_a_template_that_raises_on_what_it_does_not_support_passes(template):
    result = fuzz_template(template(LATE_SYSTEM_REJECTED), examples=200, seed=2)
    assert result.ok, [(failure.invariant, failure.explanation) for failure in result.failures]
    assert 0 < result.declined < result.tested


def test_a_template_that_crashes_on_valid_input_is_reported(template):
    # Concatenating content crashes on the null content of tool-call turns.
    crashing = CORRECT_CHATML.replace("{% if m.content is string %}{{ m.content }}",
                                      "{% if m.content is string or m.tool_calls %}{{ m.content + '' }}")
    result = fuzz_template(template(crashing), examples=200, seed=1)
    assert result.failures[0].invariant == "render-error"
    assert "render error" in result.failures[0].explanation
    # Placed in the user's file, not in Jinja's name for a template made from text.
    assert result.failures[0].explanation.startswith(f"{template(crashing)}:")
    assert "<template>" not in result.failures[0].explanation


def test_continue_final_message_refused_by_transformers_is_tk609_not_a_render_error():
    # Upper-cases assistant text: with continue_final_message transformers cannot find the final
    # message in the render and refuses the input; without it the same messages render.
    text = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content|upper if m.role == 'assistant' else m.content }}"
            "<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    checker = Checker(text)
    prefill = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure, the"}],
                           continue_final_message=True)
    invariant, _summary, explanation = checker.check(prefill)
    assert invariant == "TK609 continue-final-message-broken"
    assert explanation.startswith("continue_final_message fails: invalid input: continue_final_message is set")
    # Once reported, it is not reported again as a render error.
    assert checker.check(prefill, skip=frozenset({invariant})) is None


def test_a_tool_template_that_fails_without_tools_is_found(template):
    # Loops over tools with no None check (Phi-4-mini's shape): every chat without tools fails.
    text = "{% for t in tools %}{{ t.function.name }}\n{% endfor %}" + CORRECT_CHATML
    result = fuzz_template(template(text), examples=100, seed=1)
    assert "render-error" in [failure.invariant for failure in result.failures]
    (failure,) = [failure for failure in result.failures if failure.invariant == "render-error"]
    assert failure.conversation.tools is None


def test_same_seed_same_report(template, run):
    source = template(LATE_SYSTEM_DROPPED)
    first = run("fuzz", source, "-n", "200", "--seed", "123")
    second = run("fuzz", source, "-n", "200", "--seed", "123")
    assert first.exit_code == second.exit_code == 1
    assert first.output == second.output


def test_without_a_seed_the_chosen_one_is_printed(template, run):
    result = run("fuzz", template(CORRECT_CHATML), "-n", "5")
    assert result.exit_code == 0
    assert ", seed " in result.output.splitlines()[0]


@pytest.mark.parametrize("args, problem", [
    (["missing.jinja"], "no such file"),
    (["{bad}", "-n", "5"], "does not compile"),
    (["{deep}", "-n", "5"], "nested too deeply to compile"),
    (["{good}", "-t", "tool_use"], "no template named"),
    (["{good}", "-n", "0"], "0 is not in the range"),
])
def test_bad_input_exits_2_with_one_line(template, run, args, problem):
    paths = {"{bad}": template("{% for m in messages %}{{ m.content }", "bad.jinja"),
             "{deep}": template("{{ x" + " and x" * 3000 + " }}" + CORRECT_CHATML, "deep.jinja"),
             "{good}": template(CORRECT_CHATML)}
    result = run("fuzz", *[paths.get(arg, arg) for arg in args])
    assert result.exit_code == 2
    assert problem in result.output
    assert "Traceback" not in result.output


def _write(text, path):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def test_fuzz_module_is_not_imported_by_lint():
    import subprocess
    import sys

    code = ("import sys, templatekit.cli, templatekit.lint.runner; "
            "print(sorted(m for m in ('hypothesis', 'templatekit.fuzz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.stdout.strip() == "[]"


# Loops 10**10 times before it prints anything: every render spends its whole time budget.
SPENDS_ITS_TIME = ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
                   + CORRECT_CHATML)
# Prints a megabyte per message: fine for short conversations, over the output budget for long ones.
FLOODS_LONG_CONVERSATIONS = plain_chatml().replace(
    "{% for m in messages %}", "{% for m in messages %}{% if loop.index > 3 %}{{ 'x' * 2000000 }}{% endif %}")


def test_a_template_whose_probe_spends_its_budget_is_not_fuzzed(template, run):
    result = run("fuzz", template(SPENDS_ITS_TIME), "-n", "50", "--seed", "1")
    assert result.exit_code == 1
    assert "not fuzzed: the capability probe's render 'probe:" in result.stderr
    assert "time budget" in result.stderr
    assert "no example run" in result.stdout
    data = fuzz_template(template(SPENDS_ITS_TIME), examples=50, seed=1)
    assert data.tested == 0 and not data.ok and data.stopped["probe"].startswith("probe:")


def test_renders_over_budget_are_counted_apart_from_declined_ones(template):
    result = fuzz_template(template(FLOODS_LONG_CONVERSATIONS), examples=60, seed=4)
    assert result.over_budget > 0 and result.declined == 0
    assert result.stopped is None


def test_plain_conversation_failure_is_not_a_fuzz_invariant():
    # A drawn conversation that fails to render is fuzzing's own render-error already.
    from templatekit.fuzz import Checker

    invariants = Checker("{% for m in messages %}{{ m.content }}{% endfor %}").invariants
    assert invariants[0] == "render-error" and not any(name.startswith("TK616") for name in invariants)


def test_a_note_level_finding_breaks_no_invariant():
    # TK601 only notes (info) that an [INST] ... [/INST] format needs no generation prompt.
    from templatekit.conversation import Conversation
    from templatekit.fuzz import Checker

    inst = ("{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
            "{% else %}{{ m.content }}</s>{% endif %}{% endfor %}")
    chat = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                         {"role": "user", "content": "Bye"}], add_generation_prompt=True)
    assert Checker(inst).check(chat) is None


# DeepSeek-V3's layout: tool calls and results render, tool definitions never do.
CALLS_WITHOUT_TOOL_LIST = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content or '' }}{% for c in m.tool_calls or [] %}"
    "<call>{{ c.function.name }}:{{ c.function.arguments|tojson }}</call>{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# Written for typed parts only: checked with its contents as parts, a dropped late system
# message is found as it is in a template for strings.
PARTS_ONLY_FIRST_SYSTEM = (
    "{% for m in messages %}{% if m.role != 'system' or loop.first %}<|{{ m.role }}|>"
    "{% for p in m.content %}{{ p.text }}{% endfor %}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize("text, seed, shape, invariant", [
    (CALLS_WITHOUT_TOOL_LIST, 1, {"tool_calls": True, "tools": False}, "TK605 tool-arguments-shape"),
    (PARTS_ONLY_FIRST_SYSTEM, 2, {"system": None, "typed_content": True}, "TK603 content-dropped"),
], ids=["tool-calls-without-a-tool-list", "typed-parts-only"])
def test_conversations_are_drawn_in_the_shape_the_template_renders(template, text, seed, shape, invariant):
    result = fuzz_template(template(text), examples=200, seed=seed)
    assert {key: result.shape[key] for key in shape} == shape
    assert invariant in {failure.invariant for failure in result.failures}


# LFM2's pythonic calls: a Python literal inside `name(...)` is the call syntax, not a repr.
PYTHONIC_CALLS = (
    "{% for m in messages %}<|{{ m.role }}|>{% if m.tool_calls %}[{% for c in m.tool_calls %}{{ c.function.name }}("
    "{% for k, v in c.function.arguments|items %}{{ k }}={{ v if v is not string else \"'\" ~ v ~ \"'\" }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}){% endfor %}]{% else %}{{ m.content }}{% endif %}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _call_with(arguments: dict) -> Conversation:
    return Conversation([
        {"role": "user", "content": "Find jackets."},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3 found"},
    ], tools=[{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}])


def test_python_literals_in_a_pythonic_tool_call_are_not_a_repr_leak():
    checked = Checker(PYTHONIC_CALLS).check(_call_with({"query": "jackets (rain)", "in_stock": False, "limit": None}))
    assert checked is None or checked[0] != "TK604 python-repr-leak"
    # The same constant outside the call is still a leak.
    leaking = PYTHONIC_CALLS.replace("<|end|>", "{{ ' done=' ~ (m.tool_calls is defined) }}<|end|>", 1)
    assert Checker(leaking).check(_call_with({"query": "jackets"}))[0] == "TK604 python-repr-leak"


# Qwen3's history rule: an assistant's content keeps only what follows its reasoning's end.
STRIPS_REASONING = (
    "{% for m in messages %}<|{{ m.role }}|>{% if m.role == 'assistant' and '</think>' in m.content %}"
    "{{ m.content.split('</think>')[-1].lstrip() }}{% else %}{{ m.content }}{% endif %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_reasoning_a_template_strips_from_assistant_content_is_not_dropped_content():
    conversation = Conversation([{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Greet back.</think>\n\nHello!"},
                                 {"role": "user", "content": "Bye"}])
    checked = Checker(STRIPS_REASONING).check(conversation)
    assert checked is None or checked[0] != "TK603 content-dropped"
    # Dropping the answer after it too is still dropped content.
    dropping = STRIPS_REASONING.replace("{{ m.content.split('</think>')[-1].lstrip() }}", "")
    assert Checker(dropping).check(conversation)[0] == "TK603 content-dropped"
