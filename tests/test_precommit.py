"""The pre-commit hook, run for real with `pre-commit try-repo` on a temporary repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def try_repo(cwd):
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(REPO), "templatekit-lint", "--all-files", "--color", "never"],
        cwd=cwd, capture_output=True, text=True, timeout=900,
    )


def test_hook_fails_on_a_bad_template_and_passes_after_the_fix(tmp_path):
    project = tmp_path / "model-repo"
    project.mkdir()
    git("init", "-q", cwd=project)
    template = project / "chat_template.jinja"
    template.write_text("{# templatekit: disabel #}\n{% for m in messages %}{{ m['content'] }}{% endfor %}", encoding="utf-8")
    (project / "README.md").write_text("not a template\n", encoding="utf-8")
    git("add", ".", cwd=project)
    git("commit", "-qm", "bad template", cwd=project)

    failing = try_repo(project)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "TK091" in failing.stdout
    assert "README.md" not in failing.stdout

    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", encoding="utf-8")
    git("add", ".", cwd=project)
    git("commit", "-qm", "fix", cwd=project)
    passing = try_repo(project)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "Passed" in passing.stdout
