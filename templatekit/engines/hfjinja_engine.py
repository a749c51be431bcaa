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
import subprocess
import threading
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from . import OK, RUNTIME_ERROR, STATUSES, EngineJob, EngineResult, EngineUnavailable, one_line

PACKAGE = "@huggingface/jinja"
NODE_MODULES_VARIABLE = "TEMPLATEKIT_NODE_MODULES"
CACHE_PREFIX = Path("~/.cache/templatekit/node")
INSTALL_COMMAND = f"npm install --prefix {CACHE_PREFIX} {PACKAGE}"
# Seconds one render may take before it counts as hung; real templates render in milliseconds.
JOB_TIMEOUT = 20.0


class HfJinjaEngine:
    name = "hf-jinja"

    def __init__(self, *, node_modules: str | os.PathLike | None = None, node: str | None = None,
                 job_timeout: float = JOB_TIMEOUT) -> None:
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
        self.job_timeout = job_timeout
        self._works: bool | None = None  # whether node runs the package at all (_runner_works)

    def render(self, job: EngineJob) -> EngineResult:
        return self.render_batch([job])[0]

    @property
    def _timed_out(self) -> str:
        """The message of a job that hung (the only result with it)."""
        return f"render timed out after {self.job_timeout:g}s"

    def render_batch(self, jobs: list[EngineJob]) -> list[EngineResult]:
        """Every job rendered by one node process (restarted only after a job that hangs). After a
        job hangs, the later jobs of the same template are not run: each would hang as long."""
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
            done = self._run_node(pending, results)
            hung = {job.template for index, job, _ in pending[:done] if results[index].message == self._timed_out}
            pending = pending[done:]
            for index, job, _ in pending:
                if job.template in hung:
                    results[index] = EngineResult(RUNTIME_ERROR, message=f"not run: an earlier render of this "
                                                  f"template timed out after {self.job_timeout:g}s")
            pending = [entry for entry in pending if entry[1].template not in hung]
        return results  # type: ignore[return-value] - every slot is filled above

    def _run_node(self, pending: list[tuple[int, EngineJob, Any]], results: list, *, checking: bool = False) -> int:
        """Run ``pending`` in one node process; returns how many jobs it settled (≥ 1; 0 only
        when ``checking`` whether node and the package run at all)."""
        templates: dict[str, int] = {}
        jobs = []
        for _, job, context in pending:
            slot = templates.setdefault(job.template, len(templates))
            moment = job.now
            jobs.append({"template": slot, "context": context,
                         "now": [moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second]})
        payload = json.dumps({"module": str(self.module), "templates": list(templates), "jobs": jobs},
                             ensure_ascii=False).encode("utf-8")
        runner = resources.files("templatekit.engines").joinpath("hfjinja_runner.mjs")
        with resources.as_file(runner) as script:
            process = subprocess.Popen([self.node, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
            # Written from a thread: a large batch would otherwise fill the pipe while node waits.
            writer = threading.Thread(target=_feed, args=(process, payload), daemon=True)
            writer.start()
            settled = self._collect(process, pending, results)
            writer.join()
            stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
            process.wait()
        if settled == 0 and not checking:
            if not self._runner_works():
                # The runner died before any result (bad install, syntax the node version lacks).
                raise EngineUnavailable(f"{PACKAGE} runner failed ({one_line(stderr) or 'no output'}); "
                                        f"check node and reinstall: {INSTALL_COMMAND}")
            # node runs, so the first job itself brought it down (V8 aborts the process on an
            # array of a billion items, for one): that job's failure, not the engine's.
            results[pending[0][0]] = EngineResult(RUNTIME_ERROR, message=one_line(f"node crashed: {stderr}"))
            return 1
        return settled

    def _runner_works(self) -> bool:
        """Whether node renders a trivial template with the package (asked once per engine)."""
        if self._works is None:
            scratch: list = [None]
            self._works = self._run_node([(0, EngineJob("ok", {}, datetime(2025, 1, 15)), {})], scratch,
                                         checking=True) == 1 and scratch[0].status == OK
        return self._works

    def _collect(self, process: subprocess.Popen, pending: list, results: list) -> int:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        buffer = b""
        settled = 0
        deadline = time.monotonic() + self.job_timeout + 10.0  # the first job also pays node's start-up
        try:
            while settled < len(pending):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(timeout=remaining):
                    process.kill()
                    if settled == 0 and process.poll() is not None and process.returncode not in (None, -9):
                        return 0
                    index = pending[settled][0]
                    results[index] = EngineResult(RUNTIME_ERROR, message=self._timed_out)
                    return settled + 1
                chunk = os.read(process.stdout.fileno(), 1 << 16)
                if not chunk:  # node exited early; whatever is unsettled is retried or reported
                    return settled
                buffer += chunk
                while b"\n" in buffer and settled < len(pending):
                    line, buffer = buffer.split(b"\n", 1)
                    results[pending[settled][0]] = _result(json.loads(line))
                    settled += 1
                    deadline = time.monotonic() + self.job_timeout
        finally:
            selector.close()
        return settled


def _feed(process: subprocess.Popen, payload: bytes) -> None:
    try:
        process.stdin.write(payload)
        process.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # node exited early; the reader reports what it got


def _result(data: dict) -> EngineResult:
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
