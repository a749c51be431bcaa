"""Paths templatekit may not read or must not open: unreadable directories, FIFOs and other
non-regular files met while searching a directory or loading a model directory.

Each command runs in a child process with a time limit, so a regression that opens a FIFO
fails here instead of hanging the suite. Root reads mode-000 paths anyway, so as root the child
runs with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (setpriv), which makes permissions
apply again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
DROP_READ_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                       "--inh-caps=-dac_override,-dac_read_search"]

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")


def _templatekit(*args: str, unprivileged: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "templatekit", *args]
    if unprivileged and os.geteuid() == 0:
        command = DROP_READ_OVERRIDES + command
    environment = {**os.environ, "TEMPLATEKIT_CACHE_DIR": os.environ.get("TEMPLATEKIT_CACHE_DIR", "/nonexistent-tk")}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture
def permissions_apply():
    """Skip when mode bits cannot be made to matter (root without setpriv)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: mode 000 does not stop reads")


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE, "eos_token": "</s>"}))
    return path


@pytest.fixture
def locked(tmp_path):
    """Directories made unreadable during a test, given their permissions back afterwards so
    pytest can remove them."""
    made: list[Path] = []

    def lock(path: Path) -> Path:
        path.chmod(0o000)
        made.append(path)
        return path

    yield lock
    for path in made:
        path.chmod(0o755)


def test_lint_of_a_tree_lints_what_it_can_and_names_the_unreadable_directory(tmp_path, permissions_apply, locked):
    tree = tmp_path / "tree"
    (tree / "ok.jinja").parent.mkdir(parents=True)
    (tree / "ok.jinja").write_text(TEMPLATE)
    (tree / "deny").mkdir()
    locked(tree / "deny")
    result = _templatekit("lint", "--no-cache", "-j", "1", "--format", "json", str(tree), unprivileged=True)
    assert result.returncode == 2, result.stderr
    assert "internal error" not in result.stdout + result.stderr
    reports = {Path(report["path"]).name: report for report in json.loads(result.stdout)["files"]}
    assert reports["deny"]["error"] == f"{tree / 'deny'}: cannot read: Permission denied"
    assert reports["ok.jinja"]["error"] is None and reports["ok.jinja"]["templates"] == 1


@pytest.mark.parametrize("command", [["render", "-f", "basic"], ["capabilities"], ["lint", "--no-cache"]])
def test_an_unreadable_model_directory_is_one_input_error(tmp_path, permissions_apply, locked, command):
    model = locked(_model_dir(tmp_path / "model"))
    result = _templatekit(*command, str(model), unprivileged=True)
    assert result.returncode == 2
    assert f"{model}: cannot read: Permission denied" in result.stdout + result.stderr
    assert "internal error" not in result.stdout + result.stderr


def test_a_file_inside_an_unreadable_directory_is_one_input_error(tmp_path, permissions_apply, locked):
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "t.jinja").write_text(TEMPLATE)
    locked(directory)
    result = _templatekit("render", "-f", "basic", str(directory / "t.jinja"), unprivileged=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"templatekit: error: {directory / 't.jinja'}: cannot read: Permission denied"


@needs_fifo
def test_a_fifo_found_by_a_directory_search_is_reported_not_opened(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ok.jinja").write_text(TEMPLATE)
    os.mkfifo(repo / "stray.jinja")
    result = _templatekit("lint", "--no-cache", "-j", "1", "--format", "json", str(repo), timeout=60)
    assert result.returncode == 2
    reports = {Path(report["path"]).name: report for report in json.loads(result.stdout)["files"]}
    assert reports["stray.jinja"]["error"] == (f"{repo / 'stray.jinja'}: not a regular file (a FIFO); a directory "
                                               "search reads regular files only, so it was not opened")
    assert reports["ok.jinja"]["templates"] == 1


@needs_fifo
def test_a_fifo_among_additional_templates_is_passed_over_as_transformers_does(tmp_path):
    # transformers resolves each additional template through cached_file, which takes regular
    # files only; the FIFO is never opened and the other templates load.
    model = _model_dir(tmp_path / "model")
    (model / "additional_chat_templates").mkdir()
    (model / "additional_chat_templates" / "tool_use.jinja").write_text("TOOLS")
    os.mkfifo(model / "additional_chat_templates" / "zz.jinja")
    os.mkfifo(model / "chat_template.jinja")
    result = _templatekit("render", "--raw", "-f", "basic", str(model), timeout=60)
    # Additional templates without a default: transformers' refusal, naming only the regular file.
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith("has multiple chat templates with no default; choose one by name: 'tool_use'")
    result = _templatekit("render", "--raw", "-f", "basic", "-t", "tool_use", str(model), timeout=60)
    assert (result.returncode, result.stdout) == (0, "TOOLS")


@needs_fifo
def test_a_fifo_named_on_the_command_line_is_still_read(tmp_path):
    fifo = tmp_path / "t.jinja"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, "-m", "templatekit", "render", "--raw", "-f", "basic", str(fifo)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(fifo, "w") as writer:
        writer.write("<{{ messages | length }}>")
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out) == (0, "<1>"), err
