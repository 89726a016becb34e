"""olive-bf16: convert ONNX FP32 weights to BF16, inspect a model, or write Olive's package config.

Exit codes: 0 success, 1 the model could not be converted (the message says why), 2 usage error.
Errors are one line; --debug shows the traceback. Nothing is left behind by a failed run: the
output and its external data are written under temporary names beside OUT and renamed into
place only when complete and checked.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from olive_bf16_pass import __version__

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
Convert an ONNX model's FP32 weights to BF16, each widened back to FP32 by one Cast, so the
model halves its weight bytes and still runs on any ONNX runtime (ONNX Runtime CPU included).

commands:
  convert IN OUT   write the BF16 model; prints a summary (tensors converted, sizes, ratio,
                   worst rounding error); --report FILE.json writes the per-tensor report
  inspect MODEL    dtypes and sizes, opset, external data, and what convert would do
  package-config   Olive's package config with this plugin's pass OnnxFloatToBFloat16

Run "olive-bf16 COMMAND --help" for a command's options.
"""

_EPILOG = """\
exit codes:
  0  success
  1  the model could not be converted or read (the message says why; nothing is written)
  2  usage error (unknown option, missing argument)
  130 interrupted (nothing is written)

errors are one line; --debug shows the traceback.

examples:
  olive-bf16 convert model.onnx model_bf16.onnx
  olive-bf16 convert big.onnx out/big_bf16.onnx --external-data --report report.json
  olive-bf16 inspect model.onnx
  olive-bf16 package-config -o olive_config_with_bf16.json
  olive run --config recipe.json --package-config olive_config_with_bf16.json
"""


_CONVERT_EPILOG = """\
what stays FP32: tensors under --min-elements elements, inputs of --op-block/--node-block nodes,
--exclude'd tensors, initializers that are graph inputs, graph outputs, and FP32-only inputs
(Resize scales, quantization scales). --report FILE.json lists every tensor with the reason.

refused (exit 1, nothing written): a missing, empty, truncated or non-ONNX input; external data
that is missing, short, or outside the model's folder; sparse initializers; a model whose
weights are all float16; opset below 13 with --no-upgrade-opset (by default it is upgraded to 13);
OUT equal to IN (or to one of its data files) without --in-place. A model already in BF16
converts to itself (exit 0).

examples:
  olive-bf16 convert model.onnx model_bf16.onnx --report report.json
  olive-bf16 convert big.onnx out/big_bf16.onnx --external-data
  olive-bf16 convert model.onnx model.onnx --in-place --min-elements 4096 --exclude lm_head.weight
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="olive-bf16",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    p.add_argument("--version", action="version", version=f"olive-bf16 {__version__}")
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command works too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "convert",
        parents=[common],
        help="convert IN to OUT",
        description="Convert the FP32 model IN to OUT with BF16 weights. IN is never modified; OUT (and its\n"
        "external data) appear only when complete and checked by onnx.checker.",
        epilog=_CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("input", type=Path, metavar="IN", help="the FP32 .onnx model (its external data beside it)")
    c.add_argument("output", type=Path, metavar="OUT", help="where to write the BF16 model")
    from olive_bf16_pass.options import cli_arguments

    for flag, kwargs in cli_arguments():  # the conversion options, described once in options.py
        c.add_argument(flag, **kwargs)
    c.add_argument("--external-data", action="store_true", help="write tensors to OUT.data beside OUT")
    c.add_argument("--external-data-name", metavar="FILE", help="name of the external data file")
    c.add_argument("--in-place", action="store_true", help="allow OUT to be IN (replaced atomically)")
    c.add_argument("--report", type=Path, metavar="FILE.json", help="write the per-tensor report as JSON")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    i = sub.add_parser(
        "inspect",
        parents=[common],
        help="show dtypes, sizes, opset and what convert would do",
        description="Show what MODEL holds (dtypes and sizes, opset, external data files) and what convert\n"
        "would do to it. Reads only the graph and tensor headers; writes nothing.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("model", type=Path, metavar="MODEL")
    for flag, kwargs in cli_arguments():  # the same plan as convert's: the same options
        i.add_argument(flag, **kwargs)
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    k = sub.add_parser(
        "package-config",
        parents=[common],
        help="write Olive's package config merged with this plugin's pass",
        description="Write Olive's default package config plus this plugin's pass, for\n"
        "olive run --package-config FILE (Olive's own passes are never shadowed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    from olive_bf16_pass.errors import ConversionError

    try:
        with _library_warnings_to_stderr(args.debug):
            from olive_bf16_pass import commands

            run = {"convert": commands.convert, "inspect": commands.inspect, "package-config": commands.package_config}
            run[args.command](args)
            return EXIT_OK
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("olive-bf16: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"olive-bf16: error: {_one_line(exc, ConversionError, args)}", file=sys.stderr)
        return EXIT_FAILED


@contextlib.contextmanager
def _library_warnings_to_stderr(debug: bool):
    """The library's warnings (a filter that matches nothing, a checker fault kept) reach the person as
    ``olive-bf16: warning: ...`` lines on the stderr of this call, also when logging is already set up."""
    logger = logging.getLogger("olive_bf16_pass")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s") if debug else _OneLine())
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False  # once, here, not again through the root logger's handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _OneLine(logging.Formatter):
    """One line per record, level in lower case, like the command's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        from olive_bf16_pass.errors import one_line

        from olive_bf16_pass.options import in_flags

        return f"olive-bf16: {record.levelname.lower()}: {in_flags(one_line(record.getMessage()))}"


def _one_line(exc: Exception, conversion_error: type, args) -> str:
    """The message of ``exc`` as one line, in the command's words."""
    from olive_bf16_pass.errors import os_error_line
    from olive_bf16_pass.optional import MissingDependency
    from olive_bf16_pass.options import in_flags

    if isinstance(exc, conversion_error):
        message = in_flags(str(exc))
    elif isinstance(exc, OSError):
        where = exc.filename
        if getattr(args, "command", None) == "convert" and (
            where is None or (Path(str(where)).name.startswith(".") and str(where).endswith(".tmp"))
        ):
            where = args.output  # the writer's temporary files are OUT as far as a person is concerned
        message = os_error_line(exc, where)
        message += "; nothing was written" if getattr(args, "command", None) == "convert" else ""
    elif isinstance(exc, (ValueError, MissingDependency)):
        message = str(exc)
    else:
        message = f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback, and report it)"
    return " ".join(message.split())  # one line, whatever the message held


if __name__ == "__main__":
    sys.exit(main())
