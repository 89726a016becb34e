"""io/serializer.py: long repeated fields serialized a batch at a time, to protobuf's own bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from _fuzz_models import random_models, save_input
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.convert import convert_file
from olive_bf16_pass.io import model_file, serializer
from olive_bf16_pass.options import ConversionOptions


def _chain(n: int) -> onnx.ModelProto:
    """n tiny initializers, each added in turn (n nodes, n value_infos), a function, and an unknown field."""
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"h{i - 1}", f"c{i}"], [f"h{i}"], name=f"add{i}")
             for i in range(n)]
    inits = [numpy_helper.from_array(np.full(4, i, np.float32), f"c{i}") for i in range(n)]
    infos = [helper.make_tensor_value_info(f"h{i}", TensorProto.FLOAT, [4]) for i in range(n - 1)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info(f"h{n - 1}", TensorProto.FLOAT, [4])], inits,
                              value_info=infos, doc_string="between node and initializer in field order")
    identity = helper.make_function("local", "Id", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])],
                                    [helper.make_opsetid("", 17)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[identity])
    unknown = onnx.ModelProto.FromString(model.SerializeToString() + b"\xf8\x06\x01")  # field 111, varint 1
    return unknown


def _bytes(pieces) -> list[bytes]:
    return list(model_file.expanded(pieces))


def test_a_model_with_a_long_field_is_written_in_batches_of_protobufs_own_bytes(monkeypatch):
    model = _chain(50)
    monkeypatch.setattr(serializer, "LONG_FIELD", 7)
    pieces, size = serializer.pieces(model, streamer=None, conversions={})
    assert sum(isinstance(p, serializer.Batches) for p in pieces) == 3  # node, initializer, value_info
    parts = _bytes(pieces)
    assert b"".join(parts) == model.SerializeToString() and size == len(model.SerializeToString())
    assert max(map(len, parts)) < len(model.SerializeToString()) // 4  # never the whole graph at once


def test_short_fields_serialize_in_one_call(monkeypatch):
    model = _chain(50)
    pieces, size = serializer.pieces(model, streamer=None, conversions={})  # LONG_FIELD: 4096
    assert pieces == [model.SerializeToString()] and size == len(pieces[0])


def test_batches_are_sized_without_being_kept():
    graph = _chain(20).graph
    batches = serializer.Batches(onnx.GraphProto, "node", graph.node)
    part = onnx.GraphProto()
    part.node.extend(graph.node)
    assert b"".join(batches) == part.SerializeToString() and batches.nbytes == len(part.SerializeToString())
    assert b"".join(batches) == b"".join(batches)  # made again each time it is written


def _converted(src: Path, folder: Path, options, external: bool) -> dict[str, bytes]:
    folder.mkdir()
    report = convert_file(src, folder / "out.onnx", options, save_as_external_data=external, size_threshold=64)
    return {Path(p).name: Path(p).read_bytes() for p in report.destination}


_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example, HealthCheck.filter_too_much]


@settings(max_examples=25, deadline=None, suppress_health_check=_SLOW,
          phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False)
@given(random_models(), st.booleans(), st.integers(1, 3))
def test_fuzz_models_give_the_same_bytes_in_batches(case, external, long_field):
    """Every repeated field batched (LONG_FIELD 1 to 3): the files of the whole-field path, byte for byte,
    streamed tensors, subgraphs and external data included."""
    model, options, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        src = tmp / "in" / "model.onnx"
        save_input(model, src, external, 64)
        whole = _converted(src, tmp / "whole", options, external)
        kept = serializer.LONG_FIELD
        serializer.LONG_FIELD = long_field
        try:
            batched = _converted(src, tmp / "batched", options, external)
        finally:
            serializer.LONG_FIELD = kept
        assert batched == whole


def test_a_no_op_across_batches_writes_the_input_bytes(tmp_path, monkeypatch):
    """Nothing converts (4 elements each): the output is the input's bytes, told across the batches."""
    monkeypatch.setattr(serializer, "LONG_FIELD", 16)
    onnx.save(_chain(300), tmp_path / "model.onnx")
    report = convert_file(tmp_path / "model.onnx", tmp_path / "out.onnx", ConversionOptions())
    assert report.converted == [] and report.input_fails_checker is None
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
