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


# --- sources and defaults as a user of the Python API meets them ------------------------------


@pytest.mark.parametrize("layout", ["chat_template.jinja", "additional_chat_templates/tool_use.jinja"])
def test_a_template_file_in_a_model_directory_renders_as_the_tokenizer_renders_it(tmp_path, layout):
    import templatekit

    from .test_sources import transformers_tokenizer, write_tokenizer_dir

    template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}{{ image_token }}"
    config = {"bos_token": "<s>", "eos_token": "</s>", "image_token": "<image>"}
    directory = write_tokenizer_dir(tmp_path / "model", config, {layout: template})
    messages = [{"role": "user", "content": "hi"}]
    name = "tool_use" if "tool_use" in layout else None
    expected = transformers_tokenizer(directory).apply_chat_template(messages, chat_template=name, tokenize=False)
    assert expected == "<s>hi</s><image>"
    from_file = templatekit.render(str(directory / layout), messages, add_generation_prompt=False)
    from_directory = templatekit.render(str(directory), messages, template_name=name, add_generation_prompt=False)
    assert from_file.text == from_directory.text == expected


def test_render_states_its_add_generation_prompt_default_and_how_to_get_transformers(reference):
    import doctest

    import templatekit
    from templatekit import rendering

    [examples] = doctest.DocTestFinder().find(rendering.render, globs={})
    assert doctest.DocTestRunner().run(examples).failed == 0
    calls = [example.source for example in examples.examples]
    assert any("add_generation_prompt=False" in call for call in calls), "the docstring shows how to match transformers"
    text = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}<gen>{% endif %}"
    user = [{"role": "user", "content": "hi"}]
    template = templatekit.template_from_text(text)
    transformers_default = reference.tokenizer.apply_chat_template(user, chat_template=text, tokenize=False)
    assert transformers_default == "hi"
    assert templatekit.render(template, user, add_generation_prompt=False).text == transformers_default
    assert templatekit.render(template, user).text == "hi<gen>"  # the pipeline rule, as documented
    ended = [*user, {"role": "assistant", "content": "yo"}]
    assert templatekit.render(template, ended).text == "hiyo"
