"""Bad input through the command: one-line errors, the right exit code, nothing written, input untouched.

Each case runs ``olive_bf16_pass.cli.main`` in-process and checks, besides the message:
- the exit code (1 for a model or path that cannot be converted, 2 for usage);
- stderr is exactly one line, ``olive-bf16: error: ...``, with no traceback;
- every folder involved holds exactly what it held before (no output, no ``.NAME.*.tmp``);
- the input's bytes (and its external data's) are unchanged.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from _fuzz_models import (
    matmul_model,
    run_session,
    save_with_external_data,
    sha256,
    snapshot,
    temp_leftovers,
    with_external_reference,
)
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.io import streamer, writer
from olive_bf16_pass.cli import main
from olive_bf16_pass.errors import ConversionError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def fp32(work):
    path = work / "model.onnx"
    onnx.save(matmul_model(), str(path))
    return path


def expect_error(capsys, argv, *, contains, folders, code=1):
    """Run the command; check the one-line error, the exit code and that ``folders`` did not change."""
    before = {f: snapshot(f) for f in folders}
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == code, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("olive-bf16: error: "), err
    for text in [contains] if isinstance(contains, str) else contains:
        assert text in lines[0], lines[0]
    for f in folders:
        assert snapshot(f) == before[f], f"{f} changed"
        assert temp_leftovers(f) == []
    return lines[0]


def expect_ok(capsys, argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured


# --- input paths -----------------------------------------------------------------------------


def test_missing_input(capsys, work):
    expect_error(capsys, ["convert", work / "nope.onnx", work / "out.onnx"], contains="no such file", folders=[work])


def test_input_is_a_directory(capsys, work):
    (work / "d.onnx").mkdir()
    expect_error(capsys, ["convert", work / "d.onnx", work / "out.onnx"], contains="is a directory", folders=[work])


def test_empty_input(capsys, work):
    (work / "empty.onnx").write_bytes(b"")
    expect_error(capsys, ["convert", work / "empty.onnx", work / "out.onnx"], contains="empty", folders=[work])


@pytest.mark.parametrize(
    "content",
    [b"hello, not a model\n", bytes(range(256)) * 7, b"\x08\x0a\x12\x00" + b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f"],
    ids=["text", "bytes", "bad-varint", "huge-length"],
)
def test_not_onnx(capsys, work, content):
    (work / "junk.onnx").write_bytes(content)
    expect_error(
        capsys, ["convert", work / "junk.onnx", work / "out.onnx"], contains="not a valid ONNX", folders=[work]
    )


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.5, 0.99])
def test_truncated_onnx(capsys, work, fp32, fraction):
    data = fp32.read_bytes()
    cut = work / "cut.onnx"
    cut.write_bytes(data[: max(1, int(len(data) * fraction))])
    expect_error(capsys, ["convert", cut, work / "out.onnx"], contains="not a valid ONNX", folders=[work])


def test_inspect_bad_input_is_one_line_too(capsys, work):
    (work / "junk.onnx").write_bytes(b"junk")
    expect_error(capsys, ["inspect", work / "junk.onnx"], contains="not a valid ONNX", folders=[work])
    expect_error(capsys, ["inspect", work / "nope.onnx"], contains="no such file", folders=[work])


# --- external data ---------------------------------------------------------------------------


def test_external_data_file_missing(capsys, work):
    onnx.save(with_external_reference(matmul_model(), "W", "weights.bin"), str(work / "m.onnx"))
    expect_error(
        capsys, ["convert", work / "m.onnx", work / "out.onnx"], contains=["weights.bin", "missing"], folders=[work]
    )


@pytest.mark.parametrize("declared", [True, False], ids=["length-declared", "length-implied"])
def test_external_data_shorter_than_offsets(capsys, work, declared):
    np.ones(1000, np.float32).tofile(work / "weights.bin")  # W needs 64*64 floats
    model = with_external_reference(matmul_model(), "W", "weights.bin", offset=0, length=16384 if declared else None)
    onnx.save(model, str(work / "m.onnx"))
    expect_error(capsys, ["convert", work / "m.onnx", work / "out.onnx"], contains="weights.bin", folders=[work])


def test_external_data_offset_past_the_end(capsys, work):
    np.ones(64 * 64, np.float32).tofile(work / "weights.bin")
    onnx.save(
        with_external_reference(matmul_model(), "W", "weights.bin", offset=4096, length=16384), str(work / "m.onnx")
    )
    expect_error(capsys, ["convert", work / "m.onnx", work / "out.onnx"], contains="truncated", folders=[work])


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.bin"
    np.full(64 * 64, 7.0, np.float32).tofile(path)
    return path


@pytest.fixture
def opened(monkeypatch):
    """Every path opened through builtins.open while the test runs."""
    paths: list[Path] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            paths.append(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    return paths


@pytest.mark.parametrize("kind", ["dotdot", "nested-dotdot", "absolute", "symlink-file", "symlink-dir", "empty"])
def test_external_data_outside_the_folder_is_refused_and_never_read(capsys, work, secret, opened, kind):
    if kind == "dotdot":
        location = "../secret.bin"
    elif kind == "nested-dotdot":
        (work / "sub").mkdir()
        location = "sub/../../secret.bin"
    elif kind == "absolute":
        location = str(secret)
    elif kind == "symlink-file":
        (work / "link.bin").symlink_to(secret)
        location = "link.bin"
    elif kind == "symlink-dir":
        (work / "linkdir").symlink_to(secret.parent, target_is_directory=True)
        location = "linkdir/secret.bin"
    else:
        location = ""
    onnx.save(with_external_reference(matmul_model(), "W", location, length=16384), str(work / "m.onnx"))
    for command in (["convert", work / "m.onnx", work / "out.onnx"], ["inspect", work / "m.onnx"]):
        expect_error(capsys, command, contains="refusing to read" if location else "location", folders=[work])
    assert secret.resolve() not in opened


def test_symlink_inside_the_folder_is_fine(capsys, work):
    """A link that stays inside the model's folder is not an escape."""
    model = matmul_model()
    save_with_external_data(model, work / "m.onnx", location="real.data")
    (work / "m.onnx").unlink()
    (work / "alias.data").symlink_to("real.data")
    onnx.save(with_external_reference(matmul_model(), "W", "alias.data", offset=0, length=16384), str(work / "m.onnx"))
    expect_ok(capsys, ["convert", work / "m.onnx", work / "out.onnx", "-q"])


# --- output paths ----------------------------------------------------------------------------


def test_output_equal_to_input_is_refused(capsys, work, fp32):
    line = expect_error(capsys, ["convert", fp32, fp32], contains="the output is the input", folders=[work])
    assert "--in-place" in line
    # the same file through another spelling
    expect_error(
        capsys, ["convert", fp32, work / "." / "model.onnx"], contains="the output is the input", folders=[work]
    )
    (work / "hard.onnx").hardlink_to(fp32)
    expect_error(capsys, ["convert", fp32, work / "hard.onnx"], contains="the output is the input", folders=[work])


def test_output_over_the_inputs_external_data_is_refused(capsys, work):
    """Writing OUT's data file over IN's would corrupt IN: refused without --in-place."""
    save_with_external_data(matmul_model(), work / "a.onnx", location="w.data")
    expect_error(
        capsys,
        ["convert", work / "a.onnx", work / "b.onnx", "--external-data-name", "w.data"],
        contains=["w.data", "overwrite a file of the input", "--in-place"],
        folders=[work],
    )
    expect_error(capsys, ["convert", work / "a.onnx", work / "w.data"], contains="overwrite", folders=[work])


def test_external_data_name_equal_to_the_model_name_is_refused(capsys, work, fp32, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    expect_error(
        capsys,
        ["convert", fp32, out / "b.onnx", "--external-data-name", "b.onnx"],
        contains="model's own file name",
        folders=[work, out],
    )
    expect_error(
        capsys,
        ["convert", fp32, out / "b.onnx", "--external-data-name", "sub/w.data"],
        contains="plain file name",
        folders=[work, out],
    )


def test_in_place_single_file(capsys, work, fp32):
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    before = run_session(fp32, {"x": x})[0]
    inode = fp32.stat().st_ino
    expect_ok(capsys, ["convert", fp32, fp32, "--in-place", "-q"])
    assert fp32.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    assert sorted(p.name for p in work.iterdir()) == ["model.onnx"]
    after = run_session(fp32, {"x": x})[0]
    np.testing.assert_allclose(after, before, atol=0.05 * max(1, np.abs(before).max()))
    assert any(t.data_type == TensorProto.BFLOAT16 for t in onnx.load(str(fp32)).graph.initializer)


def test_in_place_with_external_data(capsys, work):
    path = work / "m.onnx"
    save_with_external_data(matmul_model(), path, location="m.onnx.data")
    x = np.ones((1, 64), np.float32)
    before = run_session(path, {"x": x})[0]
    expect_ok(capsys, ["convert", path, path, "--in-place", "--external-data", "-q"])
    assert sorted(p.name for p in work.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (work / "m.onnx.data").stat().st_size == 64 * 64 * 2
    np.testing.assert_allclose(run_session(path, {"x": x})[0], before, atol=0.05 * max(1, np.abs(before).max()))


def test_output_folder_missing(capsys, work, fp32):
    expect_error(
        capsys, ["convert", fp32, work / "no" / "such" / "out.onnx"], contains="does not exist", folders=[work]
    )


def test_output_parent_is_a_file(capsys, work, fp32):
    expect_error(capsys, ["convert", fp32, fp32 / "out.onnx"], contains="not a folder", folders=[work])


def test_output_is_a_directory(capsys, work, fp32):
    (work / "out.onnx").mkdir()
    expect_error(capsys, ["convert", fp32, work / "out.onnx"], contains="is a directory", folders=[work])


def test_report_folder_missing_writes_nothing(capsys, work, fp32):
    expect_error(
        capsys,
        ["convert", fp32, work / "out.onnx", "--report", work / "no" / "r.json"],
        contains="report",
        folders=[work],
    )


def test_unwritable_output_folder(capsys, work, fp32, monkeypatch):
    """Root ignores file modes, so the refusal is simulated where the writer creates its temporary."""
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".out.onnx.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    line = expect_error(capsys, ["convert", fp32, work / "out.onnx"], contains="Permission denied", folders=[work])
    assert "out.onnx" in line and ".tmp" not in line


@pytest.fixture
def small_mount(tmp_path):
    """A 256 KB tmpfs at tmp_path/mnt (read-write); skipped where mounting is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting needs root on Linux")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_filesystem(capsys, work, fp32, small_mount):
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    line = expect_error(
        capsys,
        ["convert", fp32, small_mount / "out.onnx"],
        contains="Read-only file system",
        folders=[work, small_mount],
    )
    assert ".tmp" not in line


def test_real_full_disk(capsys, work, small_mount):
    """A 1 MB model into a 256 KB filesystem: ENOSPC from the kernel, and the partial temp is removed."""
    src = work / "big.onnx"
    onnx.save(matmul_model(n=512), str(src))  # 1 MB of FP32, 512 KB of BF16
    for extra in ([], ["--external-data"]):
        line = expect_error(
            capsys,
            ["convert", src, small_mount / "out.onnx", *extra],
            contains="No space left",
            folders=[work, small_mount],
        )
        assert "out.onnx" in line and "nothing was written" in line
    assert list(small_mount.iterdir()) == []


class _Disk:
    """``room`` bytes of space shared by every write of one conversion, then ENOSPC."""

    def __init__(self, room):
        self.room = room

    def take(self, data):
        self.room -= len(memoryview(data).cast("B"))
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")


class _FillsUp:
    """A file object whose writes draw on a _Disk."""

    def __init__(self, f, disk):
        self.f, self.disk = f, disk

    def write(self, data):
        self.disk.take(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _fill_up(monkeypatch, room, on_temp=None):
    """Make every write of the converter, buffered or positional, draw on one small disk."""
    disk = _Disk(room)
    real_temp, real_pwrite = writer._temp_beside, streamer.Output.pwrite

    def temp_beside(*args):
        f, path = real_temp(*args)
        if on_temp:
            on_temp()
        return _FillsUp(f, disk), path

    def pwrite(self, data, at):
        disk.take(data)
        return real_pwrite(self, data, at)

    monkeypatch.setattr(writer, "_temp_beside", temp_beside)
    monkeypatch.setattr(streamer.Output, "pwrite", pwrite)


@pytest.mark.parametrize("room", [0, 100, 4000], ids=["at-once", "in-header", "in-data"])
@pytest.mark.parametrize("external", [False, True], ids=["single-file", "external-data"])
def test_full_disk_simulated(capsys, work, fp32, tmp_path, monkeypatch, room, external):
    out = tmp_path / "out"
    out.mkdir()
    state = {"calls": 0}
    _fill_up(monkeypatch, room, on_temp=lambda: state.update(calls=state["calls"] + 1))
    argv = ["convert", fp32, out / "b.onnx", *(["--external-data"] if external else [])]
    line = expect_error(
        capsys, argv, contains=["No space left on device", "b.onnx", "nothing was written"], folders=[work, out]
    )
    assert state["calls"] >= 1
    assert list(out.iterdir()) == []
    assert line.count("olive-bf16") == 1


def test_full_disk_keeps_an_existing_output(capsys, work, fp32, monkeypatch):
    """A failed run over an existing OUT leaves the old OUT as it was."""
    expect_ok(capsys, ["convert", fp32, work / "out.onnx", "-q"])
    _fill_up(monkeypatch, 5000)
    expect_error(
        capsys, ["convert", fp32, work / "out.onnx", "--min-elements", "1"], contains="No space", folders=[work]
    )


# --- models the conversion refuses or passes through -------------------------------------------


def test_opset_below_13_is_refused_when_asked(capsys, work):
    onnx.save(matmul_model(opset=12), str(work / "old.onnx"))
    expect_error(
        capsys,
        ["convert", work / "old.onnx", work / "out.onnx", "--no-upgrade-opset"],
        contains=["opset 12", "opset 13", "upgrade_opset"],
        folders=[work],
    )


def test_sparse_initializers(capsys, work):
    model = matmul_model()
    values = numpy_helper.from_array(np.ones(3, np.float32), "S")
    indices = numpy_helper.from_array(np.array([0, 5, 9], np.int64), "S_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1, 64]))
    model.graph.node.append(helper.make_node("Add", ["y", "S"], ["z"]))
    model.graph.output[0].name = "z"
    onnx.save(model, str(work / "sparse.onnx"))
    expect_error(
        capsys, ["convert", work / "sparse.onnx", work / "out.onnx"], contains="sparse initializers", folders=[work]
    )


def test_float16_only_model(capsys, work):
    onnx.save(matmul_model(dtype=np.float16), str(work / "fp16.onnx"))
    expect_error(
        capsys, ["convert", work / "fp16.onnx", work / "out.onnx"], contains=["float16", "FP32"], folders=[work]
    )


def test_already_bfloat16_converts_to_itself(capsys, work, fp32):
    once, twice = work / "once.onnx", work / "twice.onnx"
    expect_ok(capsys, ["convert", fp32, once, "-q"])
    source = snapshot(work)
    out = expect_ok(capsys, ["convert", once, twice, "--report", work / "r.json"]).out
    assert "converted 0 tensors" in out and "already bfloat16" in out
    assert sha256(twice) == sha256(once)
    assert {k: v for k, v in snapshot(work).items() if k in source} == source
    report = json.loads((work / "r.json").read_text())
    assert report["converted"] == [] and [s["reason"] for s in report["skipped"]].count("already bfloat16") == 1


def test_bf16_model_with_external_data_converts_to_itself(capsys, work):
    save_with_external_data(matmul_model(), work / "m.onnx")
    expect_ok(capsys, ["convert", work / "m.onnx", work / "a.onnx", "--external-data", "-q"])
    expect_ok(capsys, ["convert", work / "a.onnx", work / "b.onnx", "--external-data", "-q"])
    assert sha256(work / "a.onnx.data") == sha256(work / "b.onnx.data")
    a, b = (
        onnx.load(str(work / "a.onnx"), load_external_data=False),
        onnx.load(str(work / "b.onnx"), load_external_data=False),
    )
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        ta_info = {e.key: e.value for e in ta.external_data if e.key != "location"}
        tb_info = {e.key: e.value for e in tb.external_data if e.key != "location"}
        assert (ta.name, ta.data_type, ta_info, ta.raw_data) == (tb.name, tb.data_type, tb_info, tb.raw_data)


def test_mixed_float16_and_float32_converts_the_float32(capsys, work):
    model = matmul_model()
    model.graph.initializer.append(numpy_helper.from_array(np.ones(2048, np.float16), "half"))
    onnx.save(model, str(work / "mixed.onnx"))
    out = expect_ok(capsys, ["convert", work / "mixed.onnx", work / "out.onnx"]).out
    assert "converted 1 tensors" in out


SPECIALS = {
    (0, 0): np.nan,
    (0, 1): np.inf,
    (0, 2): -np.inf,
    (0, 3): 3.4e38,  # rounds past BF16's max
    (0, 4): -3.4e38,
    (0, 6): 1e-45,  # a float32 subnormal
}


@pytest.mark.parametrize("saturate", [True, False])
def test_nan_and_inf_are_converted_faithfully_and_counted(capsys, work, saturate):
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    for (i, j), v in SPECIALS.items():
        w[i, j] = v
    w.view(np.uint32)[0, 5] = 0xFFC00001  # a negative NaN with a payload
    onnx.save(matmul_model(weight=w), str(work / "special.onnx"))
    flags = [] if saturate else ["--no-saturate"]
    out = expect_ok(
        capsys, ["convert", work / "special.onnx", work / "out.onnx", "--report", work / "r.json", *flags]
    ).out
    (record,) = json.loads((work / "r.json").read_text())["converted"]
    assert record["nan_count"] == 2 and record["inf_count"] == 2
    assert (record["saturated_count"], record["overflow_count"]) == ((2, 0) if saturate else (0, 2))
    assert "2 NaN" in out and "2 Inf" in out
    stored = next(t for t in onnx.load(str(work / "out.onnx")).graph.initializer if t.data_type == TensorProto.BFLOAT16)
    bits = np.frombuffer(stored.raw_data, np.uint16).reshape(64, 64)
    got = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    assert np.isnan(got[0, 0]) and not np.signbit(got[0, 0])
    assert np.isnan(got[0, 5]) and np.signbit(got[0, 5])
    assert got[0, 1] == np.inf and got[0, 2] == -np.inf
    big = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    assert (got[0, 3], got[0, 4]) == ((big, -big) if saturate else (np.inf, -np.inf))
    finite = np.isfinite(w) & (np.abs(w) < 1e38)
    expected = w.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got[finite], expected[finite])


# --- tracebacks ------------------------------------------------------------------------------


def test_debug_shows_the_traceback(work):
    with pytest.raises(ConversionError, match="no such file"):
        main(["--debug", "convert", str(work / "nope.onnx"), str(work / "out.onnx")])
    with pytest.raises(ConversionError, match="no such file"):
        main(["convert", str(work / "nope.onnx"), str(work / "out.onnx"), "--debug"])


def test_unexpected_errors_are_one_line_too(capsys, work, fp32, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("something broke\nacross lines")

    monkeypatch.setattr("olive_bf16_pass.convert.convert_file", boom)
    line = expect_error(
        capsys, ["convert", fp32, work / "out.onnx"], contains=["RuntimeError", "--debug"], folders=[work]
    )
    assert "across lines" in line


def test_real_process_one_line_and_exit_codes(work):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "olive_bf16_pass"]
    plain = subprocess.run(
        [*run, "convert", str(work / "nope.onnx"), str(work / "o.onnx")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [*run, "--debug", "convert", str(work / "nope.onnx"), str(work / "o.onnx")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConversionError" in debug.stderr
    usage = subprocess.run([*run, "convert", "--bogus"], check=False, capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    assert list(work.iterdir()) == []
