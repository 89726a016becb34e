"""``python -m benchmarks.floor``: our conversion against the machine's floor, ``cp`` + ``sync``.

Per model, three commands, each its own process measured from outside (wall seconds, peak RSS),
run in alternation (``--pairs`` rounds: a drift in the machine's speed touches all alike):

* ``olive-bf16 convert`` (the command, on the portable path: the POSIX-only ``os`` functions that
  Windows lacks are deleted first, as tests/no_posix.py does) + ``sync`` of the output;
* ``cp`` of the source + ``sync`` of the copy: the floor, for a command that writes twice what ours does;
* ``onnx.load`` + ``onnx.save`` of the source + ``sync`` of the saved file.

``sync FILE`` flushes that file only (coreutils ``sync`` with an argument), so what other jobs
write does not land in either figure. Outputs are deleted before each command (untimed), the
source is read once before (page cache warm for every command alike). The table gives each
command's median and the median of the per-round ratios to cp + sync and to load + save.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from benchmarks.measure import run_measured

REPO = Path(__file__).resolve().parent.parent
MB = 2**20

# our command, with the os functions Windows lacks removed before the package is imported
_PORTABLE = (
    "import sys; sys.path.insert(0, {tests!r}); import no_posix; no_posix.strip(); "
    "from olive_bf16_pass.cli import main; rc = main(sys.argv[1:]); sys.exit(rc)"
)
_LOAD_SAVE = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"
OURS, CP, LOAD_SAVE = "olive-bf16 convert + sync", "cp + sync", "onnx.load + onnx.save + sync"
PROBE, START_UP = "ours, one-pass C kernel (probe) + sync", "start-up: python + our imports (probe)"
# what a conversion imports, on the portable path, converting nothing
_IMPORTS = ("import sys; sys.path.insert(0, {tests!r}); import no_posix; no_posix.strip(); "
            "import olive_bf16_pass.cli, olive_bf16_pass.convert")


def _quote(text) -> str:
    return "'" + str(text).replace("'", "'\\''") + "'"


def _synced(cmd: list[str], out: Path | None) -> list[str]:
    """``cmd`` then ``sync`` of ``out`` and its external data (``out.data``), as one process tree (sh),
    so the wall time holds both; ``cmd`` alone for a command that writes nothing."""
    if out is None:
        return cmd
    quoted = " ".join(map(_quote, cmd))
    return ["sh", "-c", f"{quoted} && sync {_quote(out)} && if [ -e {_quote(out)}.data ]; then sync {_quote(out)}.data; fi"]


def _data_files(src: Path) -> list[Path]:
    """The external data files of ``src`` (onnx's default name, ``model.onnx.data``, when present)."""
    data = src.with_name(src.name + ".data")
    return [data] if data.exists() else []


def commands(src: Path, work: Path, load_save: bool = True, baseline: Path | None = None,
             probe_library: Path | None = None) -> dict[str, tuple]:
    """{label: (command, its output or None, its working folder)}. ``baseline``: a folder holding another
    ``olive_bf16_pass`` (an earlier version), run as a row of its own for before/after in one call.
    ``probe_library``: the built probe kernel (benchmarks/probe.py): the two probe rows."""
    py = sys.executable
    ours = work / "ours.onnx"
    portable = [py, "-c", _PORTABLE.format(tests=str(REPO / "tests"))]
    external = ["--external-data"] if _data_files(src) else []  # mirror the source's form
    found = {OURS: ([*portable, "convert", str(src), str(ours), "-q", *external], ours, REPO)}
    if baseline is not None:
        before = work / "before.onnx"
        found[f"{OURS} [{baseline.name}]"] = (
            [*portable, "convert", str(src), str(before), "-q", *external], before, baseline)
    copy = ["cp", str(src), str(work / "copy.onnx")]
    for data in _data_files(src):  # the copy keeps the data file's name, as the model refers to it
        copy = ["sh", "-c", (f"cp {_quote(src)} {_quote(work / 'copy.onnx')} && cp {_quote(data)} "
                             f"{_quote(work / 'copy.onnx.data')}")]
    found[CP] = (copy, work / "copy.onnx", REPO)
    if probe_library is not None:
        probed = work / "probe.onnx"
        found[PROBE] = ([py, "-m", "benchmarks.probe", str(probe_library), "convert", str(src), str(probed), "-q",
                         *external], probed, REPO)
        found[START_UP] = ([py, "-c", _IMPORTS.format(tests=str(REPO / "tests"))], None, REPO)
    if load_save:
        found[LOAD_SAVE] = ([py, "-c", _LOAD_SAVE, str(src), str(work / "saved.onnx")], work / "saved.onnx", REPO)
    return found


def _warm(path: Path) -> None:
    for file in [path, *_data_files(path)]:
        with open(file, "rb") as fh:
            while fh.read(1 << 24):
                pass


def measure(src: Path, work: Path, pairs: int, load_save: bool = True, log=None,
            baseline: Path | None = None, probe_library: Path | None = None) -> dict[str, list]:
    """{command: [Measured per round]}, the commands alternating in each round.

    Each round starts one command later in the list (a rotation), so no command always follows the same
    one: onnx.load + onnx.save frees 3 GB and has just written 1.1 GB, and in the fixed order the command
    right after it was always ours (in two calls, ours gained 6% and lost 5% on the baseline where calls
    without load + save gave 23%)."""
    work.mkdir(parents=True, exist_ok=True)
    _warm(src)
    rows = commands(src, work, load_save, baseline, probe_library)
    if probe_library is not None:  # a probe that writes other bytes would time something else
        from benchmarks.probe import check_same

        (ours, ours_out, _), (probed, probe_out, _) = rows[OURS], rows[PROBE]
        at, probe_at = ours.index(str(ours_out)), probed.index(str(probe_out))
        check_same(ours[:at], probed[:probe_at], [a for a in ours[at + 1:] if a != "-q"], work, REPO)
    figures: dict[str, list] = {label: [] for label in rows}
    try:
        labels = list(rows)
        for r in range(pairs):
            for label in labels[r % len(labels):] + labels[: r % len(labels)]:
                cmd, out, cwd = rows[label]
                for stale in work.glob(out.name + "*") if out is not None else []:
                    stale.unlink()
                measured = run_measured(_synced(cmd, out), work / "log.txt", cwd=cwd, timeout_s=900, interval=0.005)
                if not measured.ok:
                    raise SystemExit(f"{src.name}: {label} failed: {measured.error_line()}")
                figures[label].append(measured)
            if log:
                log(f"{src.name} round {r + 1}/{pairs}: " + ", ".join(
                    f"{label} {figures[label][-1].wall_s:.2f} s" for label in rows))
    finally:
        for path in work.glob("*.onnx*"):
            path.unlink()
    return figures


def ratio(figures: dict[str, list], label: str, base: str) -> float | None:
    if base not in figures:
        return None
    return statistics.median(a.wall_s / b.wall_s for a, b in zip(figures[label], figures[base]))


def table_rows(name: str, src: Path, figures: dict[str, list]) -> list[list[str]]:
    rows = []
    for label, measured in figures.items():
        vs_cp, vs_ls = ratio(figures, label, CP), ratio(figures, label, LOAD_SAVE)
        rows.append([
            f"{name} ({sum(p.stat().st_size for p in [src, *_data_files(src)]) / 1e6:.0f} MB)", label, f"{len(measured)}",
            f"{statistics.median(m.wall_s for m in measured):.2f}",
            f"{statistics.median(m.peak_rss for m in measured) / MB:.0f}",
            f"{vs_cp:.2f}x" if vs_cp is not None else "-", f"{vs_ls:.2f}x" if vs_ls is not None else "-",
        ])
    return rows


def render(rows: list[list[str]]) -> str:
    head = ["model", "command", "rounds", "wall s", "peak RSS MB", "vs cp+sync", "vs load+save"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def to_dict(figures: dict[str, list]) -> dict:
    return {
        label: {"wall_s": [m.wall_s for m in measured], "peak_rss": [m.peak_rss for m in measured],
                "ratio_vs_cp_sync": ratio(figures, label, CP), "ratio_vs_load_save": ratio(figures, label, LOAD_SAVE)}
        for label, measured in figures.items()
    }


def main(argv=None) -> int:
    from benchmarks.build import MODELS, ensure_built, model_path  # torch only when building

    ap = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bce", help="comma list of bce, bce_ext, large (default: bce); an "
                                                    "external-data model is converted to external data")
    ap.add_argument("--pairs", type=int, default=9, help="alternating rounds (default 9)")
    ap.add_argument("--no-load-save", action="store_true", help="only ours and cp + sync")
    ap.add_argument("--probes", action="store_true", help="two more rows: start-up alone, and ours with a one-pass "
                                                          "C kernel (benchmarks/probe.py; needs a C compiler)")
    ap.add_argument("--out", default=str(REPO / "bench-out"))
    ap.add_argument("--baseline", type=Path, help="a folder holding an earlier olive_bf16_pass: one more row, for "
                                                   "before/after figures in one call")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows, library = [], None
    if args.probes:
        from benchmarks.probe import build

        library, why = build(out / "probe")
        if library is None:
            print(f"no probe rows: {why}", file=sys.stderr)
    for name in [m for m in args.models.split(",") if m]:
        if name not in MODELS and name != "bce_ext":
            ap.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}, bce_ext")
        ensure_built(["bce" if name == "bce_ext" else name], out)  # bce builds bce_ext too
        src = model_path(out, name)
        figures = measure(src, out / "runs" / "floor", args.pairs, not args.no_load_save,
                          log=lambda m: print(m, file=sys.stderr, flush=True), baseline=args.baseline,
                          probe_library=library)
        rows += table_rows(name, src, figures)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
