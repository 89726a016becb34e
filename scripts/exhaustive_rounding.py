"""Check olive_bf16_pass.rounding on every one of the 2**32 float32 bit patterns.

Not part of the fast test suite (it takes minutes). For each chunk of consecutive bit patterns:

- nearest_even, saturate=False: bit-identical to ``ml_dtypes.bfloat16`` for every non-NaN input;
- every NaN input stays NaN (for every mode), with its sign;
- nearest_even, saturate=True: no finite input becomes Inf; inputs that ml_dtypes rounds to Inf
  become +-max BF16 (0x7F7F with the sign), all others equal ml_dtypes;
- truncate: the high 16 bits for every non-NaN input (saturate=True and False alike);
- RoundingStats over the whole space: 2**24 - 2 NaNs, 2 Infs, and for nearest_even 65536
  saturated (|x| >= 0x7F7F8000, the tie above BF16's max, rounds to even = Inf);
- with stats asked for (the fused path on chunks without specials), for both roundings: the same
  bits as without, and max_abs_error / max_rel_error equal to figures computed here from those
  bits, NaN-ignoring (``|x - r|`` and ``|x - r| / |x|`` in float32), chunk by chunk.

Usage: python scripts/exhaustive_rounding.py [--workers N] [--chunk-bits 24] [--limit CHUNKS]
Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml_dtypes
import numpy as np

from olive_bf16_pass.rounding import BF16_MAX_BITS, RoundingStats, float32_to_bfloat16_bits


def check_chunk(args: tuple[int, int]) -> tuple[int, list[str], dict[str, int]]:
    start, count = args
    problems: list[str] = []
    bits = np.arange(start, start + count, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    nan_in = magnitude > 0x7F800000
    finite_in = magnitude < 0x7F800000
    sign_in = (bits >> 31).astype(np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        reference = values.astype(ml_dtypes.bfloat16).view(np.uint16)

    def report(what: str, bad: np.ndarray, got: np.ndarray) -> None:
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            problems.append(
                f"{what}: {int(bad.sum())} patterns, first 0x{int(bits[first]):08X} -> 0x{int(got[first]):04X} "
                f"(ml_dtypes 0x{int(reference[first]):04X})"
            )

    def check_nan(what: str, got: np.ndarray) -> None:
        got_nan = (got & 0x7FFF) > 0x7F80
        report(f"{what}: NaN lost", nan_in & ~got_nan, got)
        report(f"{what}: NaN sign changed", nan_in & ((got >> 15) != sign_in), got)

    counts = {"nan": 0, "inf": 0, "saturated": 0, "overflow": 0}

    # nearest_even, saturate=False: ml_dtypes exactly (non-NaN)
    exact = float32_to_bfloat16_bits(values, "nearest_even", saturate=False)
    report("nearest_even/saturate=False differs from ml_dtypes", ~nan_in & (exact != reference), exact)
    check_nan("nearest_even/saturate=False", exact)

    # nearest_even, saturate=True, with stats
    stats = RoundingStats()
    saturated = float32_to_bfloat16_bits(values, "nearest_even", saturate=True, stats=stats)
    ref_inf = (reference & 0x7FFF) == 0x7F80
    clamp = finite_in & ref_inf
    expected = np.where(clamp, (reference & 0x8000) | BF16_MAX_BITS, reference).astype(np.uint16)
    report(
        "nearest_even/saturate=True: a finite input became Inf", finite_in & ((saturated & 0x7FFF) == 0x7F80), saturated
    )
    report("nearest_even/saturate=True differs from clamped ml_dtypes", ~nan_in & (saturated != expected), saturated)
    check_nan("nearest_even/saturate=True", saturated)
    if stats.saturated_count != int(clamp.sum()):
        problems.append(f"stats.saturated_count {stats.saturated_count} != {int(clamp.sum())}")
    if stats.nan_count != int(nan_in.sum()) or stats.inf_count != int((magnitude == 0x7F800000).sum()):
        problems.append(f"stats NaN/Inf counts {stats.nan_count}/{stats.inf_count} are wrong")
    counts["nan"], counts["inf"], counts["saturated"] = stats.nan_count, stats.inf_count, stats.saturated_count

    # truncate: the high half, whatever saturate says
    high = (bits >> 16).astype(np.uint16)
    for saturate in (False, True):
        truncated = float32_to_bfloat16_bits(values, "truncate", saturate=saturate)
        report(f"truncate/saturate={saturate} differs from bits >> 16", ~nan_in & (truncated != high), truncated)
        check_nan(f"truncate/saturate={saturate}", truncated)
        report(
            f"truncate/saturate={saturate}: a finite input became Inf",
            finite_in & ((truncated & 0x7FFF) == 0x7F80),
            truncated,
        )

    # with stats (the fused path where a sub-chunk holds no special value): same bits, exact figures
    for rounding, plain in (("nearest_even", saturated_plain := float32_to_bfloat16_bits(values, "nearest_even")),
                            ("truncate", high_plain := float32_to_bfloat16_bits(values, "truncate"))):
        stats = RoundingStats()
        got = float32_to_bfloat16_bits(values, rounding, saturate=True, stats=stats)
        report(f"{rounding}/stats: bits differ from the path without stats", got != plain, got)
        back = (got.astype(np.uint32) << 16).view(np.float32)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            err = np.abs(values - back)
            want_abs = max(0.0, float(np.fmax.reduce(err)))
            want_rel = max(0.0, float(np.fmax.reduce(err / np.abs(values))))
        if (stats.max_abs_error, stats.max_rel_error) != (want_abs, want_rel):
            problems.append(f"{rounding}/stats: figures {stats.max_abs_error!r}/{stats.max_rel_error!r} != "
                            f"{want_abs!r}/{want_rel!r}")
    del saturated_plain, high_plain

    # nearest_even, saturate=False, stats: overflow is counted
    stats = RoundingStats()
    float32_to_bfloat16_bits(values, "nearest_even", saturate=False, stats=stats)
    if stats.overflow_count != int(clamp.sum()):
        problems.append(f"stats.overflow_count {stats.overflow_count} != {int(clamp.sum())}")
    counts["overflow"] = stats.overflow_count
    return start, problems, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="processes (1)")
    parser.add_argument("--chunk-bits", type=int, default=24, help="log2 of the patterns per chunk (24: 64 MB)")
    parser.add_argument("--limit", type=int, default=None, help="check only the first N chunks (a smoke run)")
    args = parser.parse_args(argv)

    count = 1 << args.chunk_bits
    chunks = [(start, count) for start in range(0, 1 << 32, count)]
    if args.limit is not None:
        chunks = (
            chunks[: args.limit] + chunks[len(chunks) // 2 : len(chunks) // 2 + args.limit]
        )  # positive and negative
    started = time.perf_counter()
    failures: list[str] = []
    totals = {"nan": 0, "inf": 0, "saturated": 0, "overflow": 0}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done, (start, problems, counts) in enumerate(pool.map(check_chunk, chunks), 1):
            failures += [f"chunk 0x{start:08X}: {p}" for p in problems]
            for k, v in counts.items():
                totals[k] += v
            if done % 16 == 0 or done == len(chunks):
                print(f"{done}/{len(chunks)} chunks, {time.perf_counter() - started:.0f} s", flush=True)
    if args.limit is None:
        expected = {"nan": (1 << 24) - 2, "inf": 2, "saturated": 65536, "overflow": 65536}
        if totals != expected:
            failures.append(f"totals over all patterns {totals} != {expected}")
    seconds = time.perf_counter() - started
    patterns = len(chunks) * count
    for failure in failures[:50]:
        print("FAIL", failure)
    print(
        f"{'FAILED' if failures else 'OK'}: {patterns:,} float32 patterns in {seconds:.0f} s "
        f"({args.workers} worker(s)); totals {totals}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
