"""Behavioural lint: renders are shared between rules, static-only skips them, and the stable
history invariant tells deliberate reasoning removal from real instability."""

from __future__ import annotations

from templatekit.behaviour import Behaviour, behaviour_of, common_prefix_length, dropped_segment
from templatekit.lint.config import ConfigError, LintConfig, config_from_mapping
from templatekit.lint.engine import run_rules
from templatekit.lint.registry import all_rules
from templatekit.lint.rules.behaviour import history_breaks
from templatekit.lint.runner import Linter
from templatekit.lint.target import LintTarget

import pytest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BEHAVIOURAL = [rule for rule in all_rules() if getattr(rule, "behavioural", False)]


def test_every_tk6_rule_is_behavioural_and_no_other_is():
    # The special-token rules (TK5xx) render too, when a tokenizer is there.
    assert {rule.code[:3] for rule in BEHAVIOURAL} == {"TK5", "TK6"}
    assert all(getattr(rule, "behavioural", False) for rule in all_rules() if rule.code.startswith("TK6"))


def test_all_rules_share_one_set_of_renders():
    target = LintTarget(CHATML)
    run_rules(target, [rule() for rule in BEHAVIOURAL])
    behaviour = behaviour_of(target)
    first = behaviour.render_count
    # A second pass renders nothing new: every (fixture, variant) is cached on the target.
    run_rules(target, [rule() for rule in BEHAVIOURAL if rule.code != "TK610"])
    assert behaviour.render_count == first
    assert first < 80


def test_the_determinism_check_renders_again_only_where_chance_is_possible():
    from templatekit.lint.registry import find_rule

    nondeterministic = find_rule("TK610")
    for text, renders_again in ((CHATML, False), ("{{ ['a', 'b']|random }}" + CHATML, True)):
        target = LintTarget(text)
        behaviour = behaviour_of(target)
        behaviour.fixture_render(behaviour.fixture("basic"))
        assert behaviour.capabilities  # probed before counting
        before = behaviour.render_count
        list(nondeterministic().check(target))
        assert (behaviour.render_count > before) == renders_again


def test_structural_checks_skip_text_variants_of_built_in_fixtures_but_never_a_given_conversation():
    # Breaks only when a message holds non-ASCII text: the built-in unicode fixture is skipped by
    # the history check (its turns are multi-turn's), a conversation given to check is not.
    text = ("{% for m in messages %}{% if loop.last and m.content is not ascii %}!{% endif %}"
            "<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    text = text.replace("m.content is not ascii", "m.content != m.content.encode('ascii', 'ignore').decode()")
    behaviour = Behaviour(text)
    unicode = behaviour.fixture("unicode")
    assert not [message for _kind, message in history_breaks(behaviour) if "'unicode'" in message]
    given = behaviour.checking(unicode)
    assert [message for _kind, message in history_breaks(given) if "'unicode'" in message]


def test_clean_chatml_passes_every_invariant_except_the_not_evaluated_listing():
    found = run_rules(LintTarget(CHATML), [rule() for rule in BEHAVIOURAL])
    # Two notes: the fixtures skipped, and typed parts printed as a repr (it reads strings only).
    assert sorted((d.code, d.severity) for d in found) == [("TK608", "info"), ("TK614", "info")]
    assert "documents (needs documents)" in [d for d in found if d.code == "TK614"][0].message



def test_a_template_that_does_not_compile_gets_one_note_not_a_finding_per_invariant():
    """Every render fails alike, so TK609/TK611 used to report the compile error as a broken
    continuation and an empty-conversation crash, and probing read every capability as absent."""
    broken = CHATML.replace("{{ m.content }}", "{{ m.content | no_such_filter }}")
    behaviour = Behaviour(broken)
    found = run_rules(LintTarget(broken), [rule() for rule in BEHAVIOURAL])
    assert [d.code for d in found] == ["TK614"]
    assert found[0].message == ("not evaluated: every behavioural check (TK6xx), because the template does not "
                                "compile: syntax error: No filter named 'no_such_filter'.")
    assert behaviour.compile_failure is not None and behaviour.render_count == 0

def test_static_only_skips_behavioural_rules():
    static = Linter(LintConfig(static_only=True), use_cache=False)
    full = Linter(LintConfig(), use_cache=False)
    assert not any(getattr(rule, "behavioural", False) for rule in static.rules_for(None))
    assert {rule.code for rule in full.rules_for(None)} >= {rule.code for rule in BEHAVIOURAL}
    assert config_from_mapping({"static-only": True}).static_only is True
    with pytest.raises(ConfigError):
        config_from_mapping({"static-only": "yes"})


def test_reasoning_dropped_from_history_is_not_reported_as_instability():
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{% if loop.last and m.reasoning_content %}<think>"
        "{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    kinds = {kind for kind, _ in history_breaks(Behaviour(template))}
    assert kinds == {"reasoning"}


def test_instability_names_the_turn_that_re_renders():
    template = (
        "{% for m in messages %}{% if loop.last %}[LAST]{% endif %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    breaks = history_breaks(Behaviour(template))
    assert breaks and breaks[0][0] == "unstable"
    assert "adding messages[1] (assistant)" in breaks[0][1]


def test_grouped_tool_results_are_one_turn():
    # Consecutive tool results are closed after the last one; that is not instability.
    template = (
        "{% for t in tools or [] %}{{ t.function.name }}{% endfor %}{% for m in messages %}"
        "{% if m.role == 'tool' %}{% if loop.previtem.role != 'tool' %}<tools>{% endif %}{{ m.content }}"
        "{% if loop.last or loop.nextitem.role != 'tool' %}</tools>{% endif %}"
        "{% else %}<|{{ m.role }}|>{{ m.content }}{% for c in m.tool_calls or [] %}{{ c.function.arguments|tojson }}"
        "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert history_breaks(Behaviour(template)) == []


def test_prefix_helpers():
    assert common_prefix_length("abcdef", "abcxyz") == 3
    assert common_prefix_length("", "abc") == 0
    assert dropped_segment("ab<think>x</think>cd", "abcdef") == (2, 18)
    assert dropped_segment("abc", "xyz") is None or dropped_segment("abc", "xyz") == (0, 3)


def test_special_tokens_default_so_bos_concatenation_renders():
    behaviour = Behaviour("{{ bos_token + messages[0].content }}")
    assert behaviour.fixture_render(behaviour.fixture("basic")).text.startswith("<s>What is")


def test_corpus_like_no_tools_template_is_not_failed_by_tool_checks():
    found = run_rules(LintTarget(CHATML), [rule() for rule in BEHAVIOURAL if rule.code in ("TK605", "TK606")])
    assert found == []


def test_findings_name_a_checked_conversation_as_such_and_a_fixture_as_a_fixture():
    from templatekit.fixtures import load_fixture

    text = "{% for m in messages %}{{ m.content }}{% endfor %}"
    basic = load_fixture("basic")
    assert Behaviour(text).describe(basic) == "fixture 'basic'"
    mine = Behaviour(text).checking(basic.replace(name="mine"))
    assert mine.describe(mine.given) == "conversation 'mine'"
    unnamed = Behaviour(text).checking(basic.replace(name=None))
    assert unnamed.describe(unnamed.given) == "the conversation"
    labelled = Behaviour(text).checking(basic.replace(name=None), "the generated conversation")
    assert labelled.describe(labelled.given) == "the generated conversation"


# A template that fails on every conversation: assigning an attribute on a message (a dict).
EVERY_RENDER_FAILS = ("{%- for m in messages %}{%- set m.seen = 1 %}<|{{ m.role }}|>{{ m.content }}<|end|>"
                      "{% endfor %}{%- if add_generation_prompt %}<|assistant|>{% endif %}")


def test_a_template_failing_on_every_conversation_gets_one_error_saying_so_not_a_feature_finding():
    """It used to get only TK609 ("continue_final_message fails") beside the TK614 listing: the
    failure was blamed on prefill, and every other check skipped the failing renders silently.
    (Whether TK614 lists anything depends on how probing reads a template it cannot render.)"""
    found = run_rules(LintTarget(EVERY_RENDER_FAILS), [rule() for rule in BEHAVIOURAL])
    assert [d.code for d in found if d.code != "TK614"] == ["TK616"]
    failure = next(d for d in found if d.code == "TK616")
    assert failure.severity == "error"
    assert failure.message.startswith("fixture 'basic' fails: render error (TemplateRuntimeError): cannot assign "
                                      "attribute on non-namespace object (fixtures 'multi-turn' and "
                                      "'ends-with-assistant' fail the same way)")
    assert "transformers cannot render a plain user/assistant conversation" in failure.message


def test_a_failure_of_later_turns_only_is_reported_where_it_is_raised():
    text = ("{% for m in messages %}<|{{ m.role }}|>{% if m.role == 'assistant' %}\n"
            "{{ m.content ~ m.missing.field }}{% else %}{{ m.content }}{% endif %}<|end|>{% endfor %}")
    found = [d for d in run_rules(LintTarget(text), [rule() for rule in BEHAVIOURAL]) if d.code in ("TK609", "TK616")]
    assert [(d.code, d.line) for d in found] == [("TK616", 2)]
    assert found[0].message.startswith("fixture 'multi-turn' fails: render error (UndefinedError)")


def test_a_tool_use_template_is_rendered_with_tools_as_transformers_picks_it_only_then():
    from pathlib import Path

    from templatekit.lint.registry import find_rule
    from templatekit.sources import ChatTemplate

    text = ("{% for t in tools %}<|tool|>{{ t.function.name }}{% endfor %}"
            "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}")
    rule = find_rule("TK616")

    def codes(name: str) -> list[str]:
        template = ChatTemplate(text, name, Path("tokenizer_config.json"), "json", True)
        return [d.code for d in run_rules(LintTarget(text, template=template), [rule()])]

    assert codes("default") == ["TK616"]
    assert codes("tool_use") == []


def test_an_undefined_special_token_is_a_failure_only_when_the_tokenizer_is_known():
    from templatekit.lint.registry import find_rule

    text = "{% for m in messages %}<|{{ m.role }}|>{{ m.content + sep_token }}{% endfor %}"
    rule = find_rule("TK616")
    assert [d.code for d in run_rules(LintTarget(text), [rule()])] == []
    known = LintTarget(text, special_tokens={"bos_token": "<s>", "eos_token": "</s>"})
    assert [d.code for d in run_rules(known, [rule()])] == ["TK616"]


def test_content_printed_as_a_python_repr_is_found_there_not_called_dropped():
    from templatekit.behaviour import content_reaches, python_repr_of_content

    message = {"role": "system", "content": [{"type": "text", "text": "0\xa00"}]}
    rendered = "<|system|>[{'type': 'text', 'text': '0\\xa00'}]"
    assert not content_reaches(message, rendered)
    assert content_reaches(message, rendered, as_repr=True)
    assert python_repr_of_content(message, rendered) == rendered.index("0\\xa00")
    # Text that reads the same in a repr is found verbatim: no repr is claimed.
    assert python_repr_of_content({"content": "plain"}, "['plain']") is None
    assert not content_reaches({"content": "gone\t"}, "nothing here", as_repr=True)


def test_fuzzing_reports_a_typed_system_message_printed_as_a_repr_as_a_repr_leak():
    """A typed system message through |trim prints the list's repr (gemma 4 does this): the
    text is in the prompt, escaped. It used to be reported as content silently dropped (TK603)."""
    from templatekit.conversation import Conversation
    from templatekit.fuzz import Checker

    text = ("{% if messages[0].role == 'system' %}<|system|>{{ messages[0].content|trim }}<|end|>{% endif %}"
            "{% for m in messages if m.role != 'system' %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    conversation = Conversation([{"role": "system", "content": [{"type": "text", "text": "0\xa00"}]},
                                 {"role": "user", "content": "Hi!"}])
    invariant, _summary, message = Checker(text).check(conversation)
    assert invariant == "TK604 python-repr-leak"
    assert "[{'type'" in message


# Mistral-style: the user's turn ends with the assistant's cue, and replies follow it directly.
INST = "{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"


def _generation_prompt_findings(text: str) -> tuple[list, Behaviour]:
    from templatekit.lint.registry import find_rule

    target = LintTarget(text)
    found = list(find_rule("TK601")().check(target))
    return found, behaviour_of(target)


def _reply_renders(behaviour: Behaviour) -> list[str]:
    return [key for key, _prompted in behaviour._renders if key.endswith(":with-reply")]


def test_a_user_turn_ending_with_the_assistant_cue_needs_no_generation_prompt():
    """TK601 used to warn that "the model continues the user's turn" on [INST] ... [/INST]
    formats, which TK302 exempts: the reply follows [/INST] directly. It notes (info) that the
    template needs none, until the template declares it."""
    found, behaviour = _generation_prompt_findings(INST)
    assert [(d.code, d.severity) for d in found] == [("TK601", "info")]
    assert "needs no generation prompt" in found[0].message and "'[/INST]'" in found[0].message
    assert "continues the user's turn" not in found[0].message
    # One render with a reply tells it for every conversation ending with a user message.
    assert len(_reply_renders(behaviour)) == 1


def test_the_reply_is_rendered_only_where_a_finding_is_about_to_be_reported():
    found, behaviour = _generation_prompt_findings(CHATML)
    assert found == [] and _reply_renders(behaviour) == []


def test_an_unconditional_header_is_named_as_such():
    found, _behaviour = _generation_prompt_findings(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}<|assistant|>")
    assert [d.code for d in found] == ["TK601"]
    assert found[0].message == ("fixture 'basic' renders the same with and without add_generation_prompt: the "
                                "template emits '<|end|><|assistant|>' unconditionally: a conversation that ends "
                                "with the assistant's reply ends with it too")


def test_an_unconditional_header_is_named_as_such_when_replies_add_their_own_header_too():
    found, _behaviour = _generation_prompt_findings(
        "{% for m in messages %}{% if m.role == 'user' %}<|user|>{{ m.content }}<|end|>{% else %}"
        "<|bot|><|resp|>{{ m.content }}<|end|>{% endif %}{% endfor %}<|bot|>")
    assert [d.code for d in found] == ["TK601"]
    assert "emits '<|end|><|bot|>' unconditionally" in found[0].message


TOOL_TURNS = (
    "{%- for t in tools or [] %}<|tool|>{{ t.function.name }}\n{% endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'tool' %}<|result|>{{ m.content }}<|/result|>"
    "{%- elif m.role == 'assistant' %}OPEN{{ m.content or '' }}{% for c in m.tool_calls or [] %}<|call|>"
    "{{ c.function.name }}{{ c.function.arguments|tojson }}<|/call|>{% endfor %}CLOSE"
    "{%- else %}<|{{ m.role }}|>{{ m.content }}<|end|>{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt and messages[-1].role != 'tool' %}<|assistant|>{% endif %}"
)


def test_after_tool_results_an_empty_prompt_is_right_only_inside_an_open_assistant_turn():
    """Gemma 4 and DeepSeek V3.2 keep the model's turn open after tool results; TK601 used to say
    they had no generation prompt, or emitted it unconditionally, judging the fixtures that end
    with a tool result like those that end with a user message."""
    opened = TOOL_TURNS.replace("OPEN", "{% if loop.previtem is not defined or loop.previtem.role != 'tool' %}"
                                        "<|assistant|>{% endif %}")
    kept_open = opened.replace("CLOSE", "{% if not m.tool_calls %}<|end|>{% endif %}")
    assert _generation_prompt_findings(kept_open)[0] == []
    # The same template opening a new turn for the reply needs the prompt to open it too.
    reopened = TOOL_TURNS.replace("OPEN", "<|assistant|>").replace("CLOSE", "<|end|>")
    found, _behaviour = _generation_prompt_findings(reopened)
    assert [d.code for d in found] == ["TK601"]
    assert "the template prints '<|assistant|>' before an assistant reply to a tool result" in found[0].message
    # A render that ends with what closes a reply ends after a finished turn, not inside one.
    closed = opened.replace("CLOSE", "<|end|>").replace("<|/result|>", "<|end|>")
    found, _behaviour = _generation_prompt_findings(closed)
    assert [d.code for d in found] == ["TK601"]
    assert "it ends with '<|end|>', which also closes the template's assistant replies" in found[0].message


def test_whitespace_changing_next_to_a_think_marker_that_stays_is_instability_not_reasoning():
    """DeepSeek V3.2's history differs only in the indentation around "<｜Assistant｜></think>";
    the nearby </think> used to make it "reasoning dropped" (info) instead of a warning."""
    text = ("{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}{% if loop.last %}  "
            "{% else %}    {% endif %}{% else %}<|Assistant|> </think>{{ m.content }}<|end|>{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|Assistant|> </think>{% endif %}")
    assert {kind for kind, _ in history_breaks(Behaviour(text))} == {"unstable"}


def test_changed_span_and_the_strings_besides_tool_call_arguments():
    from templatekit.behaviour import changed_span, strings_besides_arguments, with_string_arguments

    assert changed_span("f(a=1)!", "f({=, a=)!") == (2, 8)
    assert changed_span("same", "same") == (4, 4)
    fixture = with_string_arguments(Behaviour(CHATML).fixture("tool-call"))
    others = strings_besides_arguments(fixture)
    arguments = fixture.messages[1]["tool_calls"][0]["function"]["arguments"]
    assert arguments not in others
    assert fixture.messages[2]["content"] in others  # the tool result
    assert "Get the current weather for a city." in others  # a tool definition
    assert "get_current_weather" in others


def test_double_encoding_is_judged_on_the_arguments_not_on_a_json_encoded_tool_result():
    from templatekit.lint.registry import find_rule

    text = ("{% for t in tools or [] %}{{ t.function.name }}{% endfor %}{% for m in messages %}<|{{ m.role }}|>"
            "{% if m.tool_calls %}{% for c in m.tool_calls %}{% set a = c.function.arguments %}"
            "{{ a if a is string else a|tojson }}{% endfor %}"
            "{% elif m.role == 'tool' %}{{ {'output': m.content}|tojson }}{% else %}{{ m.content }}{% endif %}\n"
            "{% endfor %}")
    rule = find_rule("TK605")
    assert list(rule().check(LintTarget(text))) == []
    iterated = text.replace("{{ a if a is string else a|tojson }}", "{% for k in a %}{{ k }}={{ a[k] }}, {% endfor %}")
    found = list(rule().check(LintTarget(iterated)))
    assert [d.code for d in found] == ["TK605"]
    assert found[0].message.startswith("JSON-string tool-call arguments are iterated character by character")


def test_arguments_iterated_character_by_character_are_found_when_they_hold_digits():
    # Found by fuzz on a real template: arguments such as {"a0": ...} made the check's pattern
    # read a back-reference plus a digit as group 10, and fuzz stopped with an internal error.
    from templatekit.lint.rules.behaviour import _iterated_characters

    arguments = '{"a0": "the"}'
    printed = "<call>" + "".join(f"{character}=?, " for character in arguments) + "</call>"
    assert _iterated_characters(printed, 0, len(printed), arguments) == len("<call>")
    assert _iterated_characters("<call>" + arguments + "</call>", 0, 30, arguments) is None


def test_text_after_the_last_tag_is_named_instead_of_re_rendered_history():
    # Found on a real template ending in "{%- endif %} ": the space ends every render, so each
    # new turn and the generation prompt go before it; no earlier turn changes.
    from templatekit.lint.registry import find_rule

    text = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %} ")
    target = LintTarget(text)
    (history,) = find_rule("TK602")().check(target)
    assert "the template prints ' ' after its last tag (line 1, column 128)" in history.message
    assert "no earlier turn changes" in history.message and "re-renders" not in history.message
    (prompt,) = find_rule("TK601")().check(target)
    assert (prompt.line, prompt.column) == (1, 128)
    assert prompt.message.endswith("delete it, or strip it with '-' in the last tag's closing delimiter")
    assert list(find_rule("TK602")().check(LintTarget(text.rstrip()))) == []


def test_reasoning_dropped_from_history_says_when_the_dropped_block_is_the_templates_own_empty_one():
    from templatekit.lint.registry import find_rule

    text = ("{% for m in messages %}<|{{ m.role }}|>{% if m.role == 'assistant' and loop.last %}<think>"
            "{{ m.reasoning_content or '' }}</think>{% endif %}{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    messages = [finding.message for finding in find_rule("TK613")().check(LintTarget(text))]
    assert messages, "TK613 should report the think block dropped from history"
    assert any("drops the template's own empty reasoning block from the latest assistant turn "
               "(the conversation has no reasoning)" in message for message in messages), messages
    assert not any("re-renders earlier turns" in message for message in messages), messages


@pytest.mark.parametrize("ending, shown", [
    ("TAIL{# a comment prints nothing #}", "'TAIL'"),
    ("{% raw %}R{% endraw %}TAIL", "'RTAIL'"),
    ("TAIL" + "x" * 5000, "'TAIL" + "x" * 56 + "'... (5,004 characters)"),
])
def test_trailing_text_is_found_past_comments_and_raw_blocks_and_quoted_short(ending, shown):
    from templatekit.lint.registry import find_rule

    text = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}" + ending)
    (history,) = find_rule("TK602")().check(LintTarget(text))
    assert f"the template prints {shown} after its last tag" in history.message
    assert "re-renders" not in history.message and len(history.message) < 600


def test_a_generation_prompt_that_opens_a_think_block_is_named_as_such():
    # Nemotron-style: the prompt opens <think>; a rendered reply has no think block.
    from templatekit.lint.registry import find_rule

    text = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
    messages = [finding.message for finding in find_rule("TK613")().check(LintTarget(text))]
    assert any("renders the reply without the reasoning opener the generation prompt prints "
               "('<|assistant|><think>\\n'; the conversation has no reasoning)" in message
               for message in messages), messages
