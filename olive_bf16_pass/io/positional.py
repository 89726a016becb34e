"""Positional reads and writes that run the same everywhere, and an output flushed to disk behind them.

``seek`` + ``readinto``/``write`` on a handle that no other thread uses is as positional as POSIX
pread/pwrite, which Windows lacks; each (thread, file) gets its own unbuffered handle.
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

__all__ = ["Handles", "MemoryOutput", "Output"]


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
