"""Every rule's documentation is complete and its examples behave as documented."""

from __future__ import annotations

import re

import pytest

from templatekit.lint.engine import run_rules
from templatekit.lint.registry import all_rules, parse_rule_doc


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.code)
def test_bad_example_fires_and_good_example_is_clean(rule):
    doc = rule.doc()
    assert doc.summary and doc.why
    bad = [d for d in run_rules(rule.example_target("bad"), [rule()]) if d.code == rule.code]
    good = [d for d in run_rules(rule.example_target("good"), [rule()]) if d.code == rule.code]
    assert bad, f"{rule.code}: its Bad example does not fire"
    assert not good, f"{rule.code}: its Good example fires: {[d.message for d in good]}"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.code)
def test_summary_is_the_whole_first_sentence(rule):
    # The summary is shown alone (rules table, `templatekit rule`, SARIF, fuzz): it must be the
    # docstring's whole first paragraph and end a sentence, never stop where a line wrapped.
    import inspect

    first_paragraph = inspect.cleandoc(rule.__doc__).split("\n\n", 1)[0]
    summary = rule.doc().summary
    assert summary == " ".join(line.strip() for line in first_paragraph.split("\n"))
    assert re.search(r"[.!?][)\"'`]?$", summary), f"{rule.code}: summary does not end a sentence: {summary!r}"


def test_a_summary_wrapped_over_lines_is_joined():
    doc = parse_rule_doc('''Tool-call arguments work as an object but not as a JSON string (or the reverse), or get
    encoded twice.

    Why: because.

    Bad:
        {{ x }}

    Good:
        {{ y }}
    ''')
    assert doc.summary == ("Tool-call arguments work as an object but not as a JSON string (or the reverse), "
                           "or get encoded twice.")
    assert doc.why == "because."


def test_rule_command_lists_options_as_the_config_file_writes_them(run):
    """Options are shown in TOML (a list in double quotes, not Python's repr) with what each
    accepts, so a line can be copied into the config as it is."""
    loop = run("rule", "TK908").output
    assert "  max-iterations = 1000000  (a whole number of at least 1)" in loop
    names = run("rule", "TK006").output
    assert "  extra-inputs = []  (a list of variable names (strings))" in names
    assert "kwargs = [\"enable_thinking\"," in names
