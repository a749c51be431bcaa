"""@huggingface/jinja (the engine of transformers.js and the Hub's template playground), run by node.

The package is found in a ``node_modules`` directory: the ``node_modules`` option, else the
``TEMPLATEKIT_NODE_MODULES`` environment variable, else the first ``node_modules`` holding it in
the working directory or one of its parents, else ``~/.cache/templatekit/node/node_modules`` (where
``npm install --prefix ~/.cache/templatekit/node @huggingface/jinja`` puts it). A batch of jobs is
one node process running ``hfjinja_runner.mjs``: node's start-up and the package's import cost
tens of milliseconds, paid once per batch, not per render.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from . import (
    BUDGET_SPENT,
    JOB_TIMEOUT,
    MEMORY_MEGABYTES,
    OK,
    RENDER_SECONDS,
    RUNTIME_ERROR,
    SKIPPED,
    STATUSES,
    TEMPLATE_SECONDS,
    EngineJob,
    EngineResult,
    EngineUnavailable,
    one_line,
)

PACKAGE = "@huggingface/jinja"
NODE_MODULES_VARIABLE = "TEMPLATEKIT_NODE_MODULES"
CACHE_PREFIX = Path("~/.cache/templatekit/node")
INSTALL_COMMAND = f"npm install --prefix {CACHE_PREFIX} {PACKAGE}"
# Seconds node may take to start and import the package before its first answer. A runner still
# silent after this long is asked to render a trivial template: one that cannot is unusable.
START_TIMEOUT = 10.0
# Seconds node's stderr is still read after node is killed: a process it started outside its
# process group may hold the pipe open forever, and must not hold templatekit too.
DRAIN_TIMEOUT = 1.0
# V8's old-space limit for the runner: real templates need a few MB; node's own default is a
# quarter of the machine's memory (GBs), which one `range(30000000)|length` fills.
HEAP_MEGABYTES = MEMORY_MEGABYTES
# Bytes of node's stderr kept for a failure message (only its start is ever shown).
STDERR_LIMIT = 1 << 16


class HfJinjaEngine:
    name = "hf-jinja"

    def __init__(self, *, node_modules: str | os.PathLike | None = None, node: str | None = None,
                 job_timeout: float | None = None, start_timeout: float | None = None,
                 heap_megabytes: int | None = None, render_seconds: float | None = None,
                 template_seconds: float | None = None) -> None:
        self.node = node or shutil.which("node")
        if not self.node:
            raise EngineUnavailable(
                f"the hf-jinja engine needs node (Node.js 18 or newer) on PATH, then: {INSTALL_COMMAND}"
            )
        self.package_dir = find_package(node_modules)
        manifest = json.loads((self.package_dir / "package.json").read_text("utf-8"))
        self.version = manifest.get("version", "unknown")
        # The ESM build: the runner needs the Environment class the package exports from it.
        self.module = self.package_dir / manifest.get("module", "dist/index.js")
        if not self.module.is_file():
            raise EngineUnavailable(f"{self.package_dir} has no {self.module.name}; reinstall: {INSTALL_COMMAND}")
        # Read at construction, not import, so a caller (or a test) can change the module's defaults.
        self.job_timeout = JOB_TIMEOUT if job_timeout is None else job_timeout
        self.start_timeout = START_TIMEOUT if start_timeout is None else start_timeout
        self.heap_megabytes = HEAP_MEGABYTES if heap_megabytes is None else heap_megabytes
        self.render_seconds = RENDER_SECONDS if render_seconds is None else render_seconds
        self.template_seconds = TEMPLATE_SECONDS if template_seconds is None else template_seconds
        self._works = False  # node rendered the trivial template (_check_runner)
        self._broken: str | None = None  # why it could not, once known

    def render(self, job: EngineJob) -> EngineResult:
        return self.render_batch([job])[0]

    @property
    def _timed_out(self) -> str:
        """The message of a job that hung (the only result with it)."""
        return f"render timed out after {self.job_timeout:g}s"

    def render_batch(self, jobs: list[EngineJob]) -> list[EngineResult]:
        """Every job rendered by one node process (restarted only after a job that hangs or
        crashes). Once a render of a template spends the budget (over ``render_seconds``, all of
        them over ``template_seconds``, hung past ``job_timeout`` or out of heap), the template's
        later jobs are ``SKIPPED``: each would spend as much again."""
        results: list[EngineResult | None] = [None] * len(jobs)
        pending = []
        for index, job in enumerate(jobs):
            try:
                # Round-tripped through JSON here, so a value JSON cannot carry fails only its job.
                context = json.loads(json.dumps(job.variables, allow_nan=False))
            except (TypeError, ValueError) as exc:
                results[index] = EngineResult(RUNTIME_ERROR, message=one_line(f"context is not JSON: {exc}"))
                continue
            pending.append((index, job, context))
        while pending:
            done, _ = self._run_node(pending, results)
            # The runner skips a template's jobs itself once a finished render spent its time;
            # a render killed here (hung, out of heap) took the runner down with it.
            spent = {job.template: results[index].message for index, job, _ in pending[:done]
                     if results[index].status == BUDGET_SPENT}
            pending = pending[done:]
            for index, job, _ in pending:
                if job.template in spent:
                    reason = spent[job.template]
                    what = reason.removeprefix("render ").split(" (")[0] if reason.startswith("render ") \
                        else "crashed node"
                    results[index] = EngineResult(SKIPPED, message=f"an earlier render of this template {what}")
            pending = [entry for entry in pending if entry[1].template not in spent]
        return results  # type: ignore[return-value] - every slot is filled above

    def _run_node(self, pending: list[tuple[int, EngineJob, Any]], results: list, *,
                  checking: bool = False) -> tuple[int, str]:
        """Run ``pending`` in one node process; returns how many jobs it settled (≥ 1; 0 only
        when ``checking`` whether node and the package run at all) and node's stderr. Raises
        ``EngineUnavailable`` when node cannot render anything."""
        templates: dict[str, int] = {}
        jobs = []
        for _, job, context in pending:
            slot = templates.setdefault(job.template, len(templates))
            moment = job.now
            jobs.append({"template": slot, "context": context,
                         "now": [moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second]})
        budget = {"render_ms": self.render_seconds * 1000, "template_ms": self.template_seconds * 1000}
        payload = json.dumps({"module": str(self.module), "templates": list(templates), "jobs": jobs,
                              "budget": budget}, ensure_ascii=False).encode("utf-8")
        runner = resources.files("templatekit.engines").joinpath("hfjinja_runner.mjs")
        errors = bytearray()
        with resources.as_file(runner) as script:
            # Its own session: a timeout kills node and whatever node started, which would
            # otherwise keep the pipes open (and the reads below waiting) after node is gone.
            # The heap cap makes a memory bomb end node (and only its job) in a second or two,
            # not take gigabytes from the machine; the pid lets node notice templatekit is gone.
            command = [self.node, f"--max-old-space-size={self.heap_megabytes}", str(script), str(os.getpid())]
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, start_new_session=_GROUPS)
            # Written from a thread: a large batch would otherwise fill the pipe while node waits.
            writer = threading.Thread(target=_feed, args=(process, payload), daemon=True)
            writer.start()
            try:
                settled = self._collect(process, pending, results, errors, checking=checking)
            finally:
                _stop(process, errors)
                # A daemon: blocked only if something outside the group still holds node's stdin.
                writer.join(DRAIN_TIMEOUT)
        stderr = bytes(errors).decode("utf-8", "replace")
        if settled == 0 and not checking:
            # The runner died before any result: a broken install or a node too old for its syntax
            # raise here; when a trivial template renders, the first job itself brought node down
            # (V8 aborts the process on an array of a billion items, for one): that job's failure.
            self._check_runner()
            if "heap out of memory" in stderr or "heap limit" in stderr:
                message = f"render ran out of the {self.heap_megabytes} MB heap budget (node ended)"
            else:
                message = f"node crashed: {stderr}"
            # Either way the template's next render would bring node down again.
            results[pending[0][0]] = EngineResult(BUDGET_SPENT, message=one_line(message))
            return 1, stderr
        return settled, stderr

    def _check_runner(self) -> None:
        """Raise ``EngineUnavailable`` unless node renders a trivial template with the package
        (asked at most once per engine, and only after a batch gave no answer)."""
        if self._works:
            return
        if self._broken is None:
            scratch: list = [None]
            try:
                settled, stderr = self._run_node([(0, EngineJob("ok", {}, datetime(2025, 1, 15)), {})], scratch,
                                                 checking=True)
            except EngineUnavailable as exc:
                self._broken = str(exc)
            else:
                if settled == 1 and scratch[0].status == OK and scratch[0].text == "ok":
                    self._works = True
                    return
                detail = stderr or (scratch[0].message if settled else "") or "no output"
                self._broken = (f"{PACKAGE} runner failed ({one_line(detail)}); "
                                f"check node and reinstall: {INSTALL_COMMAND}")
        raise EngineUnavailable(self._broken)

    def _collect(self, process: subprocess.Popen, pending: list, results: list, errors: bytearray, *,
                 checking: bool) -> int:
        """Read node's answers into ``results`` until every job is settled, node exits, or a job
        overruns its time; returns how many jobs were settled."""
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)  # read as it comes: a full pipe stalls node
        buffer = b""
        settled = 0
        started = time.monotonic()
        # The first answer also pays node's start-up; the check's trivial render costs nothing more.
        deadline = started + self.start_timeout + (0.0 if checking else self.job_timeout)
        try:
            ready = False
            while settled < len(pending):
                # Silent since start-up should have ended: a runner that answers nothing at all
                # must not pass for a first template that hangs (nor hold every fixture that long).
                unsure = settled == 0 and not checking and not self._works and not ready
                if unsure and time.monotonic() >= started + self.start_timeout:
                    self._check_runner()
                    unsure = False
                limit = min(deadline, started + self.start_timeout) if unsure else deadline
                remaining = limit - time.monotonic()
                events = selector.select(timeout=remaining) if remaining > 0 else []
                if not events:
                    if time.monotonic() < deadline:
                        continue  # only the start-up allowance is over: the check above comes first
                    if checking:
                        raise EngineUnavailable(
                            f"{PACKAGE} runner gave no answer within {self.start_timeout:g}s"
                            f"{_detail(errors)}; check node and reinstall: {INSTALL_COMMAND}")
                    results[pending[settled][0]] = EngineResult(BUDGET_SPENT, message=self._timed_out)
                    return settled + 1
                for key, _ in events:
                    chunk = os.read(key.fd, 1 << 16)
                    if key.fileobj is process.stderr:
                        if not chunk:
                            selector.unregister(process.stderr)
                        errors += chunk[: max(0, STDERR_LIMIT - len(errors))]
                        continue
                    if not chunk:  # node exited early; whatever is unsettled is retried or reported
                        return settled
                    buffer += chunk
                    while b"\n" in buffer and settled < len(pending):
                        line, buffer = buffer.split(b"\n", 1)
                        if line == READY and not ready and settled == 0:
                            # Start-up is over: the first render gets the time any other gets.
                            ready = True
                            deadline = time.monotonic() + self.job_timeout
                            continue
                        results[pending[settled][0]] = _result(line)
                        settled += 1
                        deadline = time.monotonic() + self.job_timeout
        finally:
            selector.close()
        return settled


# The runner's first line once node has started and imported the package.
READY = b'{"ready":true}'
# Whether node can be put in a process group of its own and the group killed (POSIX).
_GROUPS = hasattr(os, "killpg")


def _stop(process: subprocess.Popen, errors: bytearray) -> None:
    """Kill node and every process it started, keep the rest of its stderr, reap it. Bounded: a
    process that left node's group may hold stderr open, so it is read for a moment only."""
    try:
        # The group still exists here: node is not reaped yet, so its id cannot have been reused.
        if _GROUPS:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass  # everything already exited
    end = time.monotonic() + DRAIN_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while (remaining := end - time.monotonic()) > 0 and selector.select(timeout=remaining):
            chunk = os.read(process.stderr.fileno(), 1 << 16)
            if not chunk:
                break
            errors += chunk[: max(0, STDERR_LIMIT - len(errors))]
    try:
        process.wait(timeout=DRAIN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass  # killed but not yet gone (uninterruptible I/O): nothing left to wait for
    process.stdout.close()
    process.stderr.close()


def _detail(errors: bytearray) -> str:
    text = one_line(bytes(errors).decode("utf-8", "replace"))
    return f" ({text})" if text else ""


def _feed(process: subprocess.Popen, payload: bytes) -> None:
    try:
        process.stdin.write(payload)
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # node exited early; the reader reports what it got


def _result(line: bytes) -> EngineResult:
    try:
        data = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        data = None
    if not isinstance(data, dict) or (data.get("status") == OK and not isinstance(data.get("text", ""), str)):
        # The runner prints nothing but JSON objects: this is another program, or node's own
        # output (a wrapper script, a node too old to run the runner). No job's failure.
        shown = one_line(line.decode("utf-8", "replace"), 80)
        raise EngineUnavailable(f"{PACKAGE} runner gave unexpected output ({shown!r} is not a JSON result); "
                                f"check node and reinstall: {INSTALL_COMMAND}")
    status = data.get("status")
    if status not in STATUSES:
        return EngineResult(RUNTIME_ERROR, message=f"unexpected runner output: {one_line(json.dumps(data))}")
    if status == OK:
        return EngineResult(OK, text=data.get("text", ""))
    return EngineResult(status, message=one_line(data.get("message", "")))


def candidate_dirs(node_modules: str | os.PathLike | None = None) -> list[Path]:
    """The ``node_modules`` directories searched, in order (an explicit choice is the only one)."""
    if node_modules is not None:
        return [Path(node_modules).expanduser()]
    configured = os.environ.get(NODE_MODULES_VARIABLE)
    if configured:
        return [Path(configured).expanduser()]
    here = Path.cwd().resolve()
    found = [directory / "node_modules" for directory in (here, *here.parents)]
    found.append(CACHE_PREFIX.expanduser() / "node_modules")
    return found


def find_package(node_modules: str | os.PathLike | None = None) -> Path:
    """The installed @huggingface/jinja package directory; ``EngineUnavailable`` saying where it looked."""
    searched = candidate_dirs(node_modules)
    for directory in searched:
        package = directory / PACKAGE
        if (package / "package.json").is_file():
            return package
    if node_modules is not None or os.environ.get(NODE_MODULES_VARIABLE):
        where = str(searched[0])
        source = "the node_modules option" if node_modules is not None else NODE_MODULES_VARIABLE
        given = searched[0]
        if given.name == "node_modules":
            install = f"install it there: npm install --prefix {given.parent} {PACKAGE}"
        else:
            # npm --prefix DIR installs into DIR/node_modules, so a directory of another name
            # can only be reached through a node_modules folder inside it.
            install = (f"install it with npm install --prefix {given} {PACKAGE} and give "
                       f"{given / 'node_modules'}")
        return _missing(f"{PACKAGE} is not installed in {where} (from {source}); {install}")
    return _missing(f"{PACKAGE} not found in any node_modules from the working directory up, nor in "
                    f"{CACHE_PREFIX}/node_modules; install it: {INSTALL_COMMAND} "
                    f"(or point {NODE_MODULES_VARIABLE} at a node_modules that has it)")


def _missing(message: str) -> Path:
    raise EngineUnavailable(message)
