"""The @huggingface/jinja node runner never outlives the templatekit process that started it.

A template that keeps node busy (a loop only the engines see: Jinja2 defines ``lipsum``) is linted
with ``--engines hf-jinja`` in a real subprocess; the test ends that process the way CI, ``timeout``
or the OOM killer would, and then looks for the node runner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

if sys.platform == "win32":  # pragma: no cover - signals and /proc
    pytest.skip("POSIX signals", allow_module_level=True)

BUSY = ("{% for m in messages %}{{ m.content }}{% endfor %}{% if lipsum is not defined %}"
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}")


def _runners_of(parent: int) -> list[int]:
    """Live node runner processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z" and int(ppid) == parent and any(arg.endswith(b"hfjinja_runner.mjs") for arg in argv):
            found.append(int(entry.name))
    return found


def _wait_for(predicate, seconds: float):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def _start_busy_lint(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    template = tmp_path / "busy.jinja"
    template.write_text(BUSY)
    process = subprocess.Popen(
        [sys.executable, "-m", "templatekit", "lint", "--no-cache", "--jobs", "1", "--engines", "hf-jinja",
         str(template)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TEMPLATEKIT_DEBUG": ""},
    )
    runners = _wait_for(lambda: _runners_of(process.pid), 30)
    if not runners:
        process.kill()
        process.communicate()
        pytest.fail("the node runner never started")
    time.sleep(0.3)  # node is now rendering the endless loop
    return process, runners


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _left_running(runners: list[int], seconds: float) -> list[int]:
    """The runners still alive after ``seconds``; each is killed, so no test leaves an orphan."""
    _wait_for(lambda: not any(_alive(pid) for pid in runners), seconds)
    left = [pid for pid in runners if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def test_sigterm_ends_templatekit_at_once_and_node_with_it(hf_engine, tmp_path) -> None:
    # SIGTERM keeps its default action: a handler in Python would wait for a render stuck in one
    # C call. node notices by itself that its parent is gone.
    process, runners = _start_busy_lint(tmp_path)
    try:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    finally:
        left = _left_running(runners, 3)
    assert left == []
    assert process.returncode == -signal.SIGTERM


def _children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if state != "Z" and int(ppid) == parent:
                found.append(int(entry.name))
    return found


def _killed_leaves_no_child(tmp_path: Path, template: str, copies: int, *options: str) -> None:
    for index in range(copies):
        (tmp_path / f"busy{index}.jinja").write_text(template + "{# " + str(index) + " #}")
    target = tmp_path if copies > 1 else tmp_path / "busy0.jinja"
    process = subprocess.Popen([sys.executable, "-m", "templatekit", "lint", "--no-cache", *options, str(target)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = _wait_for(lambda: _children_of(process.pid), 60)
    time.sleep(0.3)
    process.kill()
    process.communicate(timeout=10)
    assert children, "no child process started"
    assert _left_running(children, 5) == []


def test_lint_workers_end_when_templatekit_is_killed(tmp_path) -> None:
    # Each render loops for a good part of lint's render budget: the workers are busy for long.
    slow = ("{% for i in range(500) %}{% for j in range(500) %}{% endfor %}{% endfor %}"
            "{% for m in messages %}{{ m.content }}{% endfor %}")
    _killed_leaves_no_child(tmp_path, slow, 6, "--jobs", "2")


def test_minijinja_child_ends_when_templatekit_is_killed(tmp_path) -> None:
    pytest.importorskip("minijinja")
    # minijinja alone loops for a while on this; Jinja2 never sees the loop.
    busy = ("{% for m in messages %}{{ m.content }}{% endfor %}{% if lipsum is not defined %}"
            "{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}{% endif %}")
    _killed_leaves_no_child(tmp_path, busy, 1, "--jobs", "1", "--engines", "minijinja")


def test_node_ends_itself_when_templatekit_is_killed(hf_engine, tmp_path) -> None:
    # SIGKILL runs no handler at all: only node itself can notice that its parent is gone.
    process, runners = _start_busy_lint(tmp_path)
    process.kill()
    process.communicate(timeout=10)
    assert _left_running(runners, 5) == []
