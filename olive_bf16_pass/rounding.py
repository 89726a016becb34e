"""FP32 bit patterns to BF16 bit patterns, with numpy and ml_dtypes.

BF16 is the top half of a float32. ``ml_dtypes`` is the reference for nearest-even rounding;
truncation (with NaN payloads kept NaN), saturation of out-of-range finite values, and the error
figures are ours. Arrays are processed in cache-sized chunks into a caller's buffer, so a 1 GB
tensor costs no more than its BF16 output in extra memory.

With error figures asked for (the streamer always asks), a chunk takes the fused path: in-place
integer bit operations on per-thread scratch buffers round it (``(u + 0x7FFF + ((u >> 16) & 1))
>> 16``, bit-exact with ml_dtypes on every finite and infinite input, see
scripts/exhaustive_rounding.py), and the same buffers give the error figures, whose maximum
also tells whether the chunk held anything special: a NaN or Inf input, or a finite input
rounded to Inf, leaves a NaN or Inf error. Such a chunk (rare: attention-mask minima) is done
again by the general path below, so the bits and figures are those of the general path always;
no temporary array is allocated per chunk, where the general path allocates several.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BF16_MAX_BITS", "ROUNDINGS", "RoundingStats", "bfloat16_bits_to_float32", "float32_to_bfloat16_bits", "round_segments",
]

ROUNDINGS = ("nearest_even", "truncate")

BF16_MAX_BITS = 0x7F7F  # 3.3895314e38, the largest finite bfloat16
# elements per chunk: 1 MiB of float32; with its scratch buffers and output, inside a core's L2. Two
# workers round at once, and each numpy call hands the GIL over: fewer, larger calls than 2**16 (best
# alone) keep the workers from waiting on each other (15% less wall on the BCE model, 2**16-2**20 tried)
_CHUNK = 1 << 18


@dataclass
class RoundingStats:
    """What rounding did to one tensor: the figures a report needs."""

    elements: int = 0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    nan_count: int = 0
    inf_count: int = 0  # Inf in the input, kept as Inf
    saturated_count: int = 0  # finite inputs beyond BF16's range, clamped to +-max
    overflow_count: int = 0  # finite inputs that became Inf (saturate=False)

    def merge(self, other: RoundingStats) -> None:
        self.elements += other.elements
        self.max_abs_error = max(self.max_abs_error, other.max_abs_error)
        self.max_rel_error = max(self.max_rel_error, other.max_rel_error)
        self.nan_count += other.nan_count
        self.inf_count += other.inf_count
        self.saturated_count += other.saturated_count
        self.overflow_count += other.overflow_count


_scratch = threading.local()  # per thread: _CHUNK-sized buffers for the fused path, made on first use


def _buffer(n: int, which: str = "wide") -> np.ndarray:
    held = getattr(_scratch, which, None)
    if held is None:
        held = np.empty(_CHUNK, dtype=np.uint32)
        setattr(_scratch, which, held)
    return held[:n]


def _fused_chunk(bits: np.ndarray, out: np.ndarray, rounding: str, stats: RoundingStats) -> bool:
    """Round one chunk and take its error figures in one sweep of in-place operations on a scratch
    buffer; False (``out`` and ``stats`` then hold nothing of it) when the chunk holds a NaN or Inf
    input or a finite input rounded to Inf: the general path must do it.

    Every operation writes into the buffer it reads (two operands, not three): the chunk, the
    buffer and ``out`` stay in the core's cache, and the u32 -> u16 step is a plain cast after an
    in-place shift (numpy's shift into a narrower type is a slower, unvectorized loop)."""
    wide = _buffer(bits.size)
    if not bits.flags.aligned:  # a tensor at an odd offset of a mapped file: numpy's loops run 35% slower
        aligned = _buffer(bits.size, "aligned")
        aligned[...] = bits
        bits = aligned
    if rounding == "nearest_even":
        np.right_shift(bits, 16, out=wide)
        np.bitwise_and(wide, 1, out=wide)
        np.add(wide, bits, out=wide)  # no wrap: only NaNs lie within 0x8000 of 2**32
        np.add(wide, 0x7FFF, out=wide)
        np.right_shift(wide, 16, out=wide)
    else:
        np.right_shift(bits, 16, out=wide)
    out[...] = wide  # the BF16 bits: below 2**16, so the cast is exact
    np.left_shift(wide, 16, out=wide)  # the rounded value, as float32 bits
    x, err = bits.view(np.float32), wide.view(np.float32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        np.subtract(x, err, out=err)  # exact: x and its rounding share the top bits
        np.abs(err, out=err)
        worst = float(np.maximum.reduce(err))  # NaN or Inf: a special input, or an overflow
        if not math.isfinite(worst):
            return False
        np.divide(err, x, out=err)  # |err| / x: the relative error up to its sign (0 / 0: NaN, skipped)
        np.abs(err, out=err)
        worst_rel = float(np.fmax.reduce(err))
    stats.max_abs_error = max(stats.max_abs_error, worst)
    stats.max_rel_error = max(stats.max_rel_error, worst_rel)
    return True


def _round_chunk(bits: np.ndarray, out: np.ndarray, rounding: str, saturate: bool, stats: RoundingStats | None):
    """Round one chunk of float32 bits (uint32) into ``out`` (uint16)."""
    if _fused_chunk(bits, out, rounding, RoundingStats() if stats is None else stats):
        return
    if rounding == "nearest_even":
        import ml_dtypes  # its import costs 0.4 s (0.7.0): only chunks with NaN or Inf come here

        with np.errstate(invalid="ignore", over="ignore"):
            out.view(ml_dtypes.bfloat16)[...] = bits.view(np.float32)  # NaN keeps its sign
    else:
        np.right_shift(bits, 16, out=out, casting="unsafe")
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        if nan.any():  # a payload only in the low half would become Inf: force the quiet bit
            out[nan] |= 0x0040
    # a finite input rounded up into Inf: only nearest_even past BF16's max does that
    overflow = (out & 0x7FFF) == 0x7F80
    if overflow.any():
        overflow &= (bits & 0x7FFFFFFF) != 0x7F800000
        n = int(overflow.sum())
        if n and saturate:
            out[overflow] = (out[overflow] & 0x8000) | BF16_MAX_BITS
            if stats is not None:
                stats.saturated_count += n
        elif stats is not None:
            stats.overflow_count += n
    if stats is not None:
        _measure(bits, out, stats)


def _measure(bits: np.ndarray, out: np.ndarray, stats: RoundingStats) -> None:
    """Count NaN/Inf inputs and take the max absolute and relative error of one chunk.

    NaN-ignoring reductions (fmax) skip what has no error to speak of: NaN inputs, Inf - Inf,
    and 0 / 0 for zeros; no boolean masks, which would copy the chunk.
    """
    magnitude = bits & 0x7FFFFFFF
    special = magnitude >= 0x7F800000
    if special.any():
        nan_count = int((magnitude > 0x7F800000).sum())
        stats.nan_count += nan_count
        stats.inf_count += int(special.sum()) - nan_count
    x = bits.view(np.float32)
    back = out.astype(np.uint32)
    back <<= 16
    err = back.view(np.float32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        np.subtract(x, err, out=err)
        np.abs(err, out=err)
        stats.max_abs_error = max(stats.max_abs_error, float(np.fmax.reduce(err)))
        np.divide(err, np.abs(x), out=err)
        stats.max_rel_error = max(stats.max_rel_error, float(np.fmax.reduce(err)))


def float32_to_bfloat16_bits(
    values: np.ndarray,
    rounding: str = "nearest_even",
    saturate: bool = True,
    out: np.ndarray | None = None,
    stats: RoundingStats | None = None,
) -> np.ndarray:
    """Return the BF16 bit patterns (uint16) of float32 ``values``, same shape.

    ``rounding`` is ``"nearest_even"`` (default, matches ml_dtypes) or ``"truncate"`` (the
    plain ``>> 16`` of AMD's seed script). With ``saturate`` a finite value beyond BF16's
    range becomes +-max BF16 instead of Inf, so float32's minimum in attention masks stays
    finite. ``stats``, when given, receives error and special-value counts.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
    src = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    bits = src.view(np.uint32)
    if out is None:
        out = np.empty(bits.shape, dtype=np.uint16)
    flat_out = out.reshape(-1)
    if flat_out.size != bits.size:
        raise ValueError("out must have as many elements as values")
    for start in range(0, bits.size, _CHUNK):
        stop = min(start + _CHUNK, bits.size)
        _round_chunk(bits[start:stop], flat_out[start:stop], rounding, saturate, stats)
    if stats is not None:
        stats.elements += bits.size
    return flat_out.reshape(np.shape(values))


def round_segments(
    values: np.ndarray, sizes: list[int], rounding: str = "nearest_even", saturate: bool = True
) -> tuple[np.ndarray, list[RoundingStats]]:
    """Round consecutive runs of ``sizes`` elements of ``values`` (flat float32) as many small tensors.

    The bits, and each run's figures, equal ``float32_to_bfloat16_bits`` on that run alone, without
    numpy's per-call cost per run, which dominates a model of 100k tiny tensors.
    """
    out = float32_to_bfloat16_bits(values, rounding, saturate)
    stops = np.cumsum(sizes, dtype=np.int64)
    at = (stops - np.asarray(sizes, dtype=np.int64))[np.asarray(sizes) > 0]  # reduceat: non-empty runs only
    if not len(at):
        return out, [RoundingStats() for _ in sizes]
    magnitude = values.view(np.uint32) & 0x7FFFFFFF
    nan = np.add.reduceat(magnitude > 0x7F800000, at, dtype=np.int64).tolist()
    inf = np.add.reduceat(magnitude == 0x7F800000, at, dtype=np.int64).tolist()
    past = [0] * len(at)  # finite values at or past the midpoint above BF16's max: Inf when rounded
    if rounding == "nearest_even":
        past = np.add.reduceat((magnitude >= 0x7F7F8000) & (magnitude < 0x7F800000), at, dtype=np.int64).tolist()
    error = bfloat16_bits_to_float32(out)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        np.subtract(values, error, out=error)
        np.abs(error, out=error)
        largest = np.fmax(np.fmax.reduceat(error, at), 0.0).tolist()  # NaN-only runs: no error to speak of
        np.divide(error, np.abs(values), out=error)
        relative = np.fmax(np.fmax.reduceat(error, at), 0.0).tolist()
    figures = zip(nan, inf, past, largest, relative)
    stats = []
    for n in sizes:
        if n:
            nans, infs, clipped, worst, worst_rel = next(figures)
            stats.append(
                RoundingStats(n, worst, worst_rel, nans, infs, clipped if saturate else 0, 0 if saturate else clipped)
            )
        else:
            stats.append(RoundingStats())
    return out, stats


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen BF16 bit patterns (uint16) to float32: exact, a shift."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
