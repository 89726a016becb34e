"""olive-bf16: convert ONNX FP32 weights to BF16, inspect a model, or write Olive's package config.

Exit codes: 0 success, 1 the model could not be converted (the message says why), 2 usage error.
Errors are one line; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
exit codes:
  0  success
  1  the model could not be converted or read (the message says why; nothing is written)
  2  usage error (unknown option, missing argument)

examples:
  olive-bf16 convert model.onnx model_bf16.onnx
  olive-bf16 convert big.onnx out/big_bf16.onnx --external-data --report report.json
  olive-bf16 inspect model.onnx
  olive-bf16 package-config -o olive_config_with_bf16.json
  olive run --config recipe.json --package-config olive_config_with_bf16.json
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="olive-bf16",
        description="Convert an ONNX model's FP32 weights to BF16 (each widened by a Cast, so it runs anywhere).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("convert", help="convert IN to OUT", formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("input", type=Path, metavar="IN", help="the FP32 .onnx model (its external data beside it)")
    c.add_argument("output", type=Path, metavar="OUT", help="where to write the BF16 model")
    c.add_argument("--rounding", choices=("nearest_even", "truncate"), default="nearest_even")
    c.add_argument("--no-saturate", dest="saturate", action="store_false", help="let out-of-range values become Inf")
    c.add_argument("--min-elements", type=int, default=1024, metavar="N", help="smaller tensors stay FP32 (1024)")
    c.add_argument("--op-block", action="append", default=[], metavar="OP", help="op type whose inputs stay FP32")
    c.add_argument("--node-block", action="append", default=[], metavar="NAME", help="node whose inputs stay FP32")
    c.add_argument("--include", action="append", default=None, metavar="TENSOR", help="convert only these tensors")
    c.add_argument("--exclude", action="append", default=[], metavar="TENSOR", help="tensor that stays FP32")
    c.add_argument("--no-constants", dest="convert_constants", action="store_false", help="leave Constant nodes")
    c.add_argument("--graph-input-initializers", action="store_true", help="also convert overridable initializers")
    c.add_argument("--no-cast-after-gather", dest="cast_after_gather", action="store_false")
    c.add_argument("--external-data", action="store_true", help="write tensors to OUT.data beside OUT")
    c.add_argument("--external-data-name", metavar="FILE", help="name of the external data file")
    c.add_argument("--in-place", action="store_true", help="allow OUT to be IN (replaced atomically)")
    c.add_argument("--report", type=Path, metavar="FILE.json", help="write the per-tensor report as JSON")
    c.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    i = sub.add_parser("inspect", help="show dtypes, sizes, opset and what convert would do")
    i.add_argument("model", type=Path, metavar="MODEL")
    i.add_argument("--min-elements", type=int, default=1024, metavar="N")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    k = sub.add_parser("package-config", help="write Olive's package config merged with this plugin's pass")
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
        return {"convert": _convert, "inspect": _inspect, "package-config": _package_config}[args.command](args)
    except (ConversionError, OSError, ValueError) as exc:
        if args.debug:
            raise
        message = str(exc) if isinstance(exc, ConversionError) else f"{type(exc).__name__}: {exc}"
        print(f"olive-bf16: error: {message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("olive-bf16: interrupted; nothing was written", file=sys.stderr)
        return 130


def _options(args):
    from olive_bf16_pass.options import ConversionOptions

    return ConversionOptions(
        rounding=args.rounding,
        saturate=args.saturate,
        min_elements=args.min_elements,
        op_block_list=args.op_block,
        node_block_list=args.node_block,
        include_initializers=args.include,
        exclude_initializers=args.exclude,
        convert_constants=args.convert_constants,
        convert_graph_input_initializers=args.graph_input_initializers,
        cast_after_gather=args.cast_after_gather,
    )


class _ProgressBar:
    """A one-line bar on stderr, shown only for models over about 100 MB."""

    def __init__(self, enabled: bool):
        self.enabled, self.last = enabled, -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 100 << 20:
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
        report.write_json(args.report)
    if not args.quiet:
        print(report.summary())
        print("wrote " + ", ".join(report.destination))
    return EXIT_OK


def _inspect(args) -> int:
    from olive_bf16_pass.inspection import inspect_model

    info = inspect_model(args.model, min_elements=args.min_elements)
    print(json.dumps(info, indent=2) if args.json else info["text"])
    return EXIT_OK


def _package_config(args) -> int:
    from olive_bf16_pass.olive.discovery import merged_package_config

    text = json.dumps(merged_package_config(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}; use it with: olive run --config RECIPE.json --package-config {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
