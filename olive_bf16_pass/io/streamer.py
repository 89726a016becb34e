"""Chunked, portable positional read -> round -> write of tensor bytes.

Every output offset is known before anything is written, so each chunk is an independent task:
positional read, conversion, positional write (positional.py: the same on Windows, which has no
pread/pwrite). Two workers run them, keeping both cores busy (file I/O and numpy loops release
the GIL); chunk buffers come from a small ring, and a slot is reused only once its task is done.

A chunk is read through a read-only map of its part of the file, closed when the chunk is done:
numpy reads the page cache in place, where a read() copies every byte into a buffer first (in
paired runs on the BCE model, half the system time and 13% less wall). A file that can't be
mapped is read into the slot's buffer instead.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.io.positional import Handles, MemoryOutput, Output
from olive_bf16_pass.rounding import RoundingStats, float32_to_bfloat16_bits, round_segments

_HALVES = onnx.TensorProto.BFLOAT16  # a conversion into this type writes half the bytes it reads


def _halves(conversion: Conversion | None) -> bool:
    return conversion is not None and conversion.tensor.data_type == _HALVES

__all__ = ["CHUNK_BYTES", "SMALL_BYTES", "Conversion", "Progress", "Streamer"]

CHUNK_BYTES = 16 << 20
# Tensors up to this size are read (and rounded) in the caller's thread, in batches: a worker task
# costs tens of microseconds, which dominates a model of many small tensors.
SMALL_BYTES = 64 << 10
Progress = Callable[[int, int], None]


@dataclass(eq=False)
class Conversion:
    """An FP32 tensor still on disk that the writer rounds to BF16 while streaming it.

    The tensor's declared type says how the rounded values are written: BFLOAT16 (2 bytes an
    element), or FLOAT for storage float32 (the BF16 bits shifted back: 4 bytes an element)."""

    tensor: onnx.TensorProto
    stats: RoundingStats = field(default_factory=RoundingStats)


class Streamer:
    """Copies tensor bytes from their sources to known offsets of outputs, converting some."""

    WORKERS = 2
    SLOTS = 4

    def __init__(self, locate: Callable[[onnx.TensorProto], tuple[Path, int, int]], rounding: str, saturate: bool):
        self.locate, self.rounding, self.saturate = locate, rounding, saturate
        self._sources = Handles("rb")
        # np.empty, not bytearray: nothing is zeroed, and a page costs memory only once a chunk uses it
        # (chunks are read through maps; these 64 MB are touched only for a file that can't be mapped)
        self._in = [np.empty(CHUNK_BYTES, dtype=np.uint8) for _ in range(self.SLOTS)]
        self._out = [np.empty(CHUNK_BYTES // 4, dtype=np.uint16) for _ in range(self.SLOTS)]
        self._wide: list[np.ndarray | None] = [None] * self.SLOTS  # storage float32: made on first use
        self._busy: list[Future | None] = [None] * self.SLOTS
        self._slot = 0
        self._stats_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="olive-bf16-chunk")
        self.done = 0
        self.total = 0
        self.progress: Progress | None = None

    def batched(self, nbytes: int) -> bool:
        """Whether a tensor of ``nbytes`` is read with others in the caller's thread (``small_located``)
        rather than by the workers (``copy``)."""
        return nbytes <= SMALL_BYTES

    def out_nbytes(self, tensor: onnx.TensorProto, conversion: Conversion | None) -> int:
        length = self.locate(tensor)[2]
        return length // 2 if _halves(conversion) else length

    def flush(self) -> None:
        """Wait until every queued chunk is written; raise the first error."""
        pending, self._busy = self._busy, [None] * self.SLOTS
        for future in pending:
            if future is not None:
                future.result()

    def drain(self) -> None:
        """Wait for queued chunks, ignoring their errors: the output is being abandoned anyway."""
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the error that made us abandon it is already raising
            self._busy = [None] * self.SLOTS

    def _take_slot(self) -> int:
        slot, self._slot = self._slot, (self._slot + 1) % self.SLOTS
        if self._busy[slot] is not None:
            self._busy[slot].result()  # raises a failed chunk here, not later
            self._busy[slot] = None
        return slot

    def copy(self, tensor: onnx.TensorProto, out: Output, position: int, conversion: Conversion | None) -> int:
        """Queue the tensor's (converted) bytes for ``out`` at ``position``; return their size."""
        path, offset, length = self.locate(tensor)
        halves = _halves(conversion)
        for start in range(0, length, CHUNK_BYTES):
            n = min(CHUNK_BYTES, length - start)
            at = position + (start // 2 if halves else start)
            slot = self._take_slot()
            self._busy[slot] = self._pool.submit(self._chunk, slot, path, offset + start, n, out, at, conversion)
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)
        return length // 2 if halves else length

    def small_located(self, items: list[tuple[str, tuple[Path, int, int], Conversion | None]]) -> list[bytes]:
        """The (converted) bytes of small tensors located beforehand ((name, (file, offset, length), conversion)),
        read here and rounded in one numpy pass for all of them.

        Each tensor's bits and figures are those of rounding it alone (``round_segments``)."""
        data: list[bytes] = []
        for name, (path, offset, length), _ in items:
            buf = bytearray(length)
            if self._sources.read_into(path, memoryview(buf), offset) < length:
                raise ConversionError(f"tensor {name!r}: its data ended early; the file is truncated.")
            data.append(buf)
            self.done += length
        rounded = [i for i, (_, _, conversion) in enumerate(items) if conversion is not None]
        if rounded:
            values = np.frombuffer(b"".join(data[i] for i in rounded), dtype="<f4")
            bits, stats = round_segments(values, [len(data[i]) // 4 for i in rounded], self.rounding, self.saturate)
            start = 0
            for i, local in zip(rounded, stats):
                conversion, n = items[i][2], len(data[i]) // 4
                part = bits[start : start + n]
                start += n
                data[i] = part.tobytes() if _halves(conversion) else (part.astype("<u4") << 16).tobytes()
                with self._stats_lock:
                    conversion.stats.merge(local)
        if self.progress and items:
            self.progress(self.done, self.total)
        return data

    def read(self, tensor: onnx.TensorProto, conversion: Conversion | None = None) -> bytes:
        """One tensor's whole (converted) data in memory, for the few that must be."""
        buf = MemoryOutput(self.out_nbytes(tensor, conversion))
        self.copy(tensor, buf, 0, conversion)
        self.flush()
        return bytes(buf.data)

    def _chunk(self, slot, path, offset, n, out, at, conversion) -> None:
        mapping = self._sources.mapped(path, offset, n)
        try:
            if mapping is not None:
                data = np.frombuffer(mapping, dtype=np.uint8, count=n, offset=offset % mmap.ALLOCATIONGRANULARITY)
            else:
                data = self._in[slot][:n]
                if self._sources.read_into(path, memoryview(data), offset) < n:
                    name = conversion.tensor.name if conversion else "?"
                    raise ConversionError(f"tensor {name!r}: its data ended early; the file is truncated.")
            self._send(data, slot, out, at, conversion)
            del data
        finally:
            if mapping is not None:
                _close(mapping)

    def _send(self, data: np.ndarray, slot: int, out: Output, at: int, conversion: Conversion | None) -> None:
        if conversion is None:
            out.pwrite(data, at)
            return
        local = RoundingStats()
        values = data.view(np.float32)
        bits = float32_to_bfloat16_bits(values, self.rounding, self.saturate, self._out[slot][: values.size], local)
        if _halves(conversion):
            out.pwrite(bits.data, at)
        else:  # storage float32: the rounded value, as FP32 bits (exact: BF16 is FP32's top half)
            if self._wide[slot] is None:
                self._wide[slot] = np.empty(CHUNK_BYTES // 4, dtype="<u4")
            wide = self._wide[slot][: bits.size]
            np.left_shift(bits, 16, out=wide, dtype="<u4", casting="unsafe")
            out.pwrite(wide.data, at)
        with self._stats_lock:
            conversion.stats.merge(local)

    def close(self) -> None:
        """Stop the workers and close the sources: Windows cannot replace a file still open."""
        self._pool.shutdown()
        self._sources.close()


def _close(mapping: mmap.mmap) -> None:
    try:
        mapping.close()
    except BufferError:  # a view still held by a raising chunk's traceback: the map goes with it
        pass
