"""The lint's shortcuts must give exactly what the long way gives.

Each test runs a shortcut next to the plain computation it replaces (Jinja's NodeVisitor walk, a
full lex under every trim_blocks/lstrip_blocks setting, the stock sandbox's attribute verdict, a
compile from the source text) and requires the same answer, on tricky inputs and on the real
corpus when it is installed.
"""

from __future__ import annotations

import gc
import random
import types

import pytest
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeVisitor

from templatekit import behaviour
from templatekit import environment as environment_module
from templatekit.environment import compile_template, environment, hand_over_tree, variant_environment
from templatekit.fixtures import builtin_fixtures
from templatekit.lint.config import LintConfig
from templatekit.lint.registry import AstRule
from templatekit.lint.runner import Linter
from templatekit.lint.target import LintTarget
from templatekit.rendering import render_template

from .conftest import corpus_templates

TRICKY_TEMPLATES = [
    "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}",
    "{% macro show(x, y=[1, {'a': b}]) %}{{ x|upper }}{% call inner() %}{{ caller() }}{% endcall %}{% endmacro %}"
    "{{ show(messages[0]['content']) }}",
    "{% set ns = namespace(n=0) %}{% for a in range(3) if a > 0 %}{% set ns.n = ns.n + a %}{% else %}none"
    "{% endfor %}{% filter trim %} {{ ns.n }} {% endfilter %}{% generation %}{{ 'x' ~ y }}{% endgeneration %}",
    "{% if a %}{% elif b is defined and not c %}{{ d if e else f }}{% else %}{{ (g, h)|join }}{% endif %}",
    "{% with x = 1, y = [2] %}{{ x }}{% set z %}block {{ y[0] }}{% endset %}{{ z }}{% endwith %}{% raw %}{{ no }}{% endraw %}",
]


def _corpus_sample(step: int) -> list[str]:
    return [path.read_text(encoding="utf-8") for path in corpus_templates()[::step]]


class _Recorder(AstRule):
    """Handles a few node types, descends below some and not below others, and records every call."""

    code = "TK999"

    def check(self, target: LintTarget) -> list:
        self.calls: list[tuple[str, int]] = []
        super().check(target)
        return self.calls

    def visit_Call(self, node: nodes.Call) -> None:
        self.calls.append(("call", id(node)))
        self.generic_visit(node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        self.calls.append(("filter", id(node)))  # not descending: nested filters stay unseen

    def visit_For(self, node: nodes.For) -> None:
        self.calls.append(("for", id(node)))
        self.visit(node.iter)
        for child in node.body:
            self.visit(child)

    def visit_TemplateData(self, node: nodes.TemplateData) -> None:
        self.calls.append(("data", id(node)))


class _PlainRecorder(_Recorder):
    visit = NodeVisitor.visit
    generic_visit = NodeVisitor.generic_visit


@pytest.mark.parametrize("text", TRICKY_TEMPLATES + _corpus_sample(25))
def test_pruned_walk_calls_the_same_handlers_in_the_same_order(text: str) -> None:
    target = LintTarget(text)
    if target.tree is None:
        pytest.skip("does not parse")
    assert _Recorder().check(target) == _PlainRecorder().check(target)


def test_index_and_walk_survive_nesting_deeper_than_the_recursion_limit() -> None:
    # Hostile nesting: building the index is iterative, and a rule whose handled node types do
    # not occur in a subtree never descends into it.
    inner: nodes.Node = nodes.Output([nodes.TemplateData("x")])
    for _ in range(5000):
        inner = nodes.If(nodes.Name("a", "load"), [inner], [], [])
    tree = nodes.Template([inner])
    target = LintTarget("x")
    target._parsed = (tree, None)  # the tree Jinja's recursive parser could not have built

    class FilterRule(AstRule):
        code = "TK999"

        def visit_Filter(self, node: nodes.Filter) -> None:
            self.found.append(node)

    assert FilterRule().check(target) == []


# -- trim_blocks / lstrip_blocks: where a setting cannot act, it lexes like transformers' -------

_PIECES = ["{%", "{%-", "{%+", "%}", "-%}", "+%}", "{#", "{#-", "{#+", "#}", "-#}", "+#}", "{{", "}}", "{{-", "-}}",
           "\n", "\r\n", "\r", " ", "\t", "\x0c", "\u2028", "\x85", "x", "'%}'", '"#}\n"', " if a ", " endif ",
           " for m in messages ", " endfor ", "{% raw %}", "{% endraw %}", " set x = 1 ", "-", "+", "(", ")"]


def _lexes(text: str, settings: tuple[bool, bool]) -> list | str:
    try:
        return list(variant_environment(*settings).lex(text))
    except Exception as error:  # noqa: BLE001 - the same failure under both settings is a match
        return f"{type(error).__name__}: {error}"


def _texts() -> list[str]:
    chosen = random.Random(20250115)
    generated = ["".join(chosen.choice(_PIECES) for _ in range(chosen.randint(1, 12))) for _ in range(6000)]
    edge = ["{%-%}\nx", "{#+#}\r\nx", "{%+%}\n{% raw %} x{% endraw %}", "x\n  {% if a %}y{% endif %}", "{% if a %}\n",
            "{% if a %}\n\n", "{% if a %}\r\n", "  {#c#}x", "\u2028 {% if a %}{% endif %}"]
    return edge + generated + _corpus_sample(7)


def test_trim_blocks_cannot_act_where_no_tag_ends_a_line() -> None:
    checked = 0
    for text in _texts():
        if environment_module._TRIMMABLE.search(text):
            continue
        checked += 1
        for lstrip in (True, False):
            assert _lexes(text, (False, lstrip)) == _lexes(text, (True, lstrip)), repr(text)
    assert checked > 1000


def test_lstrip_blocks_cannot_act_where_no_tag_follows_indentation() -> None:
    checked = 0
    for text in _texts():
        if environment_module._LSTRIPPABLE.search(text):
            continue
        checked += 1
        for trim in (True, False):
            assert _lexes(text, (trim, False)) == _lexes(text, (trim, True)), repr(text)
    assert checked > 1000


def test_a_tag_ending_a_line_is_still_found_when_the_opening_carries_the_sign() -> None:
    # In "{%-%}" the "-" belongs to the opening tag, so trim_blocks still drops the newline.
    groups = behaviour.whitespace_sensitive_settings("{%-%}\nx")
    assert [settings for settings, _line, _kind in groups] == [[(False, True), (False, False)]]


def _render_under(text: str, settings: tuple[bool, bool], text_slots: bool) -> tuple:
    from templatekit.conversation import Conversation

    conversation = Conversation(messages=[{"role": "user", "content": "hi"}], kwargs={"a": True, "x": "X"})
    rendering = render_template(text, conversation, trim_blocks=settings[0], lstrip_blocks=settings[1],
                                text_slots=text_slots)
    return rendering.text, rendering.spans, rendering.error and rendering.error.describe()


def test_one_text_slotted_compile_renders_every_setting_as_its_own_compile_does() -> None:
    slotted = 0
    for text in _texts():
        slots = environment_module.compile_with_text_slots(text)
        if slots is None:
            continue
        for settings in ((True, True), *behaviour.OTHER_WHITESPACE_SETTINGS):
            if slots.variables(*settings) is None:
                continue
            slotted += 1
            assert _render_under(text, settings, True) == _render_under(text, settings, False), (repr(text), settings)
    assert slotted > 2000


def test_tk612_asks_for_one_compile_per_template_not_one_per_setting() -> None:
    text = "{% for m in messages %}\n  {% if m.content %}{{ m.content }}{% endif %}\n{% endfor %}"
    environment_module.compile_variant.cache_clear()
    (finding,) = Linter(LintConfig(select=["TK612"]), use_cache=False).lint_text(text)
    assert "also differs under" in finding.message
    assert environment_module.compile_variant.cache_info().currsize == 0


# -- the sandbox's attribute verdicts, remembered per type ------------------------------------


class _Disguised:
    """An object claiming another class: its verdict must not be remembered for its real type."""

    upper = "shadow"

    @property
    def __class__(self):  # noqa: D105 - the point of the test
        return list


@pytest.mark.parametrize(
    ("obj", "attr"),
    [({}, "items"), ({}, "pop"), ({}, "update"), ([], "append"), ([], "index"), ("s", "upper"), ("s", "format"),
     (set(), "add"), (print, "__globals__"), (len, "__self__"), (str, "mro"), ((lambda: 0), "__code__"),
     ((x for x in ()), "gi_frame"), (types.SimpleNamespace(), "__dict__"), (_Disguised(), "append"),
     (_Disguised(), "upper"), ({}, "_private")],
)
def test_attribute_verdicts_are_the_sandboxs(obj: object, attr: str) -> None:
    stock = ImmutableSandboxedEnvironment()
    expected = stock.is_safe_attribute(obj, attr, None)
    ours = environment()
    # Asked twice: the second answer may come from the memo and must not differ.
    assert ours.is_safe_attribute(obj, attr, None) == expected
    assert ours.is_safe_attribute(obj, attr, None) == expected


def test_unsafe_methods_stay_blocked_after_safe_reads_of_the_same_type() -> None:
    text = "{{ m.items()|list|length }}{{ m.pop('content') }}"
    basic = builtin_fixtures()[0]
    rendering = render_template("{% set m = messages[0] %}" + text, basic)
    assert not rendering.ok and rendering.error.kind in ("security", "error")


# -- compiling from the lint target's tree ----------------------------------------------------


@pytest.mark.parametrize("text", TRICKY_TEMPLATES[:1] + _corpus_sample(60))
def test_a_handed_over_tree_compiles_to_the_same_template(text: str) -> None:
    target = LintTarget(text)
    if target.tree is None:
        pytest.skip("does not parse")
    fixtures = builtin_fixtures()

    def renders() -> list:
        found = []
        for fixture in fixtures:
            rendering = render_template(text, fixture, now=behaviour.PINNED_NOW,
                                        special_tokens=behaviour.DEFAULT_SPECIAL_TOKENS)
            found.append((rendering.text, rendering.spans, rendering.error and rendering.error.describe()))
        return found

    compile_template.cache_clear()
    from_text = renders()
    compile_template.cache_clear()
    hand_over_tree(text, target.tree)
    assert renders() == from_text
    # The static rules read the same tree afterwards: compiling must not have changed it.
    assert target.tree == environment().parse(text)


# -- memory: nothing from one file outlives its lint -------------------------------------------


def test_linting_keeps_no_target_alive() -> None:
    linter = Linter(LintConfig(), use_cache=False)
    for text in TRICKY_TEMPLATES:
        linter.lint_text(text)
    gc.collect()
    alive = [obj for obj in gc.get_objects() if isinstance(obj, LintTarget)]
    assert alive == []


_FIND_ALL_KINDS = (nodes.Node, nodes.Macro, nodes.Name, (nodes.For, nodes.Filter),
                   (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro), nodes.Expr, nodes.Call)


@pytest.mark.parametrize("text", TRICKY_TEMPLATES + _corpus_sample(25))
def test_indexed_find_all_is_jinjas_find_all(text: str) -> None:
    from templatekit.lint.walk import find_all

    target = LintTarget(text)
    if target.tree is None:
        return
    for start in [target.tree] + list(target.tree.find_all((nodes.For, nodes.If, nodes.Macro)))[:20]:
        for kinds in _FIND_ALL_KINDS:
            assert [id(n) for n in find_all(target, start, kinds)] == [id(n) for n in start.find_all(kinds)]


# -- one lex for the token list, the parse and TK612 ------------------------------------------

_SYNTAX_EDGES = [
    "{% if %}{{ 'never closed",  # the parser fails before the lexer reaches the open string
    "{{ 'never closed",
    "{% for m in messages %}{{ m.content }}",
    "line\r\n{%- if x -%}\r\n  {{ y }}\n{% endif %}\n\n",
    "{# comment {{ x }} #}{% raw %}{% if %}{% endraw %}\t{%+ if a %}b{% endif +%}",
]


@pytest.mark.parametrize("text", TRICKY_TEMPLATES + _SYNTAX_EDGES + _corpus_sample(25))
def test_parsing_the_shared_lex_is_parsing_the_text(text: str) -> None:
    target = LintTarget(text)
    try:
        expected = environment().parse(text)
    except Exception as exc:  # noqa: BLE001 - the same failure is what is compared
        assert target.tree is None
        assert target.syntax_problem.message == str(exc.message or exc)
        assert target.syntax_problem.line == (exc.lineno or 1)
        return
    assert target.tree == expected
    # Token positions: walking lines forward gives what a search per token gives.
    for token in target.tokens:
        assert (token.line, token.column) == target.position(token.offset)


def test_tk612_reuses_the_lex_without_changing_its_answer() -> None:
    text = "{% for m in messages %}\n  {% if m.content %}{{ m.content }}{% endif %}\n{% endfor %}"
    environment_module.lex_variant.cache_clear()
    target = LintTarget(text)
    # The lint's own lex is the one TK612 finds for transformers' settings.
    assert target.lexed is environment_module.lex_variant(text, True, True)
    shared = behaviour.whitespace_sensitive_settings(text)
    environment_module.lex_variant.cache_clear()
    assert behaviour.whitespace_sensitive_settings(text) == shared
    assert shared != []


def test_linting_leaves_the_shared_fixtures_as_their_files_say() -> None:
    # The behavioural checks read the built-in fixtures without copying them; a check that
    # modified one would change every later template's result in the same process.
    from templatekit.fixtures import _parsed_builtin, builtin_names, shared_builtin_fixtures

    linter = Linter(LintConfig(), use_cache=False)
    for text in TRICKY_TEMPLATES + _corpus_sample(20):
        linter.lint_text(text)
    shared = shared_builtin_fixtures()
    assert shared and all(a is b for a, b in zip(shared, shared_builtin_fixtures()))
    assert shared == [_parsed_builtin.__wrapped__(name) for name in builtin_names()]
