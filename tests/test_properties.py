"""Property: for generated conversations, templatekit renders exactly what transformers renders."""

from __future__ import annotations

from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from templatekit import strategies
from templatekit.rendering import render_template

from .conftest import corpus_dir
from .test_parity import compare

# Real templates of different families (ChatML, Llama 3.1 with tools, Gemma, Granite, Hermes,
# SmolLM3 with {% generation %}-free reasoning, Qwen3 with tools and reasoning).
CORPUS_TEMPLATES = (
    "Qwen-Qwen2.5-7B-Instruct.jinja",
    "Qwen-Qwen3-0.6B.jinja",
    "NousResearch-Meta-Llama-3.1-8B-Instruct.jinja",
    "NousResearch-Hermes-3-Llama-3.1-8B.jinja",
    "google-gemma-2-2b-it.jinja",
    "ibm-granite-granite-3.3-2B-Instruct.jinja",
    "HuggingFaceTB-SmolLM3-3B.jinja",
    "HuggingFaceTB-SmolLM2-135M-Instruct.jinja",
)


def templates() -> list[str]:
    found = [resources.files("templatekit.canonical").joinpath("chatml.jinja").read_text("utf-8")]
    root = corpus_dir()
    if root is not None:
        found += [(root / name).read_text(encoding="utf-8") for name in CORPUS_TEMPLATES if (root / name).exists()]
    return found


TEMPLATES = templates()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conversation=st.one_of(
        strategies.conversations(),
        strategies.conversations(tools=True),
        strategies.conversations(documents=True),
    ),
    template=st.sampled_from(TEMPLATES),
)
def test_generated_conversations_render_like_transformers(reference, conversation, template):
    assert compare(reference, template, conversation) in ("identical", "same-error")


def test_property_covers_several_template_families():
    assert len(TEMPLATES) >= 5 or corpus_dir() is None


@pytest.mark.parametrize("template", TEMPLATES[:1])
def test_generated_conversations_keep_their_text_in_chatml(template):
    @settings(max_examples=40, deadline=None)
    @given(strategies.conversations())
    def check(conversation):
        result = render_template(template, conversation)
        assert result.ok
        for message in conversation.messages:
            if isinstance(message.get("content"), str):
                assert message["content"] in result.text

    check()
