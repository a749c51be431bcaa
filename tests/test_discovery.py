"""Which sources `templatekit lint DIRECTORY` finds, and what it says when there are none."""

from __future__ import annotations

import json
from pathlib import Path

from templatekit.lint.runner import discover, lint_paths

TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _found(root: Path) -> list[str]:
    return [str(path.relative_to(root.parent)) for path in discover([root])]


def test_a_base_model_directory_is_a_note_not_an_error(tmp_path) -> None:
    base = tmp_path / "base"
    _write(base / "tokenizer_config.json", json.dumps({"bos_token": "<s>"}))
    [report] = lint_paths([base], use_cache=False)
    assert report.error is None
    assert report.templates == 0
    assert "without a chat template" in report.notes[0]


def test_templates_beside_a_base_models_files_are_linted(tmp_path) -> None:
    mixed = tmp_path / "mixed"
    _write(mixed / "tokenizer_config.json", json.dumps({"bos_token": "<s>"}))
    _write(mixed / "a.jinja", TEMPLATE)
    assert _found(mixed) == ["mixed/a.jinja"]


def test_a_model_directory_is_one_source_and_its_own_templates_are_not_linted_twice(tmp_path) -> None:
    root = tmp_path / "repo"
    model = root / "model"
    _write(model / "tokenizer_config.json", json.dumps({"chat_template": TEMPLATE}))
    _write(model / "additional_chat_templates" / "tool_use.jinja", TEMPLATE)
    _write(model / "chat_template.jinja", TEMPLATE)
    _write(model / "examples" / "other.jinja", TEMPLATE)
    _write(root / "top.jinja", TEMPLATE)
    assert _found(root) == ["repo/model", "repo/model/examples/other.jinja", "repo/top.jinja"]


def test_installed_packages_and_environments_are_not_searched(tmp_path) -> None:
    root = tmp_path / "project"
    _write(root / "chat.jinja", TEMPLATE)
    _write(root / "node_modules" / "pkg" / "t.jinja", TEMPLATE)
    _write(root / "env" / "pyvenv.cfg", "home = /usr/bin\n")
    _write(root / "env" / "lib" / "t.jinja", TEMPLATE)
    _write(root / "lib" / "python3.11" / "site-packages" / "p" / "t.jinja", TEMPLATE)
    _write(root / ".git" / "t.jinja", TEMPLATE)
    _write(root / "__pycache__" / "t.jinja", TEMPLATE)
    _write(root / "templates" / "t.j2", TEMPLATE)
    assert _found(root) == ["project/chat.jinja", "project/templates/t.j2"]


def test_a_package_folder_given_by_name_is_still_linted(tmp_path) -> None:
    given = tmp_path / "node_modules" / "pkg"
    _write(given / "t.jinja", TEMPLATE)
    assert _found(given) == ["pkg/t.jinja"]


def test_a_directory_with_nothing_to_lint_says_so(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    [report] = lint_paths([empty], use_cache=False)
    assert report.error and "no chat template" in report.error
