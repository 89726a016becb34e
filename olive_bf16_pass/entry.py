"""The command's entry point (``olive-bf16``, ``python -m olive_bf16_pass``): the first code of ours
a run executes, so it holds Ctrl-C, Ctrl-Break and SIGTERM before anything else is imported. The
command line itself (cli.py, argparse, logging, pathlib, then onnx and numpy) is imported inside."""

from __future__ import annotations

from olive_bf16_pass.signals import unwinding

__all__ = ["main"]


def _command(argv: list[str] | None) -> int:
    from olive_bf16_pass.cli import run_command

    return run_command(argv)


def main(argv: list[str] | None = None) -> int:
    return unwinding(_command, argv)
