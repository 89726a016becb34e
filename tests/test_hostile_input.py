"""The classes of hostile input that once let a broken model exit 0 (issue 21), each through the command.

Every refusal is one line, exit 1, the input byte-identical and nothing left beside the output
(``expect_error``); every success is an output that passes onnx.checker, that ONNX Runtime loads
and runs like the input within BF16 tolerance, and that holds no reference into the input's files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import (
    every_tensor_message,
    expect_error,
    expect_ok,
    matmul_model,
    run_session,
    save_with_external_data,
    sha256,
    snapshot,
)
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.protowire import len_field, varint

X = {"x": np.ones((1, 64), np.float32)}


def _converts_like_the_input(capsys, src: Path, dst: Path, *flags, reference: Path | None = None) -> str:
    """Convert; the output must be checked, self-contained and give the input's outputs (BF16 tolerance),
    or ``reference``'s where ONNX Runtime refuses the input itself."""
    before = sha256(src)
    err = expect_ok(capsys, ["convert", src, dst, "-q", *flags]).err
    assert sha256(src) == before
    onnx.checker.check_model(str(dst), full_check=True)
    written = onnx.load(str(dst), load_external_data=False)
    for tensor in every_tensor_message(written):
        for entry in tensor.external_data:
            if entry.key == "location":
                assert (dst.parent / entry.value).is_file() and entry.value != src.name, entry.value
    np.testing.assert_allclose(run_session(dst, X)[0], run_session(reference or src, X)[0], rtol=0.02, atol=0.05)
    return err


# --- 1. the reader and the walk agree on where tensors live ----------------------------------------


@pytest.mark.parametrize("field", ["t", "tensors", "g"])
def test_a_tensor_in_a_field_its_attribute_type_does_not_use_is_dropped_and_said(capsys, tmp_path, field):
    """Gemm's alpha is FLOAT: a big tensor (or graph) stuffed beside it is never read by ONNX; the scanner
    lifts it out of memory, so it must not be written back as a reference into the input file."""
    model = matmul_model()
    stray = numpy_helper.from_array(np.full((64, 64), 3.0, np.float32), "stray")
    node = model.graph.node[0]
    node.op_type = "Gemm"  # y = x @ W (alpha 1.0) + b
    node.input.append("b")
    del model.graph.node[1:]
    model.graph.output[0].name = node.output[0]
    clean = tmp_path / "clean.onnx"  # ONNX Runtime refuses the input ("type field and data field mismatch")
    onnx.save(model, str(clean))
    alpha = helper.make_attribute("alpha", 1.0)
    if field == "t":
        alpha.t.CopyFrom(stray)
    elif field == "tensors":
        alpha.tensors.append(stray)
    else:
        alpha.g.CopyFrom(helper.make_graph([], "stray", [], [], [stray]))
    node.attribute.append(alpha)
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    err = _converts_like_the_input(capsys, src, tmp_path / "out.onnx", "--min-elements", "16", reference=clean)
    assert f"'alpha' of Gemm node 'mm' is FLOAT but also holds a {field} field, which ONNX never reads" in err
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert not any(t.name == "stray" for t in every_tensor_message(written))


def test_a_sparse_constant_with_external_data_is_refused(capsys, tmp_path):
    """Sparse tensors are carried as they are; one whose data is in a file would point at a file not beside OUT."""
    model = matmul_model()
    values = numpy_helper.from_array(np.ones(300, np.float32), "sv")
    indices = numpy_helper.from_array(np.arange(300, dtype=np.int64), "si")
    sparse = helper.make_sparse_tensor(values, indices, [64 * 64])
    model.graph.node.insert(0, helper.make_node("Constant", [], ["dense"], sparse_value=sparse))
    folder = tmp_path / "in"
    folder.mkdir()
    src = folder / "m.onnx"
    stored = model.graph.node[0].attribute[0].sparse_tensor.values  # onnx.save leaves sparse tensors inline
    (folder / "w.bin").write_bytes(stored.raw_data)
    stored.ClearField("raw_data")
    stored.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(300 * 4))):
        stored.external_data.add(key=key, value=value)
    onnx.save(model, str(src))
    expect_error(capsys, ["convert", src, tmp_path / "out.onnx"], folders=[folder, tmp_path],
                 contains=["sparse tensor 'sv'", "external data file", "Densify it"])


def test_an_inline_sparse_constant_is_carried_as_it_is(capsys, tmp_path):
    model = matmul_model()
    values = numpy_helper.from_array(np.zeros(3, np.float32), "sv")
    indices = numpy_helper.from_array(np.array([0, 5, 9], np.int64), "si")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["zero"], sparse_value=helper.make_sparse_tensor(
        values, indices, [64])))
    model.graph.node[-1].input[1] = "zero_plus_b"
    model.graph.node.insert(1, helper.make_node("Add", ["zero", "b"], ["zero_plus_b"]))
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    _converts_like_the_input(capsys, src, tmp_path / "out.onnx")


def test_training_info_is_dropped_and_said(capsys, tmp_path):
    model = matmul_model()
    model.training_info.add().initialization.CopyFrom(helper.make_graph(
        [], "init", [], [], [numpy_helper.from_array(np.ones((64, 64), np.float32), "T")]))
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    err = _converts_like_the_input(capsys, src, tmp_path / "out.onnx")
    assert "training_info" in err and not onnx.load(str(tmp_path / "out.onnx")).training_info


# --- 2. the output is judged on its own ----------------------------------------------------------


@pytest.mark.parametrize("how", ["two initializers", "initializer and Constant", "two node outputs"])
def test_a_name_defined_twice_is_named_as_the_inputs_problem(capsys, tmp_path, how):
    model = matmul_model()
    if how == "two initializers":
        model.graph.initializer.append(model.graph.initializer[0])
    elif how == "initializer and Constant":
        model.graph.node.insert(0, helper.make_node("Constant", [], ["W"], value=model.graph.initializer[0]))
    else:
        model.graph.node.append(helper.make_node("Identity", ["x"], ["h"]))
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    name = "h" if how == "two node outputs" else "W"
    expect_error(capsys, ["convert", src, tmp_path / "out.onnx"], folders=[tmp_path],
                 contains=[f"the input model defines {name!r} twice in graph", "Rename or remove one"])


def test_a_new_checker_fault_is_refused_even_when_the_input_has_one(monkeypatch, tmp_path):
    """An input that fails the checker excuses only that fault: a different one in the output is refused."""
    from olive_bf16_pass import checking, convert

    model = matmul_model()
    calls = []

    def check(result):
        calls.append(result)
        raise onnx.checker.ValidationError("output fault" if len(calls) == 1 else "input fault")

    monkeypatch.setattr(checking, "check", check)
    with pytest.raises(convert.ConversionError, match="a fault the input does not have.*output fault.*input fault"):
        convert.convert_model(model)
    calls.clear()
    monkeypatch.setattr(checking, "check", lambda result: (_ for _ in ()).throw(onnx.checker.ValidationError("same")))
    assert convert.convert_model(model)[1].input_fails_checker == "same"  # the same fault: kept, and said


# --- 3. depth ------------------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    """A model whose If nests ``depth`` levels deep, written as protobuf bytes (protobuf cannot build it)."""
    def field(number, data):
        return len_field(number, len(data)) + data

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]).SerializeToString()
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]).SerializeToString()
    graph = leaf
    for level in range(depth):
        then = field(1, b"then_branch") + field(6, graph) + varint(20 << 3) + varint(5)
        other = field(1, b"else_branch") + field(6, leaf) + varint(20 << 3) + varint(5)
        node = field(1, b"c") + field(2, b"y") + field(4, b"If") + field(5, then) + field(5, other)
        graph = field(1, node) + field(2, b"g%d" % level) + field(12, y)
    inputs = b"".join(field(11, helper.make_tensor_value_info(n, t, s).SerializeToString())
                      for n, t, s in (("c", TensorProto.BOOL, []), ("x", TensorProto.FLOAT, [1])))
    head = helper.make_model(helper.make_graph([], "m", [], []), opset_imports=[helper.make_opsetid("", 17)])
    head.ClearField("graph")
    return head.SerializeToString() + field(7, graph + inputs)


@pytest.mark.parametrize("depth", [40, 400, 4000])
def test_a_model_too_deep_for_protobuf_is_told_apart_from_a_truncated_file(capsys, tmp_path, depth):
    src = tmp_path / "deep.onnx"
    src.write_bytes(_nested(depth))
    expect_error(capsys, ["convert", src, tmp_path / "out.onnx"], folders=[tmp_path],
                 contains=[f"nests its subgraphs {3 + 3 * depth} messages deep", "reads at most 100", "Flatten"])


def test_a_nested_model_protobuf_reads_converts(capsys, tmp_path):
    src = tmp_path / "deep.onnx"
    src.write_bytes(_nested(25))
    expect_ok(capsys, ["convert", src, tmp_path / "out.onnx", "-q"])
    onnx.checker.check_model(str(tmp_path / "out.onnx"))


# --- 6. memory is bounded for every encoding: float_data is streamed like raw_data -------------------


def test_float_data_weights_are_lifted_and_streamed_like_raw_data(tmp_path):
    """A weight in float_data (onnx.helper.make_tensor's default) stays on disk in the skeleton."""
    from olive_bf16_pass.io.source import read_model

    model = matmul_model()
    w = numpy_helper.to_array(model.graph.initializer[0])
    model.graph.initializer[0].CopyFrom(helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel().tolist()))
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    assert onnx.load(str(src)).graph.initializer[0].float_data  # the file really holds float_data
    skeleton = read_model(src).model.graph.initializer[0]
    assert skeleton.data_location == TensorProto.EXTERNAL and not skeleton.float_data
    out = tmp_path / "out.onnx"
    from olive_bf16_pass import convert_file

    convert_file(src, out)
    np.testing.assert_allclose(run_session(out, X)[0], run_session(src, X)[0], rtol=0.02, atol=0.05)


def test_values_in_two_fields_are_refused(capsys, tmp_path):
    model = matmul_model()
    model.graph.initializer[0].float_data.extend([1.0] * 64 * 64)  # raw_data and float_data at once
    src = tmp_path / "m.onnx"
    src.write_bytes(model.SerializeToString())
    expect_error(capsys, ["convert", src, tmp_path / "out.onnx"], folders=[tmp_path],
                 contains=["holds its values twice (raw_data and float_data)", "one field"])


# --- 7. paths and messages -------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="Windows file names are UTF-16: no file name is not text there")
def test_a_file_name_that_is_not_utf8_converts(capsys, tmp_path):
    src = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff.onnx"))
    plain = tmp_path / "plain.onnx"  # ONNX Runtime's Python API takes text paths only: the reference
    onnx.save(matmul_model(), str(plain))
    src.write_bytes(plain.read_bytes())
    _converts_like_the_input(capsys, src, tmp_path / "out.onnx", reference=plain)


@pytest.mark.parametrize("kind", ["a folder", "a FIFO (named pipe)"])
def test_an_external_location_that_is_not_a_file_is_named_for_what_it_is(capsys, tmp_path, kind):
    if kind.startswith("a FIFO") and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    save_with_external_data(matmul_model(), folder / "m.onnx", location="w.bin")
    (folder / "w.bin").unlink()
    (folder / "w.bin").mkdir() if kind == "a folder" else os.mkfifo(folder / "w.bin")
    before = sha256(folder / "m.onnx")  # (a snapshot of the folder would block reading the FIFO)
    expect_error(capsys, ["convert", folder / "m.onnx", out / "out.onnx"], folders=[out],
                 contains=[f"is {kind}, not a data file"])
    assert sha256(folder / "m.onnx") == before


@pytest.mark.parametrize("report", ["folder", "device"])
def test_a_report_path_that_cannot_be_a_file_is_refused_before_any_work(capsys, tmp_path, report):
    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(), str(src))
    path = tmp_path if report == "folder" else Path(os.devnull)
    before = snapshot(tmp_path)
    expect_error(capsys, ["convert", src, tmp_path / "out.onnx", "--report", path], folders=[tmp_path],
                 contains=["the report path is a", "nothing was converted"])
    assert snapshot(tmp_path) == before


def test_an_output_folder_without_write_permission_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    """(The command asks by making a file there; root, as here and in CI, may write anywhere, so the probe is
    made to fail as it would for a user who may not.)"""
    import tempfile

    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(), str(src))
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    expect_error(capsys, ["convert", src, locked / "out.onnx"], folders=[tmp_path],
                 contains=["cannot write in", "Permission denied", "nothing was converted"])
