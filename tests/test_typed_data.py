"""The main graph's initializers asked for typed values in one protobuf call (typed_data.py), and the
reader that relies on it: a tensor with its values twice is refused wherever it sits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import IR_VERSION, if_subgraph_model, tensor
from onnx import TensorProto, helper

from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.io.source import read_model
from olive_bf16_pass.typed_data import main_initializers_are_untyped
from olive_bf16_pass.validation import TYPED_FIELDS

_VALUES = {"float_data": 1.5, "int32_data": 3, "int64_data": 3, "double_data": 1.5, "uint64_data": 3}


def _many_small(count: int = 300) -> onnx.ModelProto:
    """``count`` four-float initializers in raw_data feeding a chain of Adds, as onnx.save writes them."""
    inits, nodes, prev = [], [], "x0"
    for i in range(count):
        inits.append(tensor(f"b{i}", np.full(4, i % 7, np.float32)))
        nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def test_raw_data_only_is_untyped():
    assert main_initializers_are_untyped(_many_small().SerializeToString())


def test_no_initializers_at_all_is_untyped():
    model = _many_small(1)
    del model.graph.initializer[:]
    assert main_initializers_are_untyped(model.SerializeToString())


@pytest.mark.parametrize("name", TYPED_FIELDS)
@pytest.mark.parametrize("where", [0, 150, 299])
def test_one_typed_value_anywhere_in_the_main_graph_is_seen(name, where):
    model = _many_small()
    getattr(model.graph.initializer[where], name).append(_VALUES[name])
    assert not main_initializers_are_untyped(model.SerializeToString())


def test_unpacked_typed_values_are_seen():
    """Old exporters write repeated numbers unpacked (one tag each): protobuf reads both forms, so must this."""
    model = _many_small(3)
    data = model.SerializeToString()
    unpacked = onnx.TensorProto(name="u", data_type=TensorProto.INT64, dims=[1]).SerializeToString() + bytes(
        [7 << 3 | 0, 5])  # int64_data (7), a varint: unpacked
    graph = model.graph.SerializeToString() + bytes([5 << 3 | 2, len(unpacked)]) + unpacked
    model.ClearField("graph")
    data = model.SerializeToString() + bytes([7 << 3 | 2]) + _varint(len(graph)) + graph
    assert onnx.ModelProto.FromString(data).graph.initializer[-1].int64_data == [5]
    assert not main_initializers_are_untyped(data)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_bytes_that_do_not_parse_say_ask_each():
    assert not main_initializers_are_untyped(b"\x3a\xff\xff")


@pytest.mark.parametrize("where", [0, 299])
def test_values_twice_among_many_small_tensors_is_refused(tmp_path, where):
    """The reader's quick check rests on the one call: one tensor of 300 with raw_data and float_data is named."""
    model = _many_small()
    model.graph.initializer[where].float_data.extend([1.0] * 4)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ConversionError, match=rf"initializer 'b{where}' \(graph\): it holds its values twice "
                                              r"\(raw_data and float_data\)"):
        read_model(tmp_path / "m.onnx")


def test_values_twice_in_a_subgraph_is_refused_when_the_main_graph_is_clean(tmp_path):
    model = if_subgraph_model()
    branch = next(a.g for a in model.graph.node[-1].attribute if a.type == onnx.AttributeProto.GRAPH and
                  len(a.g.initializer))
    branch.initializer[0].float_data.extend([1.0] * int(np.prod(branch.initializer[0].dims)))
    data = model.SerializeToString()
    assert main_initializers_are_untyped(data)
    (tmp_path / "m.onnx").write_bytes(data)
    with pytest.raises(ConversionError, match="holds its values twice"):
        read_model(tmp_path / "m.onnx")


def test_a_typed_main_graph_still_reads(tmp_path):
    """int64_data shape tensors (onnx.helper.make_tensor's way) send the main graph the long way: read all the same."""
    model = _many_small(3)
    model.graph.initializer.append(helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4]))
    onnx.save(model, tmp_path / "m.onnx")
    assert not main_initializers_are_untyped((tmp_path / "m.onnx").read_bytes())
    source = read_model(tmp_path / "m.onnx")
    assert [t.name for t in source.model.graph.initializer][-1] == "shape"
