"""Child processes that end with templatekit.

A render can hold the interpreter inside one C call for as long as it likes (the budgets refuse
what they can foresee, but a signal handler written in Python waits for that call to return), so
SIGTERM keeps its default action: the process ends at once. Children cannot rely on being told:
each one asks the kernel to kill it when its parent goes (Linux's parent-death signal), the way
the @huggingface/jinja runner watches its parent itself.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    """In a child of ``parent``: be killed when ``parent`` ends (where the kernel offers it), and
    end now if it already has. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request was made
        os._exit(1)
