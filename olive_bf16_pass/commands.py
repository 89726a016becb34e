"""What each ``olive-bf16`` command does, once cli.py has parsed its arguments: thin calls into the library."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

__all__ = ["ProgressBar", "convert", "inspect", "options_of", "package_config"]


def options_of(args):
    from dataclasses import fields

    from olive_bf16_pass.options import ConversionOptions

    return ConversionOptions(**{f.name: getattr(args, f.name) for f in fields(ConversionOptions)})


class ProgressBar:
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


def convert(args) -> None:
    from olive_bf16_pass.convert import convert_file
    from olive_bf16_pass.errors import ConversionError

    _refuse_unsafe_paths(args, ConversionError)

    # Left by a killed run: not deleted here, since a conversion running now into the same
    # output would own them too; a run that fails or is interrupted removes its own.
    from olive_bf16_pass.io.destination import Destination

    stale = Destination(args.output).temporaries()
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
        options_of(args),
        save_as_external_data=args.external_data or bool(args.external_data_name),
        external_data_name=args.external_data_name,
        in_place=args.in_place,
        progress=ProgressBar(not args.quiet and sys.stderr.isatty()),
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
        from olive_bf16_pass.options import in_flags

        print(in_flags(report.summary()))
        print("wrote " + ", ".join(report.destination))


def _refuse_unsafe_paths(args, conversion_error: type) -> None:
    """Before converting: OUT must be absent or a regular file, and --report must not replace a model file."""
    from olive_bf16_pass.io.destination import Destination

    data = Destination(args.output, args.external_data_name).data
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


def inspect(args) -> None:
    from olive_bf16_pass.inspection import inspect_model

    from olive_bf16_pass.options import in_flags

    info = inspect_model(args.model, options_of(args))
    print(json.dumps(info, indent=2) if args.json else in_flags(info["text"]))


def package_config(args) -> None:
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
