"""The .onnx written from the serializer's pieces, and whether it came out as the input's own bytes.

Small pieces (serialized fields, small tensors read in batches) are gathered into one write of up to
1 MiB; a large tensor is streamed into its place. The comparison with the input rides along, so a
conversion that changes nothing is told without reading its output back.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from olive_bf16_pass.io import serializer
from olive_bf16_pass.io.destination import Destination
from olive_bf16_pass.io.positional import Output
from olive_bf16_pass.io.streamer import Streamer

__all__ = ["Comparison", "expanded", "write_pieces"]


def write_pieces(
    pieces: list, destination: Destination, streamer: Streamer, created: list[Path], source: Path | None = None
) -> tuple[Path, bool]:
    """The temporary .onnx written from ``pieces``; and whether it is ``source``'s bytes again (False without one)."""
    out, tmp = destination.new_temporary("", created)
    # the source is closed before anything is renamed: an in-place conversion replaces it (Windows refuses an open file)
    with out, open(source, "rb") if source is not None else contextlib.nullcontext() as opened:
        same = Comparison(source, opened, streamer)
        target = Output(tmp)
        try:
            position, pending, held = 0, [], 0  # consecutive small pieces (small tensors too) go out in one write

            def write_pending() -> None:
                nonlocal position, pending, held
                small = [i for i, piece in enumerate(pending) if isinstance(piece, tuple)]
                located = [(pending[i][0].name, streamer.locate(pending[i][0]), pending[i][1]) for i in small]
                for i, data in zip(small, streamer.small_located(located)):
                    pending[i] = data
                data = b"".join(pending)
                target.pwrite(data, position)
                position, pending, held = position + len(data), [], 0

            for piece in expanded(pieces):
                same.add(piece)
                if isinstance(piece, tuple) and not streamer.batched(piece[2]):
                    if pending:
                        write_pending()
                    tensor, conversion, nbytes = piece
                    streamer.copy(tensor, target, position, conversion)
                    position += nbytes
                    continue
                pending.append(piece)
                held += piece[2] if isinstance(piece, tuple) else len(piece)
                if len(pending) >= 4096 or held >= _HELD:
                    write_pending()
            if pending:
                write_pending()
            streamer.flush()
        finally:
            streamer.drain()  # no chunk may still be written when the file closes
            target.close()
        os.fsync(out.fileno())
    return tmp, same.holds


_HELD = 1 << 20  # bytes of small pieces gathered for one write


def expanded(pieces):
    """The pieces, each :class:`~olive_bf16_pass.io.serializer.Batches` as its batches, made as they are written."""
    for piece in pieces:
        if isinstance(piece, serializer.Batches):
            yield from piece
        else:
            yield piece


class Comparison:
    """Whether pieces, written one after another, give ``source``'s bytes (``file``: it, open): each
    tensor streamed as it was from ``source`` at the very place it lands, every other piece equal to
    ``source``'s bytes there (read a MiB at a time: a map would add the file to the process's memory)."""

    def __init__(self, source: Path | None, file, streamer: Streamer):
        self.source, self.file, self.streamer = source, file, streamer
        self.holds, self.at = file is not None, 0

    def add(self, piece) -> None:
        if not self.holds:
            return
        if isinstance(piece, tuple):
            tensor, conversion, nbytes = piece
            file, offset, length = self.streamer.locate(tensor)
            self.holds = conversion is None and length == nbytes and offset == self.at and file == self.source
        else:
            nbytes = len(piece)
            self.file.seek(self.at)
            view = memoryview(piece)
            self.holds = all(self.file.read(len(part)) == part
                             for part in (view[i:i + _COMPARED] for i in range(0, nbytes, _COMPARED)))
        self.at += nbytes


_COMPARED = 1 << 20
