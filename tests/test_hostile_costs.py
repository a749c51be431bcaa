"""Operations whose cost no tick sees: one slow comparison or filter, allocations made inside C
(bytes, int.to_bytes, nested format widths, split), and compiling a huge template.

Each is refused before it runs, with the budget's usual one-line message; small budgets keep the
tests fast. Benign uses of the same operations render exactly as before.
"""

from __future__ import annotations

import pytest

from templatekit import guards
from templatekit.conversation import Conversation
from templatekit.guards import Budget
from templatekit.rendering import render_template

USER = [{"role": "user", "content": "hi"}]


def render(template, budget=None, messages=USER):
    extra = {"budget": budget} if budget is not None else {}
    return render_template(template, Conversation(messages), **extra)


def refused(template, budget=None, *, words):
    result = render(template, budget)
    assert result.error is not None, f"rendered {result.text[:80]!r}"
    assert result.error.kind == "budget", result.error.describe()
    line = result.error.describe()
    assert "\n" not in line
    for word in words:
        assert word in line, line
    return line


# ---------------------------------------------------------------------------------------------
# work: one operation that runs long in C


SMALL_WORK = Budget(max_work=1_000_000)


@pytest.mark.parametrize("template, what", [
    ("{{ ('<>' * 2000)|striptags }}", "|striptags"),
    ("{{ ('a' * 20000)|wordwrap(8)|length }}", "|wordwrap"),
    ("{% set s = 'a' * 20000 %}{{ (s ~ 'c') in [s ~ 'b'] * 100 }}", "comparison (in)"),
    ("{% set s = 'a' * 20000 %}{{ (s ~ 'c') not in [s ~ 'b'] * 100 }}", "comparison (not in)"),
    ("{% set s = 'a' * 20000 %}{{ [s ~ 'b'] * 100 == [s ~ 'b'] * 100 }}", "comparison (==)"),
    ("{% set s = 'a' * 20000 %}{{ [s ~ 'b'] * 100 != [s ~ 'b'] * 100 }}", "comparison (!=)"),
    ("{% set s = 'a' * 20000 %}{{ [s ~ 'b'] * 100 < [s ~ 'b'] * 100 }}", "comparison (<)"),
    ("{% set s = 'a' * 20000 %}{{ [[s ~ 'b'] * 100] * 100 == [[s ~ 'b'] * 100] * 100 }}", "comparison (==)"),
    ("{% set s = 'a' * 20000 %}{{ 1 < 2 < ([s ~ 'b'] * 100 == [s ~ 'b'] * 100) }}", "comparison (==)"),
    ("{% set s = 'a' * 20000 %}{{ (s ~ 'c') is in ([s ~ 'b'] * 100) }}", "test 'in'"),
    ("{% set s = 'a' * 20000 %}{{ ([[s ~ 'b'] * 100] * 3)|select('eq', [s ~ 'c'] * 100)|list }}", "test 'eq'"),
])
def test_a_slow_comparison_or_filter_is_refused_before_it_runs(template, what):
    refused(template, SMALL_WORK, words=[what, "exceeds the work budget of 1,000,000 characters"])


def test_the_default_work_budget_stops_a_quadratic_striptags_at_once():
    # 300,000 tags in 600 KB: about 2.5 s of copying before; refused now in milliseconds
    line = refused("{{ ('<>' * 300000)|striptags|length }}", words=["|striptags", "work budget"])
    assert "180,000,000,000 characters" in line


@pytest.mark.parametrize("template, expected", [
    ("{{ [1, 2] == [1, 2] }}|{{ [1] != [1] }}|{{ 2 in [1, 2] }}|{{ 3 not in [1, 2] }}", "True|False|True|True"),
    ("{{ {'a': [1]} == {'a': [1]} }}|{{ (1, 2) < (1, 3) }}|{{ [1] == (1,) }}", "True|True|False"),
    ("{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ 2 < 1 < raise_exception('evaluated') }}", "True|False|False"),
    ("{{ messages[0] in messages }}|{{ messages == messages }}|{{ [messages[0]] is in [[]] }}", "True|True|False"),
    ("{{ ([1, 2, 3]|select('eq', 2)|list) }}|{{ [[1]]|select('in', [[1]])|list }}", "[2]|[[1]]"),
    ("{{ ('a b\tc' * 50)|wordwrap(7)|length }}|{{ '<b>x</b> <i>y</i>'|striptags }}", "250|x y"),
])
def test_guarded_comparisons_and_filters_give_the_same_results(template, expected):
    result = render(template, SMALL_WORK)
    assert result.error is None, result.error.describe()
    assert result.text == expected


def test_comparison_errors_are_pythons_own():
    result = render("{{ [1] < ['a'] }}")
    assert result.error.exception_type == "TypeError"
    assert result.error.message == "'<' not supported between instances of 'int' and 'str'"


def test_a_render_that_ends_after_its_deadline_has_spent_its_time_budget():
    # Too few ticks for the clock to be read during the render: only the check at the end sees
    # the deadline passed (as after one slow operation), and the render counts as spent.
    result = render("{{ 'x' }}", Budget(seconds=1e-9))
    assert result.error is not None, result.text
    assert result.error.out_of_time and result.error.spent_budget
    assert render("{{ 'x' }}").text == "x"


# ---------------------------------------------------------------------------------------------
# memory: allocations made inside C


SMALL_OUTPUT = Budget(max_output=1000)


@pytest.mark.parametrize("template, what", [
    ("{{ ('a'.encode() * 2000)|length }}", "repeated string (*) of 2,000"),
    ("{{ 'a'.encode().ljust(2000)|length }}", "bytes.ljust() result of 2,000"),
    ("{{ 'a'.encode().center(2000)|length }}", "bytes.center() result"),
    ("{{ 'a'.encode().zfill(2000)|length }}", "bytes.zfill() result"),
    ("{{ ('a' * 100).encode().replace('a'.encode(), ('b' * 100).encode())|length }}", "bytes.replace() result of 10,000"),
    ("{{ ('\t' * 100).encode().expandtabs(100)|length }}", "bytes.expandtabs() result"),
    ("{{ ('x' * 100).encode().join(['a'.encode()] * 100)|length }}", "bytes.join() result"),
    ("{{ (1).to_bytes(2000, 'big')|length }}", "int.to_bytes() result of 2,000"),
    ("{{ '{0:{1}}'.format('a', 2000)|length }}", "str.format() result"),
    ("{{ '{:{}}'.format('a', 2000)|length }}", "str.format() result"),
    ("{{ '{0:{1}.{2}}'.format(1.5, 10, 2000)|length }}", "str.format() result"),
    ("{{ '{0:{1[0]}}'.format('a', [2000])|length }}", "str.format() result"),
    ("{{ '{a:{b}}'.format_map({'a': 'x', 'b': 2000})|length }}", "str.format_map() result"),
    ("{{ '{0:{1}}'.format('a', 2000.0)|length }}", "str.format() result"),
])
def test_allocations_made_inside_c_are_refused_before_they_are_made(template, what):
    refused(template, SMALL_OUTPUT, words=[what, "exceeds the size budget of 1,000 characters"])


SMALL_ITEMS = Budget(max_items=100)


@pytest.mark.parametrize("template, what", [
    ("{{ (' ' * 500).split(' ')|length }}", "str.split() result of 501 items"),
    ("{{ (' ' * 500).rsplit(' ')|length }}", "str.rsplit() result"),
    ("{{ ('a ' * 500).split()|length }}", "str.split() result"),
    ("{{ ('\n' * 500).splitlines()|length }}", "str.splitlines() result"),
    ("{{ (' ' * 500).encode().split(' '.encode())|length }}", "bytes.split() result"),
    ("{{ ('a ' * 500)|title|length }}", "|title intermediate list"),
    ("{{ ('a ' * 500)|wordcount }}", "|wordcount intermediate list"),
    ("{{ ('a ' * 500)|urlize|length }}", "|urlize intermediate list"),
])
def test_lists_built_inside_c_are_bounded_like_any_other(template, what):
    refused(template, SMALL_ITEMS, words=[what, "exceeds the size budget of 100 items"])


@pytest.mark.parametrize("template, expected", [
    ("{{ 'a,b'.split(',') }}|{{ 'a b  c'.split() }}|{{ 'a\nb'.splitlines() }}|{{ ('a ' * 60).split(' ', 2)|length }}",
     "['a', 'b']|['a', 'b', 'c']|['a', 'b']|3"),
    ("{{ '{0:{1}}|'.format('a', 3) }}{{ '{:>{}}'.format('b', 2) }}|{{ 'x'.encode().ljust(3) }}", "a  | b|b'x  '"),
    ("{{ ('a ' * 40)|title|length }}|{{ ('a ' * 40)|wordcount }}", "80|40"),
])
def test_bounded_allocations_within_budget_give_the_same_results(template, expected):
    result = render(template, SMALL_ITEMS)
    assert result.error is None, result.error.describe()
    assert result.text == expected


# ---------------------------------------------------------------------------------------------
# estimates that measured the wrong thing


def test_a_power_within_the_integer_budget_is_computed():
    # 2 ** 40000 has 40,001 bits, under the 65,536-bit budget; it was refused as "about 80,000"
    assert render("{{ (2 ** 40000) % 7 }}").text == "2"
    assert render("{{ ((3 ** 40000) % 7) }}").text == str(pow(3, 40000, 7))
    line = refused("{{ 2 ** 70000 }}", words=["integer of about 70,001 bits"])
    assert "65,536 bits" in line


# ---------------------------------------------------------------------------------------------
# compilation


def test_a_template_too_large_to_compile_is_refused_before_compiling(monkeypatch):
    monkeypatch.setattr(guards, "DEFAULT_BUDGET", Budget(max_nodes=200))
    template = "".join(f"{{% set compile_budget_{index} = {index} %}}" for index in range(100))
    line = refused(template, words=["more than 200 syntax nodes, the compile budget"])
    assert "budget exceeded" in line and "nested too deeply" not in line
    # an ordinary template is far under it
    assert render("{% for m in messages %}{{ m.role }}{% endfor %}").text == "user"


def test_the_compile_budget_is_far_above_real_templates():
    assert guards.DEFAULT_BUDGET.max_nodes >= 10 * 2_945  # the largest of 786 corpus templates
