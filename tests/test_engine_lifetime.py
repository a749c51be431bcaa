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


def test_sigterm_stops_node_and_says_so(hf_engine, tmp_path) -> None:
    process, runners = _start_busy_lint(tmp_path)
    try:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        left = _left_running(runners, 3)
    assert left == []
    assert process.returncode == 128 + signal.SIGTERM
    assert b"templatekit: terminated" in stderr
    assert b"Traceback" not in stderr


def test_node_ends_itself_when_templatekit_is_killed(hf_engine, tmp_path) -> None:
    # SIGKILL runs no handler at all: only node itself can notice that its parent is gone.
    process, runners = _start_busy_lint(tmp_path)
    process.kill()
    process.communicate(timeout=10)
    assert _left_running(runners, 5) == []
