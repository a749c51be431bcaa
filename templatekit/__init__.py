"""templatekit: author, render, lint, diff and validate LLM chat templates.

``templatekit.render`` gives what ``tokenizer.apply_chat_template(..., tokenize=False)`` gives,
with one different default: ``add_generation_prompt`` is on unless the conversation ends with an
assistant message (transformers' text-generation pipeline rule, as in the CLI and fixture files);
pass ``add_generation_prompt=False`` for ``apply_chat_template``'s own default.

The public API is imported lazily so that ``import templatekit`` stays cheap (the lint path must
not pull in transformers, torch or hypothesis).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "render": ("templatekit.rendering", "render"),
    "render_template": ("templatekit.rendering", "render_template"),
    "Rendering": ("templatekit.rendering", "Rendering"),
    "Conversation": ("templatekit.conversation", "Conversation"),
    "load_conversation": ("templatekit.conversation", "load_conversation"),
    "load_source": ("templatekit.sources", "load_source"),
    "template_from_text": ("templatekit.sources", "template_from_text"),
    "TemplateSource": ("templatekit.sources", "TemplateSource"),
    "ChatTemplate": ("templatekit.sources", "ChatTemplate"),
    "Budget": ("templatekit.guards", "Budget"),
    "InputError": ("templatekit.errors", "InputError"),
    "RenderFailure": ("templatekit.errors", "RenderFailure"),
    "TemplatekitError": ("templatekit.errors", "TemplatekitError"),
    "diff": ("templatekit.comparison", "diff"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from importlib import import_module

        module, attribute = _EXPORTS[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'templatekit' has no attribute {name!r}")
