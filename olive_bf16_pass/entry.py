"""The command's entry point (``olive-bf16``, ``python -m olive_bf16_pass``): the first code of ours
a run executes, so it holds Ctrl-C and SIGTERM before anything else is imported. The command line
itself (cli.py, argparse, logging, pathlib, then onnx and numpy) is imported inside."""

from __future__ import annotations

import signal
import sys

from olive_bf16_pass.errors import INTERRUPTED, TERMINATED

__all__ = ["main"]



def _terminated(signum, frame):
    print(TERMINATED, file=sys.stderr)
    sys.exit(143)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    wanted = {signal.SIGTERM: _terminated}
    if hasattr(signal, "SIGBREAK"):  # Windows' Ctrl-Break, whose default ends the process without a word
        wanted[signal.SIGBREAK] = _interrupted
    saved = {}
    try:  # cli.main installs its own handlers once it runs; these cover the imports before it
        for signum, handler in wanted.items():
            saved[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: the process's handling stays as it is
        pass
    try:
        from olive_bf16_pass.cli import main as run
    except KeyboardInterrupt:
        if "--debug" in (sys.argv if argv is None else argv):
            raise
        print(INTERRUPTED, file=sys.stderr)
        return 130
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return run(argv)
