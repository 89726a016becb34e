"""Chunked, portable positional read -> round -> write of tensor bytes.

Every output offset is known before anything is written, so each chunk is an independent task:
positional read, conversion, positional write. Two workers run them, keeping both cores busy
(file I/O and numpy loops release the GIL); chunk buffers come from a small ring, and a slot is
reused only once its task is done. Positional I/O uses one file handle per thread, so it runs
the same on Windows, which has no positional pread/pwrite calls.

A chunk is read through a read-only map of its part of the file, closed when the chunk is done:
numpy reads the page cache in place, where a read() copies every byte into a buffer first (in
paired runs on the BCE model, half the system time and 13% less wall). A file that can't be
mapped is read into the slot's buffer instead.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.rounding import RoundingStats, float32_to_bfloat16_bits, round_segments

_HALVES = onnx.TensorProto.BFLOAT16  # a conversion into this type writes half the bytes it reads


def _halves(conversion: Conversion | None) -> bool:
    return conversion is not None and conversion.tensor.data_type == _HALVES

__all__ = ["CHUNK_BYTES", "SMALL_BYTES", "Conversion", "Handles", "MemoryOutput", "Output", "Progress", "Streamer"]

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


class Handles:
    """Positional I/O that runs everywhere: one unbuffered file object per (thread, file).

    ``seek`` + ``readinto``/``write`` on a handle no other thread uses is as positional as
    POSIX pread/pwrite, which Windows lacks, and measured as fast on 16 MB chunks.
    """

    def __init__(self, mode: str):
        self._mode = mode
        self._open: dict[tuple[int, Path], object] = {}
        self._lock = threading.Lock()

    def _get(self, path: Path):
        key = (threading.get_ident(), path)
        handle = self._open.get(key)
        if handle is None:
            handle = open(path, self._mode, buffering=0)  # noqa: SIM115 - closed by close()
            with self._lock:
                self._open[key] = handle
        return handle

    def read_into(self, path: Path, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset``; return the bytes read (fewer only at the end of the file)."""
        handle = self._get(path)
        handle.seek(offset)
        filled = 0
        while filled < len(view):
            got = handle.readinto(view[filled:])
            if not got:
                break
            filled += got
        return filled

    def mapped(self, path: Path, offset: int, n: int) -> mmap.mmap | None:
        """A read-only map of ``path`` from the allocation granule holding ``offset`` to ``offset + n``,
        or None where the file can't be mapped so (a file system without mmap, a file short of those
        bytes): read it instead. The caller closes it; Windows can't replace a file while it is mapped."""
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        fileno = self._get(path).fileno()
        try:
            if os.fstat(fileno).st_size < offset + n:  # never ask for more: Windows extends a file mapped past its end
                return None
            return mmap.mmap(fileno, offset + n - start, access=mmap.ACCESS_READ, offset=start)
        except (OSError, ValueError):
            return None

    def write(self, path: Path, data, at: int) -> None:
        handle = self._get(path)
        handle.seek(at)
        view = memoryview(data).cast("B")
        while len(view):
            view = view[handle.write(view) :]

    def close(self) -> None:
        with self._lock:
            handles, self._open = list(self._open.values()), {}
        for handle in handles:
            handle.close()


class Output:
    """Positional writes into one file, from any thread, flushed to the disk behind the writes.

    The output is fsynced before it replaces anything; one fsync at the end would wait for every
    byte at once, after the CPU work is done. So every ``SYNC_BYTES`` written, a flusher thread
    starts an fsync of what is written so far (os.fsync: FlushFileBuffers on Windows) while the
    workers go on, and the final fsync finds little left to write."""

    SYNC_BYTES = 64 << 20

    def __init__(self, path: Path):
        self.path = path
        self._handles = Handles("r+b")
        self._lock = threading.Lock()
        self._unsynced = 0
        self._flusher: ThreadPoolExecutor | None = None
        self._syncing: Future | None = None
        self._failed: OSError | None = None

    def pwrite(self, data, at: int) -> None:
        self._handles.write(self.path, data, at)
        with self._lock:
            self._unsynced += memoryview(data).nbytes
            if self._unsynced < self.SYNC_BYTES or (self._syncing is not None and not self._syncing.done()):
                return
            self._unsynced = 0
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="olive-bf16-sync")
            self._syncing = self._flusher.submit(self._fsync)

    def _fsync(self) -> None:
        try:
            with open(self.path, "r+b") as handle:  # Windows flushes only a handle that may write
                os.fsync(handle.fileno())
        except OSError as exc:
            self._failed = self._failed or exc

    def close(self) -> None:
        """Wait for the flusher; a background fsync that failed fails the output (Linux forgets a
        write error once fsync has reported it, so the final fsync alone could pass)."""
        try:
            if self._flusher is not None:
                self._flusher.shutdown(wait=True)
                self._flusher = None
            if self._failed is not None:
                raise self._failed
        finally:
            self._handles.close()


class MemoryOutput(Output):
    """Positional writes into memory, for the few tensors that must be in memory."""

    def __init__(self, size: int):
        self.data = bytearray(size)

    def pwrite(self, data, at: int) -> None:
        view = memoryview(data).cast("B")
        self.data[at : at + len(view)] = view

    def close(self) -> None:
        pass


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
