"""Every rule's documentation is complete and its examples behave as documented."""

from __future__ import annotations

import pytest

from templatekit.lint.engine import run_rules
from templatekit.lint.registry import all_rules


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.code)
def test_bad_example_fires_and_good_example_is_clean(rule):
    doc = rule.doc()
    assert doc.summary and doc.why
    bad = [d for d in run_rules(rule.example_target("bad"), [rule()]) if d.code == rule.code]
    good = [d for d in run_rules(rule.example_target("good"), [rule()]) if d.code == rule.code]
    assert bad, f"{rule.code}: its Bad example does not fire"
    assert not good, f"{rule.code}: its Good example fires: {[d.message for d in good]}"
