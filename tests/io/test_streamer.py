"""The streamer's output: synced to the disk behind the writes, and a failed background sync fails it."""

from __future__ import annotations

import errno
import os
import threading

import onnx
import pytest

from helpers import embedding_mlp, save
from olive_bf16_pass import ConversionOptions, convert_file
from olive_bf16_pass.io import positional, streamer


def _big_model(tmp_path):
    return save(embedding_mlp(vocab=4096, hidden=256), tmp_path / "in.onnx")  # a 4 MB table: streamed in chunks


def test_output_is_synced_behind_the_writes_and_the_bytes_are_the_same(tmp_path, monkeypatch):
    src = _big_model(tmp_path)
    reference = convert_file(src, tmp_path / "ref.onnx", ConversionOptions())
    calls: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        calls.append(threading.current_thread().name)
        return real_fsync(fd)

    monkeypatch.setattr(positional.Output, "SYNC_BYTES", 256 << 10)
    monkeypatch.setattr(streamer, "CHUNK_BYTES", 512 << 10)  # many chunks, so many writes
    monkeypatch.setattr(os, "fsync", counting_fsync)
    report = convert_file(src, tmp_path / "out.onnx", ConversionOptions())
    background = [name for name in calls if name.startswith("olive-bf16-sync")]
    assert background, calls  # at least one fsync ran beside the writers
    assert len(calls) > len(background)  # and the final one, after them
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "ref.onnx").read_bytes()
    assert [r.max_abs_error for r in report.converted] == [r.max_abs_error for r in reference.converted]


def test_a_failed_background_sync_fails_the_conversion_and_leaves_nothing(tmp_path, monkeypatch):
    """Linux reports a write-back error to one fsync only: a later fsync passing proves nothing."""
    src = _big_model(tmp_path)
    before = src.read_bytes()
    real_fsync = os.fsync

    def failing_in_background(fd):
        if threading.current_thread().name.startswith("olive-bf16-sync"):
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(positional.Output, "SYNC_BYTES", 256 << 10)
    monkeypatch.setattr(streamer, "CHUNK_BYTES", 512 << 10)
    monkeypatch.setattr(os, "fsync", failing_in_background)
    with pytest.raises(OSError) as caught:
        convert_file(src, tmp_path / "out.onnx", ConversionOptions())
    assert caught.value.errno == errno.EIO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]  # no output, no temporaries
    assert src.read_bytes() == before
    onnx.checker.check_model(onnx.load(str(src)))


def _recording_maps(monkeypatch) -> list:
    maps: list = []
    real = positional.Handles.mapped

    def recording(self, path, offset, n):
        mapping = real(self, path, offset, n)
        maps.append(mapping)
        return mapping

    monkeypatch.setattr(positional.Handles, "mapped", recording)
    return maps


def test_chunks_are_read_through_maps_each_closed_when_its_chunk_is_done(tmp_path, monkeypatch):
    """Windows can't replace a file that is still mapped (an in-place conversion replaces its input)."""
    src = _big_model(tmp_path)
    convert_file(src, tmp_path / "ref.onnx", ConversionOptions())
    maps = _recording_maps(monkeypatch)
    monkeypatch.setattr(streamer, "CHUNK_BYTES", 512 << 10)
    convert_file(src, tmp_path / "out.onnx", ConversionOptions(), in_place=False)
    assert len(maps) > 4 and all(m is not None and m.closed for m in maps)
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "ref.onnx").read_bytes()
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(src.read_bytes())
    convert_file(copy, copy, ConversionOptions(), in_place=True)
    assert copy.read_bytes() == (tmp_path / "ref.onnx").read_bytes()


def test_a_file_that_cannot_be_mapped_is_read_instead(tmp_path, monkeypatch):
    src = _big_model(tmp_path)
    convert_file(src, tmp_path / "ref.onnx", ConversionOptions())

    class NoMaps:  # a file system without mmap: the call fails with ENODEV
        ALLOCATIONGRANULARITY, ACCESS_READ = positional.mmap.ALLOCATIONGRANULARITY, positional.mmap.ACCESS_READ

        @staticmethod
        def mmap(*args, **kwargs):
            raise OSError(errno.ENODEV, "No such device")

    monkeypatch.setattr(positional, "mmap", NoMaps)
    monkeypatch.setattr(streamer, "CHUNK_BYTES", 512 << 10)
    convert_file(src, tmp_path / "out.onnx", ConversionOptions())
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "ref.onnx").read_bytes()


def test_a_chunk_that_fails_while_its_map_is_in_use_raises_its_own_error(tmp_path, monkeypatch):
    """The failing chunk's traceback still holds a view of the map, so the map can't close yet: that
    must not replace the chunk's error with a BufferError, nor leave anything behind."""
    src = _big_model(tmp_path)
    before = src.read_bytes()

    def failing(values, *args, **kwargs):
        raise RuntimeError(f"rounding failed on {values.size} values")

    monkeypatch.setattr(streamer, "float32_to_bfloat16_bits", failing)
    with pytest.raises(RuntimeError, match="rounding failed on"):
        convert_file(src, tmp_path / "out.onnx", ConversionOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]
    assert src.read_bytes() == before
