"""olive-bf16: convert ONNX FP32 weights to BF16, inspect a model, or write Olive's package config.

Exit codes: 0 success, 1 the model could not be converted (the message says why), 2 usage error.
Errors are one line; --debug shows the traceback. Nothing is left behind by a failed run: the
output and its external data are written under temporary names beside OUT and renamed into
place only when complete and checked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import stat
import sys
from pathlib import Path

from olive_bf16_pass import __version__

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
    i.add_argument("--min-elements", type=int, default=1024, metavar="N", help="as for convert (1024)")
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
            return {"convert": _convert, "inspect": _inspect, "package-config": _package_config}[args.command](args)
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

        return f"olive-bf16: {record.levelname.lower()}: {one_line(record.getMessage())}"


def _one_line(exc: Exception, conversion_error: type, args) -> str:
    """The message of ``exc`` as one line, in the command's words."""
    from olive_bf16_pass.errors import os_error_line
    from olive_bf16_pass.optional import MissingDependency

    if isinstance(exc, conversion_error):
        message = str(exc).replace("pass in_place=True", "pass --in-place")
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


def _options(args):
    from dataclasses import fields

    from olive_bf16_pass.options import ConversionOptions

    return ConversionOptions(**{f.name: getattr(args, f.name) for f in fields(ConversionOptions)})


class _ProgressBar:
    """A one-line bar on stderr, shown only for models over about 100 MB."""

    MIN_BYTES = 100 << 20

    def __init__(self, enabled: bool):
        self.enabled, self.last = enabled, -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.MIN_BYTES:
            return
        pct = done * 100 // max(total, 1)
        if pct != self.last:
            self.last = pct
            bar = "#" * (pct // 4)
            print(f"\rconverting [{bar:<25}] {pct:3d}%  {done >> 20}/{total >> 20} MB", end="", file=sys.stderr)
            if done >= total:
                print(file=sys.stderr)


def _convert(args) -> int:
    from olive_bf16_pass.convert import convert_file
    from olive_bf16_pass.errors import ConversionError

    _refuse_unsafe_paths(args, ConversionError)

    # Left by a killed run: not deleted here, since a conversion running now into the same
    # output would own them too; a run that fails or is interrupted removes its own.
    from olive_bf16_pass.io.writer import temporaries_of

    stale = temporaries_of(args.output)
    if stale:
        print(
            f"olive-bf16: warning: {len(stale)} temporary file(s) of an interrupted run are beside the output: "
            + ", ".join(p.name for p in stale[:3])
            + ("" if len(stale) <= 3 else ", ...")
            + "; delete them if no other conversion is running",
            file=sys.stderr,
        )
    report = convert_file(
        args.input,
        args.output,
        _options(args),
        save_as_external_data=args.external_data or bool(args.external_data_name),
        external_data_name=args.external_data_name,
        in_place=args.in_place,
        progress=_ProgressBar(not args.quiet and sys.stderr.isatty()),
    )
    if args.report:
        try:
            report.write_json(args.report)
        except OSError as exc:
            raise ConversionError(
                f"{args.report}: cannot write the report ({exc.strerror or exc}); the model itself was written to "
                + ", ".join(report.destination)
            ) from exc
    if not args.quiet:
        print(report.summary())
        print("wrote " + ", ".join(report.destination))
    return EXIT_OK


def _refuse_unsafe_paths(args, conversion_error: type) -> None:
    """Before converting: OUT must be absent or a regular file, and --report must not replace a model file."""
    data = args.output.parent / (args.external_data_name or f"{args.output.name}.data")
    writes_data = args.external_data or bool(args.external_data_name)
    for out in (args.output, data) if writes_data else (args.output,):
        kind = _not_a_regular_file(out)
        if kind:
            raise conversion_error(
                f"{out}: exists and is {kind}, not a regular file; it was left as it is. Choose an output path "
                "that is a regular file or does not exist."
            )
    if args.report is None:
        return
    if not (args.report.parent if str(args.report.parent) else Path(".")).is_dir():
        raise conversion_error(f"{args.report}: the report's folder does not exist; nothing was converted.")
    models = {"the input model": args.input, "the output model": args.output, "the output's external data": data}
    if args.report.exists():  # only an existing file can be one the input reads
        from olive_bf16_pass.io.source import read_model

        models.update({f"external data of the input ({p.name})": p for p in read_model(args.input).files})
    for what, path in models.items():
        if _same_path(args.report, path):
            raise conversion_error(
                f"{args.report}: the report would overwrite {what}; nothing was converted. Choose another report path."
            )


def _not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (links followed), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent, or unreadable: the writer says so
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a device",
             stat.S_ISBLK: "a device", stat.S_ISSOCK: "a socket"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def _same_path(a: Path, b: Path) -> bool:
    """The same file: one path after resolving links, or one file under two names (hard links, case)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inspect(args) -> int:
    from olive_bf16_pass.inspection import inspect_model

    info = inspect_model(args.model, min_elements=args.min_elements)
    print(json.dumps(info, indent=2) if args.json else info["text"])
    return EXIT_OK


def _package_config(args) -> int:
    from olive_bf16_pass.olive.discovery import merged_package_config
    from olive_bf16_pass.optional import OLIVE_HELP, MissingDependency, olive_range

    try:
        import olive.package_config  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"package-config needs Olive. {OLIVE_HELP.format(range=olive_range())}") from exc
    text = json.dumps(merged_package_config(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}; use it with: olive run --config RECIPE.json --package-config {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
