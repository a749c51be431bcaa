"""minijinja through its Python binding (``pip install minijinja``, the ``engines`` extra).

Configured as servers that embed minijinja for chat templates (text-generation-inference,
mistral.rs) configure it: ``trim_blocks`` and ``lstrip_blocks`` on, pycompat on (Python string and
dict methods), and the two transformers globals the host registers, ``raise_exception`` and
``strftime_now``. Everything else is minijinja's own, including its ``tojson``, which escapes
``< > & '`` as ``\\u003c``…: that is what those servers emit, so it is measured, not papered over
(``tojson_shim=True`` swaps in transformers' ``json.dumps`` to see what else differs).

Data reaches the template as minijinja's own values, as it does in those Rust hosts (they hand
over serde values). The Python binding would otherwise wrap each dict and list as a live Python
object whose methods are Python's: ``message.copy()``, ``items.index(x)`` or printing ``tools``
would then behave as in transformers and hide what the engine itself does. So each job renders a
small wrapper that ``{% set %}``s every variable from a literal and includes the chat template
(``live_values=True`` passes the Python objects instead, to see the binding's own behaviour).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import selectors
import signal
import sys
import time
from datetime import datetime
from typing import Any

from ..environment import tojson as transformers_tojson
from ..processes import end_with_parent
from . import (
    BUDGET_SPENT,
    JOB_TIMEOUT,
    MEMORY_MEGABYTES,
    OK,
    PARSE_ERROR,
    RAISED,
    RENDER_SECONDS,
    RUNTIME_ERROR,
    SKIPPED,
    TEMPLATE_SECONDS,
    EngineJob,
    EngineResult,
    EngineUnavailable,
    one_line,
)

# Named by package, not by templatekit's extra: "templatekit" on PyPI is an unrelated project.
INSTALL_HINT = ("the minijinja engine needs the minijinja Python package: pip install 'minijinja>=2' "
                "(in a templatekit checkout: pip install -e '.[engines]')")
# Instruction budget per render: far above any real chat template (the largest corpus templates use
# well under a million), low enough that a runaway loop ends in seconds instead of hanging the run.
FUEL = 50_000_000
_INTERNAL_NAME = re.compile(r"\(in chat_template_[0-9a-f]+:(\d+)\)")
_CAUSE = re.compile(r"^caused by: (.*)$", re.MULTILINE)


class TemplateRaised(Exception):
    """raise_exception() was called: kept apart from minijinja's own errors, which it never is."""


class MinijinjaEngine:
    name = "minijinja"

    def __init__(self, *, tojson_shim: bool = False, live_values: bool = False, isolate: bool | None = None,
                 job_timeout: float | None = None, render_seconds: float | None = None,
                 template_seconds: float | None = None, memory_megabytes: int | None = None) -> None:
        try:
            import minijinja
        except ImportError:
            raise EngineUnavailable(INSTALL_HINT) from None
        self._minijinja = minijinja
        self.live_values = live_values
        # Fuel counts instructions, not bytes or seconds, and the binding offers no memory limit
        # (minijinja 3.1: fuel is its only resource option): `"a"*90000` doubled a dozen times
        # is under a GB for almost no fuel. So a batch renders in a forked child with an
        # address-space limit and a deadline (where fork and RLIMIT_AS exist: Linux).
        self.isolate = _CAN_ISOLATE if isolate is None else isolate
        self.job_timeout = JOB_TIMEOUT if job_timeout is None else job_timeout
        self.render_seconds = RENDER_SECONDS if render_seconds is None else render_seconds
        self.template_seconds = TEMPLATE_SECONDS if template_seconds is None else template_seconds
        self.memory_megabytes = MEMORY_MEGABYTES if memory_megabytes is None else memory_megabytes
        self.version = _version()
        # The clock strftime_now reads; set per job, since the function is registered once.
        self._now = datetime(2025, 1, 15, 10, 30)
        # transformers' own tojson (templatekit.environment), so the shim is exact by construction
        filters = {"tojson": transformers_tojson} if tojson_shim else {}
        self._env = minijinja.Environment(
            trim_blocks=True,
            lstrip_blocks=True,
            pycompat=True,
            fuel=FUEL,
            globals={"raise_exception": _raise_exception, "strftime_now": self._strftime_now},
            filters=filters,
        )
        # template text -> registered name, or the parse error it gave (parse once per template)
        self._parsed: dict[str, str | EngineResult] = {}

    def _strftime_now(self, format: str) -> str:  # noqa: A002 - transformers' parameter name
        return self._now.strftime(format)

    def _template(self, text: str) -> str | EngineResult:
        known = self._parsed.get(text)
        if known is not None:
            return known
        name = "chat_template_" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            self._env.add_template(name, text)
            known = name
        except self._minijinja.TemplateError as exc:
            known = EngineResult(PARSE_ERROR if exc.kind == "SyntaxError" else RUNTIME_ERROR, message=_message(exc))
        self._parsed[text] = known
        return known

    def render(self, job: EngineJob) -> EngineResult:
        template = self._template(job.template)
        if isinstance(template, EngineResult):
            return template
        self._now = job.now
        try:
            if self.live_values:
                text = self._env.render_template(template, **job.variables)
            else:
                text = self._env.render_str(_wrapper(template, job.variables), "variables")
        except TemplateRaised as exc:
            return EngineResult(RAISED, message=one_line(str(exc)))
        except MemoryError:  # the child's address-space limit, met in Python code
            return EngineResult(BUDGET_SPENT, message=self._out_of_memory)
        except ValueError as exc:  # a variable no literal spells (JSON data always has one)
            return EngineResult(RUNTIME_ERROR, message=one_line(f"context is not JSON data: {exc}"))
        except self._minijinja.TemplateError as exc:
            if exc.kind == "OutOfFuel" or "ran out of fuel" in str(exc):  # under the include, kind is BadInclude
                return EngineResult(BUDGET_SPENT, message=f"render ran out of fuel ({FUEL:,} instructions)")
            kind = PARSE_ERROR if exc.kind == "SyntaxError" else RUNTIME_ERROR
            return EngineResult(kind, message=_message(exc))
        except Exception as exc:  # noqa: BLE001 - Python errors from pycompat methods on live objects
            return EngineResult(RUNTIME_ERROR, message=one_line(f"{type(exc).__name__}: {exc}"))
        return EngineResult(OK, text=text)

    @property
    def _out_of_memory(self) -> str:
        return f"render ran out of the {self.memory_megabytes} MB memory budget"

    def render_batch(self, jobs: list[EngineJob]) -> list[EngineResult]:
        """Every job rendered, in a child process when isolated (see ``__init__``); a template's
        later jobs are ``SKIPPED`` once one of its renders spends the budget (a render over
        ``render_seconds``, all of them over ``template_seconds``, out of memory, or killed after
        ``job_timeout``)."""
        if not self.isolate:
            return [self.render(job) for job in jobs]
        results: list[EngineResult | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        spent: dict[str, str] = {}
        while pending:
            settled = self._render_in_child(jobs, pending, results, spent)
            for index in pending[settled:]:
                reason = spent.get(jobs[index].template)
                if reason is not None:
                    results[index] = EngineResult(SKIPPED, message=reason)
            pending = [index for index in pending[settled:] if results[index] is None]
        return results  # type: ignore[return-value] - every slot is filled above

    def _render_in_child(self, jobs: list[EngineJob], pending: list[int], results: list,
                         spent: dict[str, str]) -> int:
        """Render ``pending`` in one forked child, answers read as they come; returns how many it
        settled (at least one: a job that kills or hangs the child is settled here)."""
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: render, answer, and never return into the caller's code
            status = 1
            try:
                end_with_parent(parent)
                os.close(read_end)
                self._child(jobs, pending, write_end)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        settled = 0
        buffer = b""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(read_end, selectors.EVENT_READ)
                deadline = time.monotonic() + self.job_timeout
                while settled < len(pending):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not selector.select(timeout=remaining):
                        if time.monotonic() < deadline:
                            continue
                        message = f"render timed out after {self.job_timeout:g}s"
                        results[pending[settled]] = EngineResult(BUDGET_SPENT, message=message)
                        spent[jobs[pending[settled]].template] = ("an earlier render of this template "
                                                                  + message.removeprefix("render "))
                        return settled + 1
                    chunk = os.read(read_end, 1 << 20)
                    if not chunk:
                        # The child died mid-render: minijinja aborts the process when an
                        # allocation fails (the address-space limit), as Rust code does.
                        job = jobs[pending[settled]]
                        results[pending[settled]] = EngineResult(BUDGET_SPENT, message=self._died(pid))
                        pid = 0
                        spent[job.template] = (f"an earlier render of this template ran out of the "
                                               f"{self.memory_megabytes} MB memory budget")
                        return settled + 1
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:  # the child writes exactly one line per pending job
                        index = pending[settled]
                        answer = json.loads(line.decode("utf-8", "surrogatepass"))
                        results[index] = EngineResult(answer["status"], text=answer.get("text"),
                                                      message=answer.get("message", ""))
                        if answer.get("spent"):
                            spent[jobs[index].template] = answer["spent"]
                        settled += 1
                        deadline = time.monotonic() + self.job_timeout
            return settled
        finally:
            os.close(read_end)
            if pid:
                _reap(pid)

    def _child(self, jobs: list[EngineJob], pending: list[int], out: int) -> None:
        _limit_memory(self.memory_megabytes)
        # minijinja prints "memory allocation of N bytes failed" as it aborts, and faulthandler
        # (when on, as under pytest) a Python traceback on its own descriptor: the answer says so.
        import faulthandler

        faulthandler.disable()
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)
        # A SIGTERM handler inherited from the CLI must not run the parent's cleanup here.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        spent: dict[str, str] = {}
        used: dict[str, float] = {}
        for index in pending:
            job = jobs[index]
            reason = spent.get(job.template)
            answer: dict[str, Any]
            if reason is not None:
                answer = {"status": SKIPPED, "message": reason}
            else:
                started = time.monotonic()
                result = self.render(job)
                took = time.monotonic() - started
                used[job.template] = used.get(job.template, 0.0) + took
                answer = {"status": result.status, "text": result.text, "message": result.message}
                if result.status == BUDGET_SPENT:
                    reason = f"an earlier render of this template {result.message.removeprefix('render ')}"
                elif took >= self.render_seconds:
                    reason = (f"an earlier render of this template took {took:.1f}s, over the "
                              f"{self.render_seconds:.1f}s render budget")
                elif used[job.template] >= self.template_seconds:
                    reason = (f"this template's renders took {used[job.template]:.1f}s in all, over the "
                              f"{self.template_seconds:.1f}s budget per template")
                if reason is not None:
                    spent[job.template] = reason
                    answer["spent"] = reason
            data = (json.dumps(answer, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
            while data:
                data = data[os.write(out, data):]

    def _died(self, pid: int) -> str:
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            how = signal.Signals(os.WTERMSIG(status)).name
        else:
            how = f"exit status {os.WEXITSTATUS(status)}"
        return f"{self._out_of_memory} (the render ended the process: {how})"


# Where a render can run in a forked child under an address-space limit.
_CAN_ISOLATE = sys.platform.startswith("linux") and hasattr(os, "fork")


def _limit_memory(megabytes: int) -> None:
    """Cap the address space at what the process maps now plus ``megabytes``: the memory a render
    may add, whatever the process had mapped before (the caller's imports, its heap)."""
    import resource

    try:
        with open("/proc/self/statm", "rb") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return  # no measure of what is mapped: the deadline still holds
    limit = mapped + megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# A template variable that a `{% set %}` can bind (other keyword names cannot be read by a template).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _wrapper(template_name: str, variables: dict[str, Any]) -> str:
    """Template text that binds ``variables`` as native minijinja values, then renders the chat
    template with them (an include sees the including template's variables, as in Jinja2)."""
    bindings = "".join(
        f"{{% set {name} = {_literal(value)} %}}" for name, value in variables.items() if _IDENTIFIER.match(name)
    )
    return bindings + "{% include " + json.dumps(template_name) + " %}"


def _literal(value: Any) -> str:
    """``value`` (JSON-shaped data, as transformers passes it) as a minijinja expression."""
    if value is None:
        return "none"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no literal spelling")
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are a subset of minijinja's, and raw non-ASCII text is kept.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(key))}: {_literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    raise ValueError(f"a {type(value).__name__} has no literal spelling")


def _message(exc: Any) -> str:
    # minijinja ends messages with "(in <template name>:<line>)"; the name is our internal hash.
    kind, text = exc.kind, str(exc.message)
    if kind == "BadInclude":
        # The chat template's own error, under the wrapper's "could not render include": its
        # message is the last "caused by:" line of the report (the binding keeps no cause object).
        causes = _CAUSE.findall(str(exc))
        if causes:
            kind, text = "Error", causes[-1]
    text = _INTERNAL_NAME.sub(lambda match: f"(line {match.group(1)})", text)
    return one_line(f"{kind}: {text}")


def _raise_exception(message: Any = "") -> None:
    raise TemplateRaised(str(message))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("minijinja")
    except PackageNotFoundError:
        return "unknown"
