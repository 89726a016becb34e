"""KeptTensors: a plan's kept tensors held as numbers, read back as the records they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import embedding_mlp, make_model, rand, tensor
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.selection import KeepKind, select
from olive_bf16_pass.traversal import definitions, scopes


def _mixed():
    """Every way to be kept, in one graph: too small, another dtype, already BF16, a Constant, op-blocked."""
    nodes = [
        helper.make_node("Constant", [], ["k"], value=tensor("k_value", rand((4,), 5))),
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "k"], ["h2"]),
        helper.make_node("Add", ["h2", "b"], ["h3"]),
        helper.make_node("Gather", ["E", "ids"], ["g"], name="gather"),
        helper.make_node("Cast", ["I"], ["i32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["H"], ["h16"], to=TensorProto.FLOAT),
    ]
    inits = [tensor("W", rand((4, 4), 1)), tensor("b", rand((4,), 2)), tensor("E", rand((8, 4), 3)),
             tensor("I", np.arange(4, dtype=np.int64)), tensor("H", rand((4,), 4).astype(np.float16))]
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in
            (("h3", TensorProto.FLOAT, [1, 4]), ("g", TensorProto.FLOAT, [2, 4]), ("i32", TensorProto.INT32, [4]),
             ("h16", TensorProto.FLOAT, [4]))]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
           helper.make_tensor_value_info("ids", TensorProto.INT64, [2])]
    return make_model(nodes, ins, outs, inits)


def test_kept_tensors_read_back_in_model_order_with_their_reasons():
    model = _mixed()
    all_scopes = scopes(model)
    selected = select(model, all_scopes, ConversionOptions(min_elements=16, convert_constants=True,
                                                           op_block_list=["Gather"]))
    assert [d.name for d in selected.chosen] == ["W"]
    order = [d.name for d in definitions(all_scopes) if d.name != "W"]
    kept = selected.kept
    assert [k.definition.name for k in kept] == order == ["b", "E", "I", "H", "k"]
    assert [k.kind for k in kept] == [KeepKind.TOO_SMALL, KeepKind.OP_BLOCKED, KeepKind.OTHER_DTYPE,
                                      KeepKind.OTHER_DTYPE, KeepKind.TOO_SMALL]
    assert kept[2].group == "dtype int64 (only float32 converts)" and kept[0].reason.startswith("4 elements")
    assert kept[-1].definition.node is not None and kept[1].detail.startswith("input of Gather node 'gather'")
    assert [k.definition.name for k in kept[1:3]] == ["E", "I"] and len(kept) == 5
    with pytest.raises(IndexError):
        kept[5]
    assert kept.kinds() == {KeepKind.TOO_SMALL, KeepKind.OP_BLOCKED, KeepKind.OTHER_DTYPE}
    assert kept.types(KeepKind.OTHER_DTYPE) == {TensorProto.INT64, TensorProto.FLOAT16}
    groups = kept.groups()  # the held records (E, k) one entry each; group_kept merges them by reason
    assert (KeepKind.TOO_SMALL, "16", 1, 16) in groups and (KeepKind.OP_BLOCKED, "", 1, 128) in groups
    assert sum(count for *_, count, _ in groups) == len(kept) and sum(n for *_, n in groups) == 16 + 128 + 32 + 8 + 16


def test_a_kept_initializer_that_changed_is_a_bug_said_not_a_wrong_record():
    model = embedding_mlp()
    selected = select(model, scopes(model), ConversionOptions(min_elements=1 << 20))
    model.graph.initializer.insert(0, tensor("new", np.arange(3, dtype=np.int64)))  # every place moves by one
    with pytest.raises(ConversionError, match="is not the tensor the plan kept; this is a bug"):
        list(selected.kept)
