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
    expect_error,
    expect_ok,
    matmul_model,
    run_session,
    save_with_external_data,
    sha256,
    snapshot,
    with_external_reference,
)
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.io import positional
from olive_bf16_pass.io.destination import Destination
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
    real_temp, real_pwrite = Destination.new_temporary, positional.Output.pwrite

    def temp_beside(*args):
        f, path = real_temp(*args)
        if on_temp:
            on_temp()
        return _FillsUp(f, disk), path

    def pwrite(self, data, at):
        disk.take(data)
        return real_pwrite(self, data, at)

    monkeypatch.setattr(Destination, "new_temporary", temp_beside)
    monkeypatch.setattr(positional.Output, "pwrite", pwrite)


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
        contains=["opset 12", "opset 13", "--no-upgrade-opset"],
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


# --- corrupt contents: data sizes, data types, names (issue 10, item 6) ------------------------


def _bad_inline_raw(work):
    """An FP32 initializer of shape [3] with 10 bytes of raw_data, read by a node."""
    model = matmul_model()
    t = numpy_helper.from_array(np.ones(3, np.float32), "c")
    t.raw_data = b"\0" * 10
    model.graph.initializer.append(t)
    return model


def _bad_typed(work):
    model = matmul_model()
    model.graph.initializer.append(TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[3], float_data=[1, 2]))
    return model


def _bad_lifted(work):
    """W's raw_data (over the inline limit, so it stays on disk while reading) 2 bytes short."""
    model = matmul_model()
    w = model.graph.initializer[0]
    w.raw_data = w.raw_data[:-2]
    return model


def _bad_constant(work):
    model = matmul_model()
    value = numpy_helper.from_array(np.ones(3, np.float32), "v")
    value.raw_data = b"\0" * 10
    model.graph.node.append(helper.make_node("Constant", [], ["k"], name="const", value=value))
    return model


@pytest.mark.parametrize(
    "build, contains",
    [
        (_bad_inline_raw, ["initializer 'c' (graph)", "raw_data holds 10 bytes", "[3] of float needs 12"]),
        (_bad_typed, ["initializer 'c' (graph)", "float_data holds 2 values", "needs 3"]),
        (_bad_lifted, ["initializer 'W' (graph)", "raw_data holds 16382 bytes", "[64, 64] of float needs 16384"]),
        (_bad_constant, ["attribute 'value' of Constant node 'const' (graph)", "10 bytes", "needs 12"]),
    ],
    ids=["inline-raw", "float-data", "large-raw", "constant"],
)
def test_data_size_not_matching_the_shape_is_refused(capsys, work, build, contains):
    path = work / "bad.onnx"
    onnx.save(build(work), str(path))
    for command in (["convert", path, work / "out.onnx"], ["convert", path, work / "o.onnx", "--min-elements", "1"],
                    ["inspect", path]):
        line = expect_error(capsys, command, contains=[*contains, "the file is corrupt", "Re-export"], folders=[work])
        assert "buffer size" not in line and "TensorProto" not in line


def test_data_size_not_matching_the_shape_in_memory(work):
    """convert_model: the same refusal, never numpy's 'buffer size must be a multiple of element size'."""
    from olive_bf16_pass import convert_model
    from olive_bf16_pass.options import ConversionOptions

    with pytest.raises(ConversionError, match=r"initializer 'c' \(graph\): its raw_data holds 10 bytes.*corrupt"):
        convert_model(_bad_inline_raw(work), ConversionOptions(min_elements=1))


def _unknown_type_model():
    model = matmul_model()
    model.graph.initializer.append(TensorProto(name="u", data_type=99, dims=[3], raw_data=b"\0" * 12))
    return model


def test_unknown_data_type_is_refused_and_inspect_shows_it(capsys, work):
    path = work / "new_type.onnx"
    onnx.save(_unknown_type_model(), str(path))
    expect_error(
        capsys,
        ["convert", path, work / "out.onnx"],
        contains=["initializer 'u' (graph)", "data type 99", f"onnx {onnx.__version__} does not know", "Upgrade onnx"],
        folders=[work],
    )
    before = snapshot(work)
    out = expect_ok(capsys, ["inspect", path]).out
    assert "unknown type 99" in out
    assert "convert will refuse this model: initializer 'u' (graph) has data type 99" in out
    info = json.loads(expect_ok(capsys, ["inspect", path, "--json"]).out)
    assert any("data type 99" in r for r in info["convert_refuses"])
    assert snapshot(work) == before


def test_unknown_data_type_in_memory():
    from olive_bf16_pass import convert_model

    with pytest.raises(ConversionError, match="data type 99"):
        convert_model(_unknown_type_model())


def _with_bad_utf8(model: onnx.ModelProto, placeholder: str) -> bytes:
    """The serialized model with ``placeholder`` (4 ASCII bytes) replaced by bytes that are not UTF-8."""
    data = model.SerializeToString()
    assert data.count(placeholder.encode()) >= 1
    return data.replace(placeholder.encode(), b"\xff\xfe" + placeholder.encode()[2:])


def _rename(where: str) -> tuple[onnx.ModelProto, str]:
    model = matmul_model()
    if where == "node":
        model.graph.node[0].name = "mmXX"
        return model, "mmXX"
    if where == "tensor":  # the initializer and the node input reading it
        model.graph.initializer[0].name = model.graph.node[0].input[1] = "WWXX"
        return model, "WWXX"
    model.graph.input[0].name = model.graph.node[0].input[0] = "xxXX"
    return model, "xxXX"


@pytest.mark.parametrize("where, field", [("node", "graph.node[0].name"), ("tensor", "graph.initializer[0].name"),
                                          ("input", "graph.input[0].name")])
def test_name_not_utf8_is_refused(capsys, work, where, field):
    path = work / "bad_name.onnx"
    path.write_bytes(_with_bad_utf8(*_rename(where)))
    for command in (["convert", path, work / "out.onnx"], ["inspect", path]):
        line = expect_error(
            capsys,
            command,
            contains=["a name in the model is not valid UTF-8", field, "the file is corrupt or not ONNX", "Re-export"],
            folders=[work],
        )
        assert "codec" not in line and "unexpected" not in line


def test_name_not_utf8_in_memory():
    from olive_bf16_pass import convert_model

    model = onnx.ModelProto()
    model.ParseFromString(_with_bad_utf8(*_rename("tensor")))
    with pytest.raises(ConversionError, match="not valid UTF-8"):
        convert_model(model)


def test_input_path_is_a_symlink_loop(capsys, work):
    (work / "a.onnx").symlink_to("b.onnx")
    (work / "b.onnx").symlink_to("a.onnx")
    for command in (["convert", work / "a.onnx", work / "out.onnx"], ["inspect", work / "a.onnx"]):
        expect_error(capsys, command, contains=["a.onnx", "a symbolic link loops", "Point the link"], folders=[work])


def test_external_data_location_is_a_symlink_loop(capsys, work):
    (work / "la.bin").symlink_to("lb.bin")
    (work / "lb.bin").symlink_to("la.bin")
    onnx.save(with_external_reference(matmul_model(), "W", "la.bin", length=16384), str(work / "m.onnx"))
    for command in (["convert", work / "m.onnx", work / "out.onnx"], ["inspect", work / "m.onnx"]):
        expect_error(
            capsys,
            command,
            contains=["tensor 'W'", "'la.bin'", "a symbolic link loops", "Replace the link"],
            folders=[work],
        )


def test_external_data_location_with_a_nul_byte(capsys, work):
    onnx.save(with_external_reference(matmul_model(), "W", "w\0.bin", length=16384), str(work / "m.onnx"))
    for command in (["convert", work / "m.onnx", work / "out.onnx"], ["inspect", work / "m.onnx"]):
        line = expect_error(
            capsys, command, contains=["tensor 'W'", "contains a NUL byte", "Re-export"], folders=[work]
        )
        assert "plain relative path" not in line


# --- filters that match nothing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, warning",
    [
        (["--exclude", "w"], "--exclude 'w' matches no tensor in the model, so it changes "
                             "nothing; did you mean 'W'?"),
        (["--op-block", "Matmul"], "--op-block 'Matmul' matches no op type in the model, so it "
                                   "changes nothing; did you mean 'MatMul'?"),
        (["--node-block", "zzz"], "--node-block 'zzz' matches no node in the model, so it "
                                  "changes nothing; check the spelling (names are case-sensitive)"),
    ],
    ids=["exclude", "op-block", "node-block"],
)
def test_a_filter_that_matches_nothing_warns(capsys, work, fp32, flags, warning):
    rc = main(["convert", str(fp32), str(work / "out.onnx"), "-q", *flags])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.splitlines() == [f"olive-bf16: warning: {warning}"]


def test_filters_that_match_warn_nothing(capsys, work, fp32):
    expect_ok(capsys, ["convert", fp32, work / "out.onnx", "-q", "--exclude", "W", "--op-block", "MatMul"])
    rc = main(["convert", str(fp32), str(work / "o2.onnx"), "-q", "--exclude", "b", "--node-block", "mm"])
    assert rc == 0 and capsys.readouterr().err == ""


# --- an input that already fails onnx.checker ---------------------------------------------------


def _fails_checker() -> onnx.ModelProto:
    """Runs nowhere useful but is a typical checker failure: strict shape inference rejects Add([1,64], [3])."""
    model = matmul_model()
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.ones(3, np.float32), "b"))
    return model


def test_input_failing_the_checker_converts_with_a_warning(capsys, work):
    src = work / "m.onnx"
    onnx.save(_fails_checker(), str(src))
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
        onnx.checker.check_model(onnx.load(str(src)), full_check=True)
    rc = main(["convert", str(src), str(work / "out.onnx"), "--report", str(work / "r.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith("olive-bf16: warning: the input model already fails onnx.checker (")
    assert "converted anyway" in line
    report = json.loads((work / "r.json").read_text())
    assert report["input_fails_checker"] and report["input_fails_checker"] in line
    assert len(report["converted"]) == 1
    assert "warning: the input already fails onnx.checker" in captured.out
    assert (work / "out.onnx").exists()


def test_input_failing_the_checker_in_memory():
    from olive_bf16_pass import convert_model

    _, report = convert_model(_fails_checker())
    assert report.input_fails_checker and "input already fails onnx.checker" in report.summary()
    _, clean = convert_model(matmul_model())
    assert clean.input_fails_checker is None and "onnx.checker" not in clean.summary()


def test_a_checker_failure_the_conversion_introduces_is_refused(capsys, work, fp32, monkeypatch):
    """Simulated: the checker rejects any model holding bfloat16, so the input passes and the output fails."""
    from olive_bf16_pass import checking

    real_check = checking.check

    def bf16_is_invalid(model):
        parsed = onnx.load_from_string(model) if isinstance(model, bytes) else model  # a small file comes as bytes
        if any(t.data_type == TensorProto.BFLOAT16 for t in parsed.graph.initializer):
            raise onnx.checker.ValidationError("simulated: bfloat16 initializer W_bf16 is invalid")
        real_check(model)

    monkeypatch.setattr(checking, "check", bf16_is_invalid)
    for external in ([], ["--external-data"]):
        expect_error(
            capsys,
            ["convert", fp32, work / "out.onnx", *external],
            contains=["the converted model fails onnx.checker, so it was not written", "simulated", "report it"],
            folders=[work],
        )
