"""Capability probing with needles, declarations in config and comments, and fixture skipping."""

from __future__ import annotations

import json

import pytest

from templatekit.behaviour import Behaviour, behaviour_of
from templatekit.capabilities import (
    CAPABILITY_NAMES,
    capabilities_data,
    capability_note,
    comment_problems,
    declared_in_template,
    format_capabilities,
    read_declarations,
)
from templatekit.conversation import Conversation
from templatekit.lint.config import CAPABILITIES, LintConfig
from templatekit.lint.engine import run_rules
from templatekit.lint.registry import find_rule
from templatekit.lint.target import LintTarget

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
FULL = (
    "{% if tools %}{{ tools|tojson }}{% endif %}"
    "{% for d in documents or [] %}{{ d.title }}: {{ d.text }}{% endfor %}"
    "{% for m in messages %}<|{{ m.role }}|>"
    "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content or [] %}{{ p.text }}{% endfor %}{% endif %}"
    "{% for c in m.tool_calls or [] %}<call id={{ c.id }}>{{ c.function.name }} "
    "{{ c.function.arguments if c.function.arguments is string else c.function.arguments|tojson }}</call>{% endfor %}"
    "{% if m.role == 'assistant' %}{% generation %}<|end|>{% endgeneration %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_names_match_the_config_vocabulary():
    assert tuple(CAPABILITY_NAMES) == tuple(CAPABILITIES)


def test_plain_chat_template_supports_system_only():
    values = Behaviour(CHATML).capabilities.values
    assert values["system"] and values["generation_prompt"]
    for name in ("tools", "tool_calls", "parallel_tool_calls", "documents", "typed_content", "reasoning",
                 "generation_tag"):
        assert values[name] is False, name


def test_printing_tool_definitions_is_not_rendering_tool_calls():
    # The argument needle is also the parameter name in the probe's tool schema: a template that
    # prints the schema but drops the assistant's calls (LFM2, Granite 3.x) must not count as
    # rendering tool calls, or every tool-call fixture is checked against a template without them.
    schema_only = CHATML.replace("{% for m in messages %}",
                                 "{% if tools %}<|im_start|>system\n{{ tools|tojson }}<|im_end|>\n{% endif %}"
                                 "{% for m in messages %}", 1)
    values = Behaviour(schema_only).capabilities.values
    assert values["tools"] is True
    assert values["tool_calls"] is False


def test_tool_calls_are_found_in_a_template_that_wants_an_answer_after_tool_results():
    # Mistral's templates raise when a user turn directly follows tool results (minja's probe
    # shape); they render tool calls fine in the conversation a client sends before the answer.
    strict = FULL.replace("{% for m in messages %}", (
        "{% for m in messages %}{% if m.role == 'user' and not loop.first and messages[loop.index0 - 1].role == 'tool' %}"
        "{{ raise_exception('an assistant turn must follow tool results') }}{% endif %}"), 1)
    values = Behaviour(strict).capabilities.values
    assert values["tool_calls"] and values["parallel_tool_calls"] and values["tool_responses"], values
    # A template that raises on every tool call is still judged to have none.
    refusing = FULL.replace("{% for c in m.tool_calls or [] %}",
                            "{% for c in m.tool_calls or [] %}{{ raise_exception('no tools') }}", 1)
    assert Behaviour(refusing).capabilities.values["tool_calls"] is False


def test_full_featured_template_supports_everything():
    capabilities = Behaviour(FULL).capabilities
    assert all(capabilities.values.values()), capabilities.values


def test_system_that_raises_and_system_that_is_dropped_are_told_apart():
    raises = Behaviour("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no') }}{% endif %}"
                       "{{ m.content }}{% endfor %}").capabilities
    dropped = Behaviour("{% for m in messages if m.role != 'system' %}{{ m.content }}{% endfor %}").capabilities
    assert raises.facts["system"] == "raises" and dropped.facts["system"] == "dropped"


def test_string_arguments_only_is_recorded():
    template = ("{% for t in tools or [] %}{{ t.function.name }}{% endfor %}{% for m in messages %}{{ m.content }}"
                "{% for c in m.tool_calls or [] %}{{ c.function.name }} {{ c.function.arguments|tojson }}{% endfor %}"
                "{% endfor %}")
    assert Behaviour(template).capabilities.values["tool_calls"] is True


def test_comment_declarations_override_probing_and_config_overrides_comment():
    text = "{# templatekit: capabilities tools=false documents=true #}" + FULL
    assert declared_in_template(text) == {"tools": False, "documents": True}
    capabilities = Behaviour(text, config_capabilities={"documents": False}).capabilities
    assert capabilities.values["tools"] is False and capabilities.sources["tools"] == "comment"
    assert capabilities.values["documents"] is False and capabilities.sources["documents"] == "config"


def test_comment_problems_are_explained():
    problems = comment_problems("{# templatekit: capabilities tool=false system=maybe junk #}")
    assert any("unknown capability 'tool'" in p for p in problems)
    assert any("'system' must be true or false" in p for p in problems)
    assert any("'junk'" in p for p in problems)


@pytest.mark.parametrize("text", [
    "{% raw %}{# templatekit: capabilities system=false #}{% endraw %}",   # printed text
    "{{ '{# templatekit: capabilities system=false #}' if false else '' }}",  # a string literal
    "{{ x }}{# templatekit: capabilities my-system=false #}",                # a longer name
], ids=["raw", "string", "prefixed-name"])
def test_only_real_comments_declare_and_only_whole_names(text):
    assert declared_in_template(text) == {}
    assert Behaviour(text + CHATML).capabilities.supports("system")


def test_declaration_settings_are_separated_by_spaces_or_commas():
    text = "{#- templatekit:capabilities tools = false,documents=FALSE -#}" + CHATML
    assert declared_in_template(text) == {"tools": False, "documents": False}
    assert read_declarations(text).problems == ()


def test_a_template_that_does_not_lex_is_read_up_to_where_lexing_fails():
    assert declared_in_template("{# templatekit: capabilities tools=false #}{{ 'unclosed") == {"tools": False}
    assert declared_in_template("{# templatekit: capabilities tools=false") == {}
    assert read_declarations("{# templatekit: capabilities tools=false").problems == ()


def test_declaration_problems_carry_the_comment_position():
    text = "{{ x }}\n  {# templatekit: capabilities tols=false tools=0 #}\n{# templatekit: capability system=false #}"
    problems = read_declarations(text).problems
    assert [(p.line, p.column) for p in problems] == [(2, 3), (2, 3), (3, 1)]
    assert "unknown capability 'tols' (did you mean 'tools'?)" in problems[0].message
    assert "'tools' must be true or false, got '0'" in problems[1].message
    assert "'capability' is not 'capabilities'" in problems[2].message


def test_conflicting_declarations_are_a_problem_and_the_last_one_counts():
    text = "{# templatekit: capabilities system=false #}{# templatekit: capabilities system=true #}"
    assert declared_in_template(text) == {"system": True}
    (problem,) = read_declarations(text).problems
    assert problem.column == 45 and "declared false (at 1:1) and true" in problem.message


def test_an_overlong_setting_is_shortened_in_the_problem():
    (problem,) = read_declarations("{# templatekit: capabilities " + "a" * 5000 + "=false #}").problems
    assert "'" + "a" * 40 + "...'" in problem.message and "a" * 41 not in problem.message


def test_invalid_declarations_are_lint_findings_in_the_file(run, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{# templatekit: capabilities tols=false #}\n" + CHATML, encoding="utf-8")
    result = run("lint", "--no-cache", "--select", "TK092", str(template))
    assert result.exit_code == 1, result.output
    assert f"{template}:1:1: TK092 [warning] invalid-capability-declaration: unknown capability 'tols'" in result.output


def test_capabilities_command_lists_declaration_problems(run, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{# templatekit: capabilities tols=false #}\n" + CHATML, encoding="utf-8")
    text = run("capabilities", str(template))
    assert text.exit_code == 0
    assert "capability declaration problems" in text.output
    assert f"  {template}:1:1: unknown capability 'tols' (did you mean 'tools'?); ignored" in text.output
    entry = json.loads(run("capabilities", str(template), "--format", "json").output)["templates"][0]
    assert entry["declaration_problems"] == [
        {"line": 1, "column": 1, "message": "unknown capability 'tols' (did you mean 'tools'?); ignored",
         "location": f"{template}:1:1"}]
    assert entry["capabilities"]["tools"]["source"] == "probed"


def test_capabilities_command_names_the_template_a_problem_is_in(run, tmp_path):
    """A template embedded in a tokenizer_config.json is named with its file, as lint names the
    location of its findings: a bare line:column would not say where to look."""
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": CHATML + "\n  {# templatekit: capabilities tols=false #}"}),
                      encoding="utf-8")
    line = CHATML.count("\n") + 2
    assert f"  {config}[default]:{line}:3: unknown capability 'tols'" in run("capabilities", str(config)).output


# Renders the tool definitions it is declared not to support.
STALE = "{# templatekit: capabilities tools=false #}\n{% if tools %}{{ tools|tojson }}{% endif %}" + CHATML


def test_a_declaration_the_probe_contradicts_is_kept_and_noted():
    behaviour = Behaviour(STALE)
    capabilities = behaviour.capabilities
    assert capabilities.supports("tools") is False and capabilities.sources["tools"] == "comment"
    assert capabilities.probed["tools"] is True and capabilities.contradicted() == ["tools"]
    # The declared skip is still a skip, listed as not evaluated.
    assert dict(behaviour.not_evaluated())["tool-definitions"] == ["tools"]
    data = capabilities_data(capabilities, behaviour.not_evaluated())
    assert data["capabilities"]["tools"]["source"] == "comment"
    assert data["capabilities"]["tools"]["note"].startswith("the probe found it supported")
    assert {"fixture": "tool-definitions", "needs": ["tools"]} in data["not_evaluated"]
    table = format_capabilities(capabilities, behaviour.not_evaluated())
    assert "(comment)  - the probe found it supported" in table
    # A declared gap the probe agrees with gets no such note.
    agreed = Behaviour("{# templatekit: capabilities documents=false #}" + CHATML).capabilities
    assert agreed.contradicted() == [] and "probe found" not in format_capabilities(agreed)


def test_a_stale_declaration_is_a_lint_finding_at_the_comment(run, tmp_path):
    template = tmp_path / "stale.jinja"
    template.write_text("{{- '' -}}\n  " + STALE, encoding="utf-8")
    result = run("lint", "--no-cache", "--format", "json", str(template))
    (finding,) = [d for d in json.loads(result.output)["diagnostics"] if d["code"] == "TK615"]
    assert (finding["line"], finding["column"]) == (2, 3)
    assert "declares tools=false, but probing shows the template renders tool definitions" in finding["message"]
    assert "tool-definitions" in finding["message"]


def test_a_stale_config_declaration_is_reported_on_line_one():
    rule = find_rule("TK615")()
    text = "{% if tools %}{{ tools|tojson }}{% endif %}\n" + CHATML
    (finding,) = run_rules(LintTarget(text, config=LintConfig(capabilities={"tools": False})), [rule])
    assert (finding.line, finding.column) == (1, 1)
    assert finding.message.startswith("the config's capabilities table declares tools=false")
    assert run_rules(LintTarget(text), [rule]) == []


def test_capability_comment_is_not_an_invalid_suppression():
    rule = find_rule("TK091")
    text = "{# templatekit: capabilities tools=false #}{{ messages[0].content }}"
    assert [d for d in run_rules(LintTarget(text), [rule()]) if d.code == "TK091"] == []


def test_fixtures_needing_missing_capabilities_are_skipped_and_listed():
    behaviour = Behaviour(CHATML)
    evaluated = {fixture.name for fixture in behaviour.evaluated()}
    skipped = dict(behaviour.not_evaluated())
    assert "tool-call" not in evaluated and "tool-call" in skipped
    assert "basic" in evaluated and "basic" not in skipped
    assert set(skipped["tool-call"]) == {"tool_calls"}  # ChatML prints tool results
    assert evaluated | set(skipped) == {fixture.name for fixture in behaviour.fixtures}


def test_config_capabilities_reach_the_rules_through_the_target():
    target = LintTarget(FULL, config=LintConfig(capabilities={"tools": False}))
    assert behaviour_of(target).capabilities.supports("tools") is False
    assert "tool-definitions" in dict(behaviour_of(target).not_evaluated())


def test_declared_gaps_are_not_listed_as_news():
    rule = find_rule("TK614")()
    declared = ("{# templatekit: capabilities tools=false tool_calls=false parallel_tool_calls=false "
                "tool_responses=false tool_call_id=false documents=false typed_content=false reasoning=false #}")
    assert run_rules(LintTarget(declared + CHATML), [rule]) == []
    assert run_rules(LintTarget(CHATML), [rule])


def test_format_capabilities_lists_every_capability_and_the_skipped_fixtures():
    behaviour = Behaviour(CHATML)
    text = format_capabilities(behaviour.capabilities, behaviour.not_evaluated())
    for name in CAPABILITY_NAMES:
        assert name in text
    assert "not evaluated" in text and "tool-call: needs" in text


@pytest.mark.parametrize("text, problem", [
    ("{% for m in messages %}{{ m.content }", "unexpected '}'"),
    ("{{ x" + " and x" * 3000 + " }}" + CHATML, "nested too deeply to compile"),
])
def test_capabilities_of_a_template_that_does_not_compile_is_an_input_error(run, tmp_path, text, problem):
    # Every probe fails on such a template: a table of "no" would be a wrong answer.
    template = tmp_path / "broken.jinja"
    template.write_text(text, encoding="utf-8")
    result = run("capabilities", str(template))
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "the template does not compile" in result.output and problem in result.output


# Every render of this runs out of its time budget: two nested loops of 10**5 (each under the
# sandbox's range limit) take hours.
ENDLESS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}" + CHATML
# Prints a billion characters for any conversation: every render fills its whole output budget
# (about 0.15 s for lint's) before it fails, 44 renders and 7 s per lint before probing stopped.
FLOOD = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}" + CHATML


@pytest.mark.parametrize("text, spent", [(ENDLESS, "whole time budget"), (FLOOD, "whole output or memory budget")],
                         ids=["time", "output"])
def test_a_probe_that_spends_a_whole_budget_stops_the_probing_and_every_check(text, spent):
    target = LintTarget(text)
    behaviour = behaviour_of(target)
    rules = [find_rule(f"TK6{number:02d}")() for number in range(1, 15)]
    (finding,) = run_rules(target, rules)
    assert finding.code == "TK614"
    assert finding.message.startswith("not evaluated: every behavioural check (TK6xx)")
    assert "probe:" in finding.message and spent in finding.message
    # One render paid the budget, instead of one for every probe and fixture (dozens).
    assert behaviour.render_count == 1


def test_a_value_over_a_size_limit_does_not_stop_the_checks():
    # Refused before it is built, so it costs nothing to meet again: the other checks still run.
    text = "{{ messages[0].content * 99999999 if messages|length > 3 else '' }}" + CHATML
    target = LintTarget(text)
    behaviour = behaviour_of(target)
    codes = {d.code for d in run_rules(target, [find_rule(f"TK6{number:02d}")() for number in range(1, 15)])}
    assert behaviour.spent_budget is None
    # The notes a plain ChatML template gets: skipped fixtures, and typed parts printed as a repr.
    assert behaviour.render_count > 20 and codes == {"TK614", "TK608"}


def test_capabilities_says_when_probing_stopped(run, tmp_path):
    template = tmp_path / "endless.jinja"
    template.write_text(ENDLESS, encoding="utf-8")
    result = run("capabilities", str(template))
    assert result.exit_code == 1
    assert f"templatekit: {template}: probing stopped at 'probe:" in result.output
    assert f"': {template}:1: " in result.output and "<template>" not in result.output
    # Nothing rendered, so no capability reads as lacking: each is unknown, and says why.
    rows = [line for line in result.stdout.splitlines() if line.split(" ", 1)[0] in CAPABILITY_NAMES]
    assert len(rows) == len(CAPABILITY_NAMES)
    assert all(row.split()[1] == "?" and "unknown: every probe render fails" in row for row in rows), rows


# ---------------------------------------------------------------------------------------------
# what a probe reads when a render fails, and parallel calls told from printed tool names

# Prints every tool definition and names each tool result, but never an assistant's tool calls.
CALLS_DROPPED = (
    "{% if tools %}{{ tools|tojson }}{% endif %}"
    "{% for m in messages %}<|{{ m.role }}{% if m.name %} {{ m.name }}{% endif %}|>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Renders only the first call of a turn (as gpt-oss's template does), silently dropping the rest.
FIRST_CALL_ONLY = FULL.replace("{% for c in m.tool_calls or [] %}", "{% for c in (m.tool_calls or [])[:1] %}", 1)


def test_tool_names_in_the_definitions_do_not_make_parallel_calls():
    # The parallel probe's tool names reach the output through the definitions and the results'
    # names, yet no call is rendered: several calls in one turn cannot be supported without one.
    values = Behaviour(CALLS_DROPPED).capabilities.values
    assert values["tools"] is True and values["tool_responses"] is True
    assert values["tool_calls"] is False
    assert values["parallel_tool_calls"] is False


def test_a_template_that_renders_only_the_first_call_has_no_parallel_calls():
    behaviour = Behaviour(FIRST_CALL_ONLY)
    values = behaviour.capabilities.values
    assert values["tool_calls"] is True and values["parallel_tool_calls"] is False
    assert dict(behaviour.not_evaluated())["parallel-tool-calls"] == ["parallel_tool_calls"]
    assert Behaviour(FULL).capabilities.values["parallel_tool_calls"] is True


def test_parallel_calls_with_ids_of_nine_characters_are_found():
    # Mistral's templates raise unless every tool call id is nine characters long.
    strict = FULL.replace("{% for c in m.tool_calls or [] %}", (
        "{% for c in m.tool_calls or [] %}{% if c.id|length != 9 %}"
        "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}"), 1)
    values = Behaviour(strict).capabilities.values
    assert values["tool_calls"] is True and values["parallel_tool_calls"] is True


# Fails on every conversation without tools (transformers passes tools=None), as Phi-4-mini's and
# Hermes 2 Pro's tool templates do; renders everything else once tools are given.
NEEDS_TOOLS = "{% for t in tools %}{% endfor %}" + FULL
# Fails on every conversation without documents, as Command-R's RAG template does; drops tools.
NEEDS_DOCUMENTS = (
    "{% for d in documents %}[{{ d.text }}]{% endfor %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Rejects a lone user message, whatever else is passed: nothing makes the plain probe render.
NEEDS_TWO_MESSAGES = "{% if messages|length < 2 %}{{ raise_exception('send at least two messages') }}{% endif %}" + FULL
# Fails on every conversation: setting an attribute on a message is refused by Jinja.
FAILS_ALWAYS = ("{% for m in messages %}{% set m.seen = 1 %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_a_probe_whose_baseline_fails_too_is_unknown_not_raises():
    behaviour = Behaviour(NEEDS_TWO_MESSAGES)
    capabilities = behaviour.capabilities
    # The system probe sends two messages and shows its needle: proof, whatever its baseline does.
    assert capabilities.values["system"] is True
    for name in ("tools", "documents", "typed_content", "generation_prompt"):
        assert capabilities.values[name] is None, name
        assert capabilities.unknown(name) and capabilities.supports(name), name
    assert capabilities.facts["tools"] == "unknown: the probe without it (a plain user turn) fails too"
    assert capability_note(capabilities, "tools") == (
        "unknown: the probe without it (a plain user turn) fails too: "
        "<template>:1: template raised: send at least two messages")
    # Checks render the fixtures needing them (where the template's failure shows) instead of
    # listing them as not evaluated for a capability the template was never shown to lack.
    assert "tool-definitions" not in dict(behaviour.not_evaluated())
    assert "tool-definitions" in {fixture.name for fixture in behaviour.evaluated()}


def test_a_template_that_needs_tools_passed_is_probed_with_them():
    behaviour = Behaviour(NEEDS_TOOLS)
    capabilities = behaviour.capabilities
    assert capabilities.values["tools"] is True and capabilities.values["tool_calls"] is True
    for name in ("system", "documents", "typed_content", "reasoning", "generation_prompt"):
        assert capabilities.values[name] is True, name
        assert capability_note(capabilities, name) == (
            "probed with tool definitions passed, without which a plain user turn fails"), name
    assert capability_note(capabilities, "tools") == ""
    assert "system-multi-turn" in {fixture.name for fixture in behaviour.evaluated()}


def test_a_template_that_needs_documents_passed_reads_the_tools_it_drops_as_no():
    behaviour = Behaviour(NEEDS_DOCUMENTS)
    capabilities = behaviour.capabilities
    assert capabilities.values["documents"] is True
    assert capabilities.values["system"] is True
    # Passed documents and tools, it prints no tool: a "no", where without documents it was unknown.
    assert capabilities.values["tools"] is False
    assert capabilities.facts["tools"] == "probed with documents passed, without which a plain user turn fails"
    assert "tool-definitions" in dict(behaviour.not_evaluated())


def test_tool_definitions_printed_as_a_python_repr_do_not_make_typed_content_look_unsupported():
    # The context's tools print as a repr ({'type': 'function', ...}); typed parts render as text.
    template = "{{ tools|string }}" + FULL
    assert "{'type'" in Behaviour(template).render_fresh(Conversation([{"role": "user", "content": "hi"}],
                                                                      tools=[{"type": "function"}])).text
    assert Behaviour(template).capabilities.values["typed_content"] is True
    # A template that prints the typed list itself as a repr still reads "no".
    assert Behaviour("{{ tools|string }}" + CHATML).capabilities.values["typed_content"] is False


def test_every_probe_failing_makes_every_capability_unknown():
    capabilities = Behaviour(FAILS_ALWAYS).capabilities
    assert all(capabilities.values[name] is None for name in CAPABILITY_NAMES), capabilities.values
    assert capability_note(capabilities, "tools") == (
        "unknown: every probe render fails: <template>:1: render error (TemplateRuntimeError): "
        "cannot assign attribute on non-namespace object")
    assert Behaviour(FAILS_ALWAYS).not_evaluated() == []
    # A declaration still decides, and an unknown probe does not contradict it.
    declared = Behaviour("{# templatekit: capabilities tools=false #}" + FAILS_ALWAYS).capabilities
    assert declared.values["tools"] is False and declared.probed["tools"] is None
    assert declared.contradicted() == []


def test_the_lint_does_not_skip_fixtures_for_a_capability_it_could_not_tell():
    rule = find_rule("TK614")()
    # Before, these read as lacking the system role (and FAILS_ALWAYS as lacking every feature).
    [note] = run_rules(LintTarget(FAILS_ALWAYS), [rule])
    assert "because the render of every fixture fails" in note.message and "needs" not in note.message
    assert run_rules(LintTarget(NEEDS_TOOLS), [rule]) == []


@pytest.mark.parametrize("name, template, error", [
    ("tools", FULL.replace("{% if tools %}", "{% if tools %}{{ raise_exception('no tools here') }}", 1),
     "template raised: no tools here"),
    ("documents", FULL.replace("{% for d in documents or [] %}",
                               "{% for d in documents or [] %}{{ raise_exception('no documents') }}", 1),
     "template raised: no documents"),
    ("typed_content", CHATML.replace("{{ m.content }}", "{{ m.content + '' }}"),
     'render error (TypeError): can only concatenate list (not "str") to list'),
    ("reasoning", FULL.replace("{% if m.reasoning_content %}",
                               "{% if m.reasoning_content %}{{ raise_exception('no reasoning') }}", 1),
     "template raised: no reasoning"),
    ("generation_prompt", CHATML.replace("<|im_start|>assistant\n{% endif %}",
                                         "{{ raise_exception('prompt') }}{% endif %}"),
     "template raised: prompt"),
], ids=["tools", "documents", "typed_content", "reasoning", "generation_prompt"])
def test_a_probe_that_raises_where_its_baseline_renders_says_raises(name, template, error):
    capabilities = Behaviour(template).capabilities
    assert capabilities.values[name] is False
    assert capabilities.facts[name] == "raises"
    note = capability_note(capabilities, name)
    assert note.startswith("raises: <template>:") and note.endswith(error), note


def test_capabilities_that_need_a_raising_one_raise_too():
    # Tool calls and results come with tool definitions: when those raise, nothing can show them.
    template = FULL.replace("{% if tools %}", "{% if tools %}{{ raise_exception('no tools here') }}", 1)
    capabilities = Behaviour(template).capabilities
    for name in ("tools", "tool_calls", "parallel_tool_calls", "tool_responses", "tool_call_id"):
        assert capabilities.values[name] is False and capabilities.facts[name] == "raises", name
    # Several calls in one turn refused, one call rendered: parallel calls raise, calls do not.
    single = FULL.replace("{% for c in m.tool_calls or [] %}", (
        "{% if (m.tool_calls or [])|length > 1 %}{{ raise_exception('one call at a time') }}{% endif %}"
        "{% for c in m.tool_calls or [] %}"), 1)
    capabilities = Behaviour(single).capabilities
    assert capabilities.values["tool_calls"] is True and "tool_calls" not in capabilities.failures
    assert capability_note(capabilities, "parallel_tool_calls") == (
        "raises: <template>:1: template raised: one call at a time")


def test_the_generation_tag_is_unknown_only_when_no_assistant_turn_renders():
    no_answers = CHATML.replace("{% for m in messages %}", (
        "{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('no answers') }}{% endif %}"), 1)
    capabilities = Behaviour(no_answers).capabilities
    assert capabilities.values["system"] is True
    assert capabilities.values["generation_tag"] is None and capabilities.values["reasoning"] is None
    assert capability_note(capabilities, "generation_tag") == (
        "unknown: no probe with an assistant turn renders: <template>:1: template raised: no answers")
    assert capability_note(capabilities, "reasoning").startswith(
        "unknown: the probe without it (a user turn and an assistant answer) fails too")


def test_capabilities_command_shows_unknown_alike_in_text_and_json(run, tmp_path):
    template = tmp_path / "needs_two.jinja"
    template.write_text(NEEDS_TWO_MESSAGES, encoding="utf-8")
    text = run("capabilities", str(template))
    assert text.exit_code == 0
    (tools,) = [line for line in text.output.splitlines() if line.startswith("tools ")]
    assert tools.split()[1] == "?"
    assert f"unknown: the probe without it (a plain user turn) fails too: {template}:1: template raised" in tools
    assert "<template>" not in text.output
    assert "tool-definitions" not in text.output
    entry = json.loads(run("capabilities", str(template), "--format", "json").output)["templates"][0]
    found = entry["capabilities"]["tools"]
    assert found["supported"] is None and found["source"] == "probed"
    assert found["note"] == tools.split("  - ", 1)[1]
    assert entry["capabilities"]["system"]["supported"] is True


def test_capabilities_command_says_what_it_passed_to_a_template_that_needs_tools(run, tmp_path):
    template = tmp_path / "needs_tools.jinja"
    template.write_text(NEEDS_TOOLS, encoding="utf-8")
    output = run("capabilities", str(template)).output
    (system,) = [line for line in output.splitlines() if line.startswith("system ")]
    assert system.split()[1] == "yes"
    assert system.endswith("- probed with tool definitions passed, without which a plain user turn fails")


def test_every_probe_failing_names_each_capabilitys_own_failure():
    # Probes fail in different places: the tools row must not quote the plain turn's error.
    text = ("{% if tools %}{% for t in tools %}{{ t.function.parameters.missing.deeper }}{% endfor %}{% endif %}\n"
            "{% for d in documents %}{{ d.title }}{% endfor %}\n"
            "{{ messages[0].content + nothing.here }}")
    found = Behaviour(text).capabilities
    assert all(value is None for value in found.values.values())
    assert capability_note(found, "tools").startswith("unknown: every probe render fails: <template>:1: ")
    assert capability_note(found, "system").startswith("unknown: every probe render fails: <template>:2: ")


def test_a_template_that_prints_each_parameters_description_reads_tools_yes():
    # gpt-oss-style tool lists concatenate every parameter's description; a bare probe tool made
    # them raise, so tools read "no" and lint skipped every tool fixture.
    text = ("{% for t in tools or [] %}{{ t.function.name }}"
            "{% for name, spec in t.function.parameters.properties.items() %}{{ '// ' + spec.description }}{% endfor %}"
            "{% endfor %}" + CHATML)
    capabilities = Behaviour(text).capabilities
    assert capabilities.values["tools"] is True
    assert "tool-definitions" not in dict(Behaviour(text).not_evaluated())


# Names each result's tool by finding the call with the result's id; prints no id.
LINKS_BY_ID = (
    "{% for t in tools or [] %}{{ t.function.name }}\n{% endfor %}"
    "{% for m in messages %}{% if m.role == 'tool' %}{% set found = namespace(name='?') %}"
    "{% for other in messages %}{% for call in other.tool_calls or [] %}"
    "{% if call.id == m.tool_call_id %}{% set found.name = call.function.name %}{% endif %}"
    "{% endfor %}{% endfor %}<|result|>{{ found.name }}: {{ m.content }}\n"
    "{% else %}<|{{ m.role }}|>{{ m.content }}{% for call in m.tool_calls or [] %}"
    "<call>{{ call.function.name }} {{ call.function.arguments|tojson }}</call>{% endfor %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_results_linked_to_calls_by_an_id_the_template_does_not_print_read_tool_call_id_yes():
    capabilities = Behaviour(LINKS_BY_ID).capabilities
    assert capabilities.values["tool_call_id"] is True
    assert capability_note(capabilities, "tool_call_id") == (
        "results are matched to their calls by id (the id itself is not printed)")
    assert "tool-call-long-ids" not in dict(Behaviour(LINKS_BY_ID).not_evaluated())
    # A template that ignores the result's id still reads "no".
    ignores = LINKS_BY_ID.replace("call.id == m.tool_call_id", "true")
    assert Behaviour(ignores).capabilities.values["tool_call_id"] is False


def test_a_template_that_loops_forever_on_an_unmatched_result_id_is_still_probed_and_checked():
    # Result ids that match no call are no client's input: the probe that sends them may spend
    # its budget, but it must not stop the other probes or lint's checks.
    text = ("{% for m in messages %}{% if m.role == 'tool' %}{% set ns = namespace(found=false) %}"
            "{% for other in messages %}{% for call in other.tool_calls or [] %}"
            "{% if call.id == m.tool_call_id %}{% set ns.found = true %}{% endif %}{% endfor %}{% endfor %}"
            "{% if not ns.found %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
            "{% endif %}<|tool|>{{ m.content }}\n{% else %}<|{{ m.role }}|>{{ m.content }}"
            "{% for call in m.tool_calls or [] %}<call>{{ call.function.name }} {{ call.function.arguments|tojson }}"
            "</call>{% endfor %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    behaviour = Behaviour(text)
    capabilities = behaviour.capabilities
    assert behaviour.spent_budget is None
    assert capabilities.values["tool_calls"] is True and capabilities.values["generation_prompt"] is True
    assert not any(capabilities.unknown(name) for name in CAPABILITY_NAMES), capabilities.facts


# Written for typed parts only (SmolVLM's, Idefics3's shape): a string renders as nothing.
PARTS_ONLY = (
    "{% for m in messages %}{{ m.role|capitalize }}: {% for p in m.content %}{% if p.type == 'text' %}"
    "{{ p.text }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def test_a_template_for_typed_parts_only_is_probed_with_parts():
    behaviour = Behaviour(PARTS_ONLY)
    capabilities = behaviour.capabilities
    assert capabilities.facts["typed_content"].startswith("requires typed content")
    # With strings the system message vanished ("no"); sent as parts, as its clients send it, it renders.
    assert capabilities.values["system"] is True
    assert capability_note(capabilities, "system") == "probed with contents as typed text parts"
    assert capabilities.values["generation_prompt"] is True and capabilities.values["tools"] is False
    # Its fixtures are checked as parts, so the system fixture runs and renders.
    system_fixture = next(fixture for fixture in behaviour.evaluated() if fixture.name == "system-multi-turn")
    assert isinstance(system_fixture.messages[0]["content"], list)
    assert behaviour.fixture_render(system_fixture).ok


def test_a_string_only_template_that_drops_parts_says_so():
    template = ("{% for m in messages %}{% if m.content is string %}{% set c = m.content %}{% else %}"
                "{% set c = '' %}{% endif %}<|{{ m.role }}|>{{ c }}{% endfor %}")
    capabilities = Behaviour(template).capabilities
    assert capabilities.values["typed_content"] is False
    assert capabilities.facts["typed_content"] == "the text of parts is dropped"
    # One that raises on parts is a plain "no", with nothing dropped.
    assert Behaviour(CHATML.replace("{{ m.content }}", "{{ m.content + '' }}")).capabilities.facts["typed_content"] == "raises"


def test_tool_call_fixtures_run_on_a_template_that_never_lists_tools():
    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content or '' }}{% for c in m.tool_calls or [] %}"
                "<call>{{ c.function.name }}:{{ c.function.arguments|tojson }}</call>{% endfor %}{% endfor %}")
    behaviour = Behaviour(template)
    assert behaviour.capabilities.values["tools"] is False and behaviour.capabilities.values["tool_calls"] is True
    evaluated = {fixture.name for fixture in behaviour.evaluated()}
    assert {"tool-call", "tool-call-string-arguments", "parallel-tool-calls"} <= evaluated
    assert "tool-definitions" not in evaluated
