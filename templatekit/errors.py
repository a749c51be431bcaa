"""Errors templatekit reports to its users.

Every error a user can cause derives from ``TemplatekitError`` and renders as one line through
``str()``; the CLI prints that line and exits 2 (input) or 1 (the template failed). Nothing here
prints or exits.
"""

from __future__ import annotations

from pathlib import Path


class TemplatekitError(Exception):
    """Base class of the errors templatekit explains in one line."""


class InputError(TemplatekitError):
    """A file, option or value the user gave cannot be used (exit code 2).

    ``location`` names the file (and, where it helps, the template or field inside it) so the
    message always says where the problem is.
    """

    def __init__(self, location: str | Path | None, problem: str) -> None:
        self.location = str(location) if location is not None else None
        self.problem = problem
        super().__init__(f"{self.location}: {problem}" if self.location else problem)


class RenderFailure(TemplatekitError):
    """Rendering did not produce a prompt.

    ``kind`` is one of:

    - ``"raised"``: the template called ``raise_exception`` (its own message, intended);
    - ``"syntax"``: the template does not parse;
    - ``"error"``: the template failed while rendering (undefined attribute, type error, ...);
    - ``"security"``: the sandbox refused an operation;
    - ``"budget"``: a time, size, memory or recursion budget was exhausted;
    - ``"input"``: transformers rejects the inputs before rendering (for example
      ``continue_final_message`` together with ``add_generation_prompt``).

    ``message`` is exactly the message transformers would raise with (for parity checks);
    ``location`` is "file:line" inside the file the user edits, when known.
    """

    KINDS = ("raised", "syntax", "error", "security", "budget", "input")

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        exception_type: str = "",
        location: str | None = None,
        line: int | None = None,
    ) -> None:
        assert kind in self.KINDS, kind
        self.kind = kind
        self.message = message
        self.exception_type = exception_type
        self.location = location
        self.line = line
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: where, what kind, and the message (newlines shown as spaces)."""
        where = f"{self.location}: " if self.location else ""
        label = {
            "raised": "template raised",
            "syntax": "syntax error",
            "error": f"render error ({self.exception_type})" if self.exception_type else "render error",
            "security": "sandbox refused",
            "budget": "budget exceeded",
            "input": "invalid input",
        }[self.kind]
        flat = " ".join(self.message.split("\n"))
        return f"{where}{label}: {flat}"


class BudgetExceeded(Exception):
    """Raised inside a render when a guard trips; turned into ``RenderFailure(kind="budget")``."""
