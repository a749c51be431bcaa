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
import re
from datetime import datetime
from typing import Any

from ..environment import tojson as transformers_tojson
from . import OK, PARSE_ERROR, RAISED, RUNTIME_ERROR, EngineJob, EngineResult, EngineUnavailable, one_line

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

    def __init__(self, *, tojson_shim: bool = False, live_values: bool = False) -> None:
        try:
            import minijinja
        except ImportError:
            raise EngineUnavailable(INSTALL_HINT) from None
        self._minijinja = minijinja
        self.live_values = live_values
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
        except ValueError as exc:  # a variable no literal spells (JSON data always has one)
            return EngineResult(RUNTIME_ERROR, message=one_line(f"context is not JSON data: {exc}"))
        except self._minijinja.TemplateError as exc:
            kind = PARSE_ERROR if exc.kind == "SyntaxError" else RUNTIME_ERROR
            return EngineResult(kind, message=_message(exc))
        except Exception as exc:  # noqa: BLE001 - Python errors from pycompat methods on live objects
            return EngineResult(RUNTIME_ERROR, message=one_line(f"{type(exc).__name__}: {exc}"))
        return EngineResult(OK, text=text)

    def render_batch(self, jobs: list[EngineJob]) -> list[EngineResult]:
        return [self.render(job) for job in jobs]


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
