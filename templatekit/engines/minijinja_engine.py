"""minijinja through its Python binding (``pip install minijinja``, the ``engines`` extra).

Configured as servers that embed minijinja for chat templates (text-generation-inference,
mistral.rs) configure it: ``trim_blocks`` and ``lstrip_blocks`` on, pycompat on (Python string and
dict methods), and the two transformers globals the host registers, ``raise_exception`` and
``strftime_now``. Everything else is minijinja's own, including its ``tojson``, which escapes
``< > & '`` as ``\\u003c``…: that is what those servers emit, so it is measured, not papered over
(``tojson_shim=True`` swaps in transformers' ``json.dumps`` to see what else differs).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from ..environment import tojson as transformers_tojson
from . import OK, PARSE_ERROR, RAISED, RUNTIME_ERROR, EngineJob, EngineResult, EngineUnavailable, one_line

INSTALL_HINT = "the minijinja engine needs the minijinja Python package: pip install 'templatekit[engines]'"
# Instruction budget per render: far above any real chat template (the largest corpus templates use
# well under a million), low enough that a runaway loop ends in seconds instead of hanging the run.
FUEL = 50_000_000
_INTERNAL_NAME = re.compile(r"\(in chat_template_[0-9a-f]+:(\d+)\)")


class TemplateRaised(Exception):
    """raise_exception() was called: kept apart from minijinja's own errors, which it never is."""


class MinijinjaEngine:
    name = "minijinja"

    def __init__(self, *, tojson_shim: bool = False) -> None:
        try:
            import minijinja
        except ImportError:
            raise EngineUnavailable(INSTALL_HINT) from None
        self._minijinja = minijinja
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
            text = self._env.render_template(template, **job.variables)
        except TemplateRaised as exc:
            return EngineResult(RAISED, message=one_line(str(exc)))
        except self._minijinja.TemplateError as exc:
            kind = PARSE_ERROR if exc.kind == "SyntaxError" else RUNTIME_ERROR
            return EngineResult(kind, message=_message(exc))
        except Exception as exc:  # noqa: BLE001 - Python errors from pycompat methods on live objects
            return EngineResult(RUNTIME_ERROR, message=one_line(f"{type(exc).__name__}: {exc}"))
        return EngineResult(OK, text=text)

    def render_batch(self, jobs: list[EngineJob]) -> list[EngineResult]:
        return [self.render(job) for job in jobs]


def _message(exc: Any) -> str:
    # minijinja ends messages with "(in <template name>:<line>)"; the name is our internal hash.
    text = _INTERNAL_NAME.sub(lambda match: f"(line {match.group(1)})", str(exc.message))
    return one_line(f"{exc.kind}: {text}")


def _raise_exception(message: Any = "") -> None:
    raise TemplateRaised(str(message))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("minijinja")
    except PackageNotFoundError:
        return "unknown"
