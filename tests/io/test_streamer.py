"""The streamer's output: synced to the disk behind the writes, and a failed background sync fails it."""

from __future__ import annotations

import errno
import os
import threading

import onnx
import pytest

from helpers import embedding_mlp, save
from olive_bf16_pass import ConversionOptions, convert_file
from olive_bf16_pass.io import streamer


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

    monkeypatch.setattr(streamer.Output, "SYNC_BYTES", 256 << 10)
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

    monkeypatch.setattr(streamer.Output, "SYNC_BYTES", 256 << 10)
    monkeypatch.setattr(streamer, "CHUNK_BYTES", 512 << 10)
    monkeypatch.setattr(os, "fsync", failing_in_background)
    with pytest.raises(OSError) as caught:
        convert_file(src, tmp_path / "out.onnx", ConversionOptions())
    assert caught.value.errno == errno.EIO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]  # no output, no temporaries
    assert src.read_bytes() == before
    onnx.checker.check_model(onnx.load(str(src)))
