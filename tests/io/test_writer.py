"""The writer: outputs land whole, from one run, and only where asked."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from helpers import embedding_mlp, run, save
from olive_bf16_pass import ConversionError, ConversionOptions, convert_file
from olive_bf16_pass.io import destination, writer
from olive_bf16_pass.io.destination import Destination

IDS = np.array([[1, 5, 63, 0]], np.int64)


def test_two_runs_into_one_output_never_mix_model_and_data(tmp_path, monkeypatch):
    """Run A renames its data, stalls; run B renames its data and model; A's model lands last.
    Without one writer at a time renaming, A's model would read B's data at A's offsets."""
    sources = []
    for seed in (0, 1):
        folder = tmp_path / f"src{seed}"
        folder.mkdir()
        sources.append(save(embedding_mlp(vocab=512, hidden=64, seed=seed * 10), folder / "m.onnx"))
    dst = tmp_path / "out.onnx"
    real_replace = os.replace
    b_may_start = threading.Event()

    def replace(src, final):
        real_replace(src, final)
        if str(final).endswith(".data") and threading.current_thread().name == "A":
            b_may_start.set()  # B now tries to rename while A is between its two renames
            time.sleep(0.5)

    monkeypatch.setattr(writer.os, "replace", replace)
    errors = []

    def convert(source, name):
        if name == "B":
            b_may_start.wait(30)
        try:
            convert_file(source, dst, ConversionOptions(min_elements=16), save_as_external_data=True)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=convert, args=(s, n), name=n) for s, n in zip(sources, "AB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    got = run(dst, {"ids": IDS})[0]
    matches = [np.allclose(got, run(s, {"ids": IDS})[0], rtol=0.05, atol=0.05) for s in sources]
    assert sum(matches) == 1, "the model in OUT reads data written by another run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data", "src0", "src1"]


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, monkeypatch):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    dst = tmp_path / "out.onnx"
    lock = tmp_path / ".out.onnx.lock"
    lock.write_text("12345\n")
    old = time.time() - 60
    os.utime(lock, (old, old))
    convert_file(src, dst)
    assert dst.is_file() and not lock.exists()


def test_a_live_lock_is_waited_for_then_named(tmp_path, monkeypatch):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    dst = tmp_path / "out.onnx"
    lock = tmp_path / ".out.onnx.lock"
    monkeypatch.setattr(destination, "_LOCK_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(destination, "_LOCK_STALE_SECONDS", 3600)
    lock.write_text("12345\n")
    with pytest.raises(ConversionError, match=r"another conversion into the same output holds \.out\.onnx\.lock"):
        convert_file(src, dst)
    assert not dst.exists() and Destination(dst).temporaries() == [] and lock.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are made with os.mkfifo (POSIX)")
def test_an_output_that_is_a_pipe_is_refused_and_left_alone(tmp_path):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ConversionError, match="not a regular file"):
        convert_file(src, fifo)
    assert not fifo.is_file() and fifo.exists()
    onnx.load(src)  # the input is intact


def test_a_data_file_that_is_a_folder_is_refused(tmp_path):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    (tmp_path / "out.onnx.data").mkdir()
    with pytest.raises(ConversionError, match="out.onnx.data: exists and is not a regular file"):
        convert_file(src, tmp_path / "out.onnx", save_as_external_data=True)
    assert not (tmp_path / "out.onnx").exists() and Destination(tmp_path / "out.onnx").temporaries() == []


@pytest.mark.parametrize("convert_attribute", [False, True])
def test_convert_attribute_puts_constant_values_in_the_data_file(tmp_path, convert_attribute):
    """Olive's convert_attribute: large Constant values go to the external data file too, or stay in the .onnx."""
    from helpers import if_subgraph_model, rand

    src = save(if_subgraph_model(256), tmp_path / "m.onnx")  # its else branch holds a 256x256 Constant
    dst = tmp_path / "out" / "m.onnx"
    dst.parent.mkdir()
    convert_file(src, dst, ConversionOptions(min_elements=16), save_as_external_data=True,
                 convert_attribute=convert_attribute)
    model = onnx.load(dst, load_external_data=False)
    from olive_bf16_pass.traversal import constant_value, scopes

    values = [constant_value(n) for scope in scopes(model) for n in scope.body.node if constant_value(n) is not None]
    (value,) = [t for t in values if list(t.dims) == [256, 256]]
    assert (value.data_location == onnx.TensorProto.EXTERNAL) is convert_attribute
    onnx.checker.check_model(str(dst), full_check=True)
    x = rand((1, 256), 2)
    for sign in (1, -1):  # both branches
        got, ref = run(dst, {"x": sign * np.abs(x)})[0], run(src, {"x": sign * np.abs(x)})[0]
        assert np.allclose(got, ref, atol=0.05 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("failing", ["data", "model"])
def test_a_failed_replace_keeps_the_previous_model_and_its_data(tmp_path, monkeypatch, failing):
    """OUT and OUT.data from a previous run survive a replace that fails half-way (on Windows, a data file
    an ONNX Runtime session maps): never a missing model, never the old model reading new data."""
    import hashlib

    from olive_bf16_pass.io import destination

    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    dst = tmp_path / "out.onnx"
    convert_file(src, dst, ConversionOptions(min_elements=1), save_as_external_data=True)
    old = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (dst, tmp_path / "out.onnx.data")}
    real = os.replace

    def replace(a, b):
        if Path(a).name.endswith(".tmp") and Path(b).name == ("out.onnx.data" if failing == "data" else "out.onnx"):
            raise PermissionError(13, "Permission denied")
        real(a, b)

    monkeypatch.setattr(writer.os, "replace", replace)
    monkeypatch.setattr(destination, "_WINDOWS", False)
    src2 = save(embedding_mlp(vocab=512, hidden=64, seed=7), tmp_path / "m2.onnx")
    with pytest.raises(ConversionError, match="check the permissions.*previous output.*kept"):
        convert_file(src2, dst, ConversionOptions(min_elements=1), save_as_external_data=True)
    monkeypatch.setattr(writer.os, "replace", real)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (dst, tmp_path / "out.onnx.data")} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m2.onnx", "out.onnx", "out.onnx.data"]
    run(dst, {"ids": IDS})  # the previous model still loads and runs


def _many_small(seed: int = 0) -> onnx.ModelProto:
    """Small FP32 weights of many sizes (specials included), some converted, some too small, some not float."""
    rng = np.random.default_rng(seed)
    inits, nodes, prev = [], [], "x"
    for i, n in enumerate([256, 300, 1000, 5000, 16384, 16385, 40000, 8, 513]):
        values = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        values[:3] = [np.nan, np.inf, 3.4e38]
        inits.append(onnx.numpy_helper.from_array(values, f"w{i}"))
        nodes.append(onnx.helper.make_node("ReduceSum", [f"w{i}"], [f"s{i}"], keepdims=0))
        nodes.append(onnx.helper.make_node("Add", [prev, f"s{i}"], [f"a{i}"]))
        prev = f"a{i}"
    inits.append(onnx.numpy_helper.from_array(np.arange(600, dtype=np.int64), "ints"))
    nodes.append(onnx.helper.make_node("Identity", ["ints"], ["ints_out"]))
    graph = onnx.helper.make_graph(
        nodes, "many_small", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [])],
        [onnx.helper.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, []),
         onnx.helper.make_tensor_value_info("ints_out", onnx.TensorProto.INT64, [600])], inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])


@pytest.mark.parametrize("storage", ["bfloat16", "float32"])
@pytest.mark.parametrize("external_in", [False, True], ids=["single-in", "external-in"])
@pytest.mark.parametrize("external_out", [False, True], ids=["single-out", "external-out"])
def test_small_tensors_read_in_batches_give_the_bytes_and_figures_of_the_chunked_path(
    tmp_path, monkeypatch, storage, external_in, external_out
):
    """Tensors up to SMALL_BYTES are read and rounded in the writer's thread, many at once: the files and
    every rounding figure must be those of the worker path, which takes each tensor alone."""
    from olive_bf16_pass.io import streamer

    src = save(_many_small(), tmp_path / "in.onnx", external=external_in)
    options = ConversionOptions(min_elements=16, storage=storage)
    outputs = {}
    for label, small in (("workers", 0), ("batched", 1 << 30)):
        monkeypatch.setattr(streamer, "SMALL_BYTES", small)
        folder = tmp_path / label
        folder.mkdir()
        report = convert_file(src, folder / "out.onnx", options, save_as_external_data=external_out)
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
        figures = [(r.name, r.max_abs_error, r.max_rel_error, r.nan_count, r.inf_count, r.saturated_count)
                   for r in report.converted]
        outputs[label] = (files, figures)
    assert outputs["workers"] == outputs["batched"]
    files, figures = outputs["batched"]
    assert len(figures) == 8 and all(f[3] == 1 and f[4] == 1 for f in figures)  # NaN and Inf counted in each
    model = onnx.load(str(tmp_path / "batched" / "out.onnx"))
    types = sorted(t.data_type for t in model.graph.initializer if t.name.startswith("w"))
    assert types.count(onnx.TensorProto.BFLOAT16) == (8 if storage == "bfloat16" else 0)


def test_the_no_op_comparison_reads_every_byte_and_every_place(tmp_path):
    """model_file.Comparison: pieces give the source's bytes only when each lands where the source has it."""
    from olive_bf16_pass.io.model_file import Comparison

    data = bytes(range(256)) * 12_000  # 3 MB: pieces span the 1 MiB reads
    source = tmp_path / "m.onnx"
    source.write_bytes(data)
    tensor = object()

    class Streamer:
        def __init__(self, at):
            self.at = at

        def locate(self, _):
            return source, self.at, 1000

    def holds(pieces, at=1_500_000):
        with open(source, "rb") as f:
            same = Comparison(source, f, Streamer(at))
            for piece in pieces:
                same.add(piece)
            return same.holds

    whole = [data[:1_500_000], (tensor, None, 1000), data[1_501_000:]]
    assert holds(whole)
    changed = bytearray(data)
    changed[2_600_000] ^= 1  # in the last piece, past two reads
    assert not holds([data[:1_500_000], (tensor, None, 1000), bytes(changed[1_501_000:])])
    assert not holds(whole, at=1_499_999)  # the tensor's bytes from elsewhere in the file
    assert not holds([data[:1_500_000], (tensor, "a conversion", 1000), data[1_501_000:]])
    assert not Comparison(None, None, Streamer(0)).holds  # nothing to compare with: not the same
