"""A reader that goes away (``mnist-dask run ... | head -2``) must not fail the command's work.

Python raises BrokenPipeError on the next write to a closed pipe, wherever that write is: a
run's log line, a progress line, the last line. Each standard stream of the command is
rewrapped so that, once its reader is gone, it writes to /dev/null instead: the run goes on,
its results and records are written, and nothing prints a traceback at exit.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class _ClosedPipeToNull(io.RawIOBase):
    """A file descriptor written with os.write; on a broken pipe it becomes /dev/null for the rest of the run."""

    def __init__(self, fd: int) -> None:
        """Write to ``fd`` (1 or 2)."""
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        """Always: it only writes."""
        return True

    def fileno(self) -> int:
        """The descriptor (for isatty, and for whoever asks)."""
        return self._fd

    def isatty(self) -> bool:
        """Whether the descriptor is a terminal (progress bars are drawn only there)."""
        return os.isatty(self._fd)

    def write(self, data: ReadableBuffer) -> int:
        """Write what the descriptor takes; all of it counts as written once the reader is gone."""
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._fd)  # every later write, by any thread or library, goes nowhere quietly
            os.close(null)
            return len(memoryview(data))


def _tolerant(stream: TextIO) -> TextIO:
    """``stream`` rewrapped over its descriptor (as is when it has none: a test's captured stream)."""
    if isinstance(getattr(stream, "buffer", None), io.BufferedWriter) and isinstance(
        getattr(stream.buffer, "raw", None), _ClosedPipeToNull
    ):
        return stream  # already
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    return io.TextIOWrapper(
        io.BufferedWriter(_ClosedPipeToNull(fd)),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=bool(stream.line_buffering),
        write_through=getattr(stream, "write_through", False),
    )


def tolerate_closed_output() -> None:
    """Make stdout and stderr of this command survive their reader going away (idempotent)."""
    sys.stdout = _tolerant(sys.stdout)
    sys.stderr = _tolerant(sys.stderr)
