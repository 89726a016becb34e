"""The floor probes of ``python -m benchmarks.floor --probes``: where our time goes, as two more rows.

* ``start-up``: the interpreter and our imports (numpy's included), converting nothing: the fixed
  cost of every conversion.
* ``one-pass C kernel``: our command with ``rounding._fused_chunk`` swapped for
  ``probe_kernel.c``, built here with the system's C compiler. It streams, writes and checks
  exactly as ours does; only the rounding loop differs (one pass, where numpy makes 13). The
  package never uses it: it measures what a compiled kernel would buy on this machine, the
  difference between this row and ours. ``check_same`` makes sure it writes our bytes first.

Run as ``python -m benchmarks.probe LIBRARY convert ...``: the command line with the kernel in.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

KERNEL = Path(__file__).with_name("probe_kernel.c")


def build(out: Path) -> tuple[Path | None, str]:
    """(the built library, "") or (None, why not): no compiler, Windows, a failed build."""
    if sys.platform == "win32":
        return None, "the probe builds with a Unix C compiler; none on Windows"
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return None, f"no C compiler ({cc!r} not found; set CC)"
    out.mkdir(parents=True, exist_ok=True)
    lib = out / "libprobe_kernel.so"
    cmd = [cc, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(lib), str(KERNEL)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        return None, f"{' '.join(cmd)} failed: {done.stderr.strip()[:200]}"
    return lib, ""


def install(library: str | os.PathLike) -> None:
    """Round nearest_even chunks with the C kernel; truncation stays numpy's."""
    from olive_bf16_pass import rounding

    lib = ctypes.CDLL(str(library))  # CDLL: the GIL is released during each call, as numpy's loops do
    lib.round_chunk.restype = ctypes.c_int
    lib.round_chunk.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
                                ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
    numpy_chunk = rounding._fused_chunk

    def fused_chunk(bits, out, rounding_mode, stats):
        if rounding_mode != "nearest_even":
            return numpy_chunk(bits, out, rounding_mode, stats)
        worst, worst_rel = ctypes.c_float(), ctypes.c_float()
        if not lib.round_chunk(bits.ctypes.data, out.ctypes.data, bits.size, ctypes.byref(worst), ctypes.byref(worst_rel)):
            return False
        stats.max_abs_error = max(stats.max_abs_error, worst.value)
        stats.max_rel_error = max(stats.max_rel_error, worst_rel.value)
        return True

    rounding._fused_chunk = fused_chunk


def check_same(ours: list[str], probe: list[str], options: list[str], work: Path, cwd: Path) -> None:
    """Run both commands once (``OUT -q --report FILE`` and ``options`` appended) and raise unless they
    write the same bytes and the same report, less its timing and paths."""
    results = []
    for label, cmd in (("ours", ours), ("probe", probe)):
        folder = work / f"check-{label}"  # one file name for both: a model names its external data file
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        out, report = folder / "model.onnx", folder / "report.json"
        subprocess.run([*cmd, str(out), "-q", "--report", str(report), *options], check=True, cwd=cwd)
        data = [p.read_bytes() for p in sorted(folder.glob("model.onnx*"))]
        results.append((data, _comparable(json.loads(report.read_text()))))
        shutil.rmtree(folder)
    if results[0][0] != results[1][0]:
        raise SystemExit("probe: the C kernel wrote other bytes than ours; its row would measure something else")
    if results[0][1] != results[1][1]:
        raise SystemExit("probe: the C kernel's report differs from ours (error figures?)")


def _comparable(report):
    if isinstance(report, dict):
        return {k: _comparable(v) for k, v in report.items() if k not in ("seconds", "destination", "source")}
    if isinstance(report, list):
        return [_comparable(v) for v in report]
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import no_posix

    no_posix.strip()
    install(sys.argv[1])
    from olive_bf16_pass.cli import main

    sys.exit(main(sys.argv[2:]))
