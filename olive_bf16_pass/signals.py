"""How a command ends when Ctrl-C, Ctrl-Break or SIGTERM stops it: one line, exit 130 or 143.

Standard library only: the entry point (entry.py) runs this before it imports anything else, and
the command line (cli.py) runs it again around a command called as a library function.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable

__all__ = ["INTERRUPTED", "TERMINATED", "Terminated", "unwinding"]

INTERRUPTED = "olive-bf16: interrupted; nothing was written"
TERMINATED = "olive-bf16: terminated; nothing was written"


class Terminated(BaseException):
    """SIGTERM (``timeout``, ``docker stop``, a cancelled CI job), raised where the process is, so that the
    writer removes its temporaries as it does for Ctrl-C."""


@contextlib.contextmanager
def _signals_unwind():
    """While a command runs, SIGTERM raises Terminated and Windows' Ctrl-Break raises KeyboardInterrupt.
    The handlers are the process's: only the main thread may set them, and they are put back after."""
    def terminated(signum, frame):
        raise Terminated(signum)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    wanted = {signal.SIGTERM: terminated}
    if hasattr(signal, "SIGBREAK"):  # Windows
        wanted[signal.SIGBREAK] = interrupted
    saved = {}
    try:
        for signum, handler in wanted.items():
            saved[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: the process's handling stays as it is
        pass
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def unwinding(command: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """``command(argv)``'s exit code; a signal anywhere in it (imports included) unwinds to one line."""
    try:
        with _signals_unwind():
            return command(argv)
    except KeyboardInterrupt:
        if "--debug" in (sys.argv if argv is None else argv):
            raise
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Terminated:
        print(TERMINATED, file=sys.stderr)
        return 143
