"""One generic test runs every rule's YAML case file (tests/rules/TKxxx.yaml).

A case file::

    rule: TK201
    cases:
      strip_method_fails:
        fail: "{{ m.content.strip() }}"
        expect: ["1:14:TK201"]          # line:column:code of every finding of this rule
        severity: warning               # the severity every finding has (optional)
        fix: "{{ m.content|trim }}"     # the text after applying this rule's fixes (optional)
        unsafe: false                   # include unsafe fixes when checking `fix`
      trim_filter_passes:
        pass: "{{ m.content|trim }}"
        options: {some-option: 1}       # rule options (optional, any case)
        with: [TK091]                   # other rules to run alongside (optional)
        tokenizer: {special: ["<s>"], bos: "<s>", add_bos: true}   # the model's tokenizer (optional)

A ``tokenizer:`` mapping (``templatekit.vocabulary.vocabulary_from_mapping``'s format) beside
``cases:`` applies to every case that does not give its own; TK5xx rules need one.

``pytest -k TK201`` runs one rule's cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from templatekit.lint.engine import run_rules
from templatekit.lint.fixes import fix_until_stable
from templatekit.lint.registry import all_rules, find_rule
from templatekit.lint.rules.tokenizer import target_with_tokenizer
from templatekit.lint.target import LintTarget

CASE_DIR = Path(__file__).parent / "rules"


def load_cases():
    for path in sorted(CASE_DIR.glob("TK*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case_name, case in (data.get("cases") or {}).items():
            if "tokenizer" in data:
                case = {"tokenizer": data["tokenizer"], **case}
            yield pytest.param(data["rule"], case, id=f"{data['rule']}_{case_name}")


def lint_with(rule_cls, text, options, also=(), tokenizer=None):
    rules = [rule_cls(options)] + [find_rule(code)() for code in also]
    target = LintTarget(text) if tokenizer is None else target_with_tokenizer(text, tokenizer)
    return [d for d in run_rules(target, rules) if d.code == rule_cls.code]


@pytest.mark.parametrize("code, case", list(load_cases()))
def test_rule_case(code, case):
    rule_cls = find_rule(code)
    assert rule_cls is not None, f"{code} is not registered"
    options = case.get("options") or {}
    also = case.get("with") or ()
    tokenizer = case.get("tokenizer")
    if "pass" in case:
        found = lint_with(rule_cls, case["pass"], options, also, tokenizer)
        assert found == [], [f"{d.line}:{d.column}:{d.code} {d.message}" for d in found]
        return
    found = lint_with(rule_cls, case["fail"], options, also, tokenizer)
    assert sorted(f"{d.line}:{d.column}:{d.code}" for d in found) == sorted(case["expect"]), [d.message for d in found]
    if "severity" in case:
        assert {d.severity for d in found} == {case["severity"]}, [f"{d.severity}: {d.message}" for d in found]
    if "fix" in case:
        fixed, applied = fix_until_stable(
            case["fail"], lambda text: lint_with(rule_cls, text, options, also, tokenizer), unsafe=case.get("unsafe", False)
        )
        assert applied > 0
        assert fixed == case["fix"]


def test_every_rule_has_a_case_file_with_passing_and_failing_cases():
    for rule in all_rules():
        path = CASE_DIR / f"{rule.code}.yaml"
        assert path.exists(), f"{rule.code} has no {path.name}"
        cases = (yaml.safe_load(path.read_text(encoding="utf-8")).get("cases") or {}).values()
        assert any("pass" in case for case in cases), f"{rule.code}: no passing case"
        assert any("fail" in case for case in cases), f"{rule.code}: no failing case"


def test_unused_suppression_is_not_judged_for_rendering_rules_under_static_only():
    # A case file cannot set the configuration: static-only renders nothing, so whether the
    # TK611 suppression silences anything is unknown there; a full run knows it does not.
    from templatekit.lint.config import LintConfig

    text = "{# templatekit: disable=TK611 #}\n{% for m in messages %}{{ m.content }}{% endfor %}"
    unused = find_rule("TK090")
    static = LintTarget(text, config=LintConfig(static_only=True))
    assert [d.code for d in run_rules(static, [unused()])] == []
    assert [f"{d.line}:{d.column}:{d.code}" for d in run_rules(LintTarget(text), [unused()])] == ["1:1:TK090"]
