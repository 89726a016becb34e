"""What each ``olive-bf16`` command does, once cli.py has parsed its arguments: thin calls into the library."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

__all__ = [
    "ProgressBar", "check", "compile_model", "convert", "emulate", "inspect", "options_of", "package_config", "recipes",
    "sensitivity",
]


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
    """Before any work, every path the run will write: OUT (and its data file) absent or a regular file in a
    folder we may write to, and --report a file we may write that replaces no model file."""
    from olive_bf16_pass.io.destination import Destination

    destination = Destination(args.output, args.external_data_name)
    data = destination.data
    if destination.folder.is_dir():
        problem = _cannot_write_in(destination.folder)
        if problem:
            raise conversion_error(
                f"{args.output}: cannot write in {destination.folder} ({problem}); nothing was converted. Choose an "
                "output folder you can write to."
            )
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
    folder = args.report.parent if str(args.report.parent) else Path(".")
    if not folder.is_dir():
        raise conversion_error(f"{args.report}: the report's folder does not exist; nothing was converted.")
    kind = _not_a_regular_file(args.report)
    if kind:
        raise conversion_error(
            f"{args.report}: the report path is {kind}, not a file; nothing was converted. Choose a file path for "
            "--report."
        )
    if not os.access(args.report if args.report.exists() else folder, os.W_OK):
        raise conversion_error(
            f"{args.report}: cannot write the report there (no permission); nothing was converted. Choose a folder "
            "you can write to."
        )
    models = {"the input model": args.input, "the output model": args.output, "the output's external data": data}
    if args.report.exists():  # only an existing file can be one the input reads
        from olive_bf16_pass.io.source import read_model

        models.update({f"external data of the input ({p.name})": p for p in read_model(args.input).files})
    for what, path in models.items():
        if _same_path(args.report, path):
            raise conversion_error(
                f"{args.report}: the report would overwrite {what}; nothing was converted. Choose another report path."
            )


def _cannot_write_in(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (read-only file system, no permission), or None: asked by making
    and removing one, which works the same on every platform and for root."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".olive-bf16-probe.", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


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


def recipes(args) -> None:
    from olive_bf16_pass.olive.recipes import list_recipes, write_recipe

    if args.name is None:
        found = list_recipes()
        width = max((len(name) for name, _ in found), default=0)
        print("\n".join(f"{name:<{width}}  {about}" for name, about in found))
        return
    written = write_recipe(args.name, args.output)
    print(f"wrote {written}; run it with: olive run --config {written}")


def check(args) -> int:
    """Print the Vitis AI readiness verdict; 1 when not ready."""
    from olive_bf16_pass.options import in_flags
    from olive_bf16_pass.vitisai.readiness import check_model

    verdict = check_model(args.model, options_of(args))
    print(json.dumps(verdict.to_dict(), indent=2) if args.json else in_flags(verdict.text()))
    return 0 if verdict.ready else 1


def compile_model(args) -> int:
    """Check, then compile MODEL for the Vitis AI EP into the deploy folder OUTDIR."""
    from olive_bf16_pass.errors import ConversionError
    from olive_bf16_pass.vitisai.compile import require_vitisai
    from olive_bf16_pass.vitisai.deploy import compile_to_folder
    from olive_bf16_pass.vitisai.readiness import AS_IS, check_model

    require_vitisai()  # at once, before reading anything
    if args.check:
        verdict = check_model(args.model, AS_IS)
        if not verdict.ready:
            print(verdict.text(), file=sys.stderr)
            raise ConversionError(f"{args.model} is not ready for the Vitis AI EP (see above); nothing was compiled")
    config = args.config_file or _packaged_vaiml_config()
    done = compile_to_folder(args.model, args.outdir, config, args.cache_key, args.timeout, args.embed)
    print(f"compiled {args.model} in {done.seconds:.0f} s; wrote {done.folder} ({done.context_model.name}, "
          f"{Path(config).name}, manifest.json, README.md)")
    return 0


def _packaged_vaiml_config() -> Path:
    from olive_bf16_pass.olive.recipes import recipes_dir

    return recipes_dir() / "vaiml_config.json"


def emulate(args) -> None:
    from olive_bf16_pass.emulation import EmulationOptions, emulate_file, read_node_list

    nodes = list(args.keep_node) + (read_node_list(args.keep_nodes_from) if args.keep_nodes_from else [])
    report = emulate_file(args.input, args.output, EmulationOptions(keep_op_types=args.keep_op, keep_nodes=nodes),
                          save_as_external_data=args.external_data)
    if not args.quiet:
        print(report.summary())
        print("wrote " + ", ".join(report.destination))


def sensitivity(args) -> None:
    from olive_bf16_pass import sensitivity as sens

    if args.inputs:
        feeds = sens.npz_feeds(args.inputs, args.batch_size)
        if args.limit:
            feeds = sens.Feeds(*_first_rows(feeds, args.limit))
    else:
        tokenizer = args.tokenizer or str(Path(args.model).resolve().parent)
        feeds = sens.text_feeds(args.model, tokenizer, args.corpus, args.limit, args.batch_size, args.max_length)
    switched = sens.Switched(args.model, feeds, args.pooling, args.output_name)
    try:
        if args.target_cosine is not None:
            from olive_bf16_pass.emulation import write_node_list
            from olive_bf16_pass.precision_search import search

            result = search(args.model, switched, args.target_cosine, args.target_min_cosine, args.rank_rows,
                            strategy=args.strategy)
            print(result.summary())
            print("keep in FP32: " + (", ".join(result.nodes) or "(none)"))
            if args.node_list and result.met:
                write_node_list(args.node_list, result.nodes, target_cosine=args.target_cosine,
                                target_min_cosine=result.target_min, verified=list(result.verified))
                print(f"wrote {args.node_list}; use it with: olive-bf16 emulate MODEL OUT --keep-nodes-from "
                      f"{args.node_list}, or as the pass's node_block_list")
            if args.json:
                args.json.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
            return
        ranking = sens.rank(switched)
        print(sens.table(ranking, args.top))
        if args.json:
            args.json.write_text(json.dumps(ranking.to_dict(), indent=1) + "\n")
    finally:
        switched.close()


def _first_rows(feeds, rows: int):
    batches, left = [], rows
    for b in feeds.batches:
        if left > 0:
            batches.append({k: v[:left] for k, v in b.items()})
            left -= len(next(iter(b.values())))
    return batches, [b.get("attention_mask") for b in batches]
