"""io/positional.py: positional reads through maps that run the same on Windows."""

from __future__ import annotations

import mmap

from olive_bf16_pass.io import positional


def test_a_map_is_never_asked_past_the_end_of_the_file(tmp_path):
    """Windows extends a file that is mapped past its end (when the handle may write): a short file is
    read instead, and the read says it ended early; the file is left as it was."""
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 300)  # 76,800 bytes: past one 64 KiB granule
    handles = positional.Handles("rb")
    try:
        whole = handles.mapped(data, 70_000, 6_800)
        skip = 70_000 % mmap.ALLOCATIONGRANULARITY  # the map starts at the granule below
        assert whole is not None and whole[skip : skip + 6_800] == data.read_bytes()[70_000:]
        whole.close()
        assert handles.mapped(data, 70_000, 6_801) is None
        assert handles.mapped(data, 76_800, 1) is None
    finally:
        handles.close()
    assert data.stat().st_size == 76_800
