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
    # the largest of 786 corpus templates: 2,946 nodes, 127 KB of generated Python
    assert 3 * 2_946 <= guards.DEFAULT_BUDGET.max_nodes <= 12_000
    assert guards.DEFAULT_BUDGET.max_python >= 8 * 127_000


def test_empty_macros_that_generate_too_much_python_are_refused_before_pythons_compile():
    # 5,000 empty macros: one node each, but 1.3 MB of Python that compile() takes seconds on
    template = "".join(f"{{% macro m{index}() %}}{{% endmacro %}}" for index in range(5000))
    line = refused(template, words=["characters of Python, more than the compile budget of 1,048,576"])
    assert "budget exceeded" in line


def test_the_default_node_budget_refuses_thirty_thousand_macros_at_once():
    template = "".join(f"{{% macro m{index}() %}}{{% endmacro %}}" for index in range(10_001))
    refused(template, words=["more than 10,000 syntax nodes, the compile budget"])


# ---------------------------------------------------------------------------------------------
# shared references: tiny in memory, exponential to compare or hash


def _doubled(depth, operation):
    """``operation`` on structures that double ``depth`` times by sharing references."""
    return (
        "{%- set ns = namespace(t=(1, 2), u=(1, 2), a=[1], b=[1]) -%}"
        f"{{%- for i in range({depth}) %}}{{% set ns.t = (ns.t, ns.t) %}}{{% set ns.u = (ns.u, ns.u) %}}"
        "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor -%}" + operation
    )


SHARED = [
    ("{{ ns.t in {} }}", "comparison (in)"),
    ("{{ ns.t in {}.keys() }}", "comparison (in)"),
    ("{{ {ns.t: 1}|length }}", "dict key"),
    ("{{ {'k': 1}[ns.t] }}", "subscript"),
    ("{{ {'k': 1}.get(ns.t) }}", "dict.get()"),
    ("{{ dict([(ns.t, 1)])|length }}", "dict()"),
    ("{{ ns.a == ns.b }}", "comparison (==)"),
    ("{{ ns.t != ns.u }}", "comparison (!=)"),
    ("{{ ns.a < ns.b }}", "comparison (<)"),
    ("{{ ns.b in [ns.a] }}", "comparison (in)"),
    ("{{ [ns.a]|select('equalto', ns.b)|list|length }}", "test 'equalto'"),
    ("{{ [{'k': ns.b}]|rejectattr('k', 'in', [ns.a])|list|length }}", "test 'in'"),
    ("{{ [ns.a, ns.b]|max|length }}", "|max"),
    ("{{ [{'k': ns.a}, {'k': ns.b}]|min(attribute='k')|length }}", "|min"),
    ("{{ [ns.a, ns.b]|sort|length }}", "|sort"),
    ("{{ [ns.t, ns.u]|unique|list|length }}", "|unique"),
    ("{{ [{'k': ns.t}, {'k': ns.u}]|unique(attribute='k')|list|length }}", "|unique"),
    ("{{ [{'k': ns.a}, {'k': ns.b}]|groupby('k')|list|length }}", "|groupby"),
    ("{{ {'x': ns.a, 'y': ns.b}|dictsort(by='value')|length }}", "|dictsort"),
    ("{{ [ns.a, ns.b].index(ns.b) }}", "list.index()"),
    ("{{ [ns.a, ns.b].count(ns.b) }}", "list.count()"),
    ("{{ (ns.a, ns.b).index(ns.b) }}", "tuple.index()"),
    ("{% for x in [ns.a, ns.b] %}{{ loop.changed(x) }}{% endfor %}", "LoopContext.changed()"),
]


@pytest.mark.parametrize("operation, what", SHARED)
def test_comparing_or_hashing_shared_references_is_costed_by_expanded_size(operation, what):
    # 2**16 element steps: a few bytes to hold, but each step costs about 250 characters' worth
    refused(_doubled(16, operation), SMALL_WORK, words=[what, "exceeds the work budget of 1,000,000 characters"])


@pytest.mark.parametrize("operation, what", SHARED[:3] + SHARED[6:7] + SHARED[12:13] + SHARED[14:16])
def test_shared_references_at_depth_forty_are_refused_at_once(operation, what):
    # uncosted, each of these ran for hours; costing takes one step per distinct object
    refused(_doubled(40, operation), words=[what, "work budget"])


@pytest.mark.parametrize("operation", [operation for operation, _ in SHARED])
def test_small_shared_structures_give_the_same_results(operation):
    small = render(_doubled(3, operation), SMALL_WORK)
    assert small.error is None, small.error.describe()
    assert small.text == render(_doubled(3, operation)).text


@pytest.mark.parametrize("template, expected", [
    ("{{ [3, 1, 2]|sort }}|{{ ['b', 'A']|sort }}|{{ [{'n': 2}, {'n': 1}]|sort(attribute='n')|map(attribute='n')|list }}",
     "[1, 2, 3]|['A', 'b']|[1, 2]"),
    ("{{ [3, 1]|max }}|{{ 'bca'|min }}|{{ [1, 1, 2]|unique|list }}|{{ [0]|select|max is undefined }}"
     "|{{ [1, 3]|select|max }}", "3|a|[1, 2]|True|3"),
    ("{{ [{'r': 'u'}, {'r': 'a'}, {'r': 'u'}]|groupby('r')|map(attribute='grouper')|list }}", "['a', 'u']"),
    ("{{ {'b': 1, 'a': 2}|dictsort }}|{{ {'b': 1, 'a': 2}|dictsort(by='value')|first }}", "[('a', 2), ('b', 1)]|('b', 1)"),
    ("{{ [1, 2].index(2) }}|{{ (1, 1).count(1) }}|{{ {(1, 2): 'x'}[(1, 2)] }}|{{ {'a': 1}.get('a') }}", "1|2|x|1"),
    ("{% for m in messages %}{{ loop.changed(m.role) }}{% endfor %}|{{ dict([('a', 1)]) }}", "True|{'a': 1}"),
])
def test_costed_filters_and_methods_give_the_same_results(template, expected):
    result = render(template, SMALL_WORK)
    assert result.error is None, result.error.describe()
    assert result.text == expected


def test_costed_filters_keep_pythons_errors():
    for template in ("{{ 5|sort }}", "{{ 5|max }}", "{{ 5|unique|list }}"):
        result = render(template)
        assert result.error.exception_type == "TypeError", template
        assert result.error.message == "'int' object is not iterable", template
