"""Standard streams that may be closed or full.

``avsb ... >&-`` starts with no file descriptor 1, ``<&-`` with no 0, and
``>/dev/full`` fails every write. Two things go wrong without care: the next
file avsb opens (the config lock, a temp file) takes the free number and
output meant for the terminal lands in it; and the first write raises deep in
Rich or click, an internal error with a traceback. So at start-up a closed 0,
1 or 2 is pointed at /dev/null (Python still sees the stream as closed: None),
and writes to stdout go through a guard that turns a failure into one
``OutputError``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from avsb_cli.errors import OutputError


def reserve_closed_descriptors() -> None:
    """Put /dev/null on each closed descriptor 0-2 so no file opened later gets one."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        # Errors then go nowhere, but avsb still runs and exits with its code.
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


class GuardedStdout:
    """sys.stdout, with a failed write or flush raised as an OutputError."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _failed(self, exc: OSError) -> OutputError:
        reason = exc.strerror or type(exc).__name__
        return OutputError(f"cannot write to standard output: {reason}",
                           hint="check where the output goes: a full disk, or a closed file")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise  # the reader went away: `avsb ... | head` is not an error worth a line
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def closed_stdout() -> OutputError | None:
    """The error to report when standard output is closed (None when it is open)."""
    if sys.stdout is None:
        return OutputError("standard output is closed; avsb has nowhere to write its result",
                           hint="run it without >&-, or send the output to /dev/null")
    return None


def drop_stdout() -> None:
    """Stop writing to a stdout that failed (and Python's flush at exit with it)."""
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    except OSError:
        pass
