"""templatekit renders every real template byte for byte like transformers, errors included."""

from __future__ import annotations

import pytest

from templatekit.fixtures import builtin_fixtures
from templatekit.rendering import render_template

from .conftest import FIXED_NOW, corpus_templates, requires_corpus


def compare(reference, text: str, conversation) -> str:
    """'identical', 'same-error', or a description of the difference."""
    expected, expected_error = reference.render(text, conversation)
    result = render_template(text, conversation, special_tokens=reference.special_tokens, now=FIXED_NOW)
    if expected_error is None and result.ok and result.text == expected:
        return "identical"
    if expected_error is not None and not result.ok and result.error.message == expected_error[1]:
        return "same-error"
    ours = result.text if result.ok else f"{result.error.kind}: {result.error.message}"
    theirs = expected if expected_error is None else f"{expected_error[0]}: {expected_error[1]}"
    return f"transformers: {theirs[:300]!r}\ntemplatekit: {ours[:300]!r}"


@requires_corpus
def test_every_corpus_template_and_fixture_matches_transformers(reference):
    templates = corpus_templates()
    conversations = builtin_fixtures()
    assert len(templates) == 786
    counts = {"identical": 0, "same-error": 0}
    differences = []
    for path in templates:
        text = path.read_text(encoding="utf-8")
        for conversation in conversations:
            outcome = compare(reference, text, conversation)
            if outcome in counts:
                counts[outcome] += 1
            else:
                differences.append(f"{path.name} × {conversation.name}:\n{outcome}")
    cells = len(templates) * len(conversations)
    print(
        f"\nparity: {len(templates)} templates × {len(conversations)} fixtures = {cells} renders; "
        f"{counts['identical']} identical outputs, {counts['same-error']} identical errors, "
        f"{len(differences)} different"
    )
    assert not differences, f"{len(differences)} renders differ from transformers:\n" + "\n\n".join(differences[:10])
    assert counts["identical"] + counts["same-error"] == cells


@pytest.mark.parametrize("conversation", builtin_fixtures(), ids=lambda conversation: conversation.name)
def test_bundled_templates_match_transformers(reference, conversation):
    from importlib import resources

    for entry in resources.files("templatekit.canonical").iterdir():
        if entry.name.endswith(".jinja"):
            assert compare(reference, entry.read_text("utf-8"), conversation) in ("identical", "same-error")
