import numpy as np
import onnx
from onnx import TensorProto, helper

from helpers import embedding_mlp, make_model, rand, tensor
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.selection import KeepKind, select
from olive_bf16_pass.traversal import bind_uses, definitions, scopes


def _reasons(model, **options):
    selected = select(model, scopes(model), ConversionOptions(**options))
    return {c.name for c in selected.chosen}, {s.definition.name: s.reason for s in selected.kept}


def test_default_selects_large_float_tensors_only():
    chosen, skipped = _reasons(embedding_mlp(vocab=64, hidden=32))
    assert chosen == {"E", "W1", "W2"}
    assert "fewer than min_elements=1024" in skipped["b1"]
    assert set(skipped) == {"b1", "gamma", "beta"}


def test_min_elements_threshold_is_inclusive():
    chosen, _ = _reasons(embedding_mlp(hidden=32), min_elements=32)
    assert {"b1", "gamma", "beta"} <= chosen
    chosen, _ = _reasons(embedding_mlp(hidden=32), min_elements=33)
    assert "b1" not in chosen


def test_include_and_exclude_by_name():
    chosen, skipped = _reasons(embedding_mlp(), include_initializers=["W1", "W2"], exclude_initializers=["W2"])
    assert chosen == {"W1"}
    assert skipped["E"] == "not in include_initializers"
    assert skipped["W2"] == "in exclude_initializers"


def test_op_and_node_block_lists_keep_inputs_fp32():
    chosen, skipped = _reasons(embedding_mlp(), op_block_list=["Gather"], node_block_list=["fc2"])
    assert chosen == {"W1"}
    assert "op_block_list" in skipped["E"]
    assert "node_block_list" in skipped["W2"]


def test_a_tensor_shared_with_a_blocked_node_stays_fp32():
    # W1 feeds fc1 and fc1_shared; blocking one of them keeps W1 for both
    chosen, skipped = _reasons(embedding_mlp(), node_block_list=["fc1_shared"])
    assert "W1" not in chosen and "fc1_shared" in skipped["W1"]


def test_resize_scales_and_quantization_scales_stay_fp32():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], name="resize", mode="nearest"),
        helper.make_node("QuantizeLinear", ["r", "qscale"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "qscale"], ["y"], name="dequant"),
    ]
    model = make_model(
        nodes,
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        [tensor("scales", np.array([1, 1, 2, 2], np.float32)), tensor("qscale", np.array(0.1, np.float32))],
    )
    chosen, skipped = _reasons(model, min_elements=0)
    assert chosen == set()
    assert "needs float32" in skipped["scales"] and "needs float32" in skipped["qscale"]


def test_graph_input_initializers_and_graph_outputs_and_unused_tensors():
    model = embedding_mlp()
    model.graph.input.append(helper.make_tensor_value_info("W2", TensorProto.FLOAT, [32, 32]))
    model.graph.output.append(helper.make_tensor_value_info("W1", TensorProto.FLOAT, [32, 32]))
    model.graph.initializer.append(tensor("unused", rand((64, 64))))
    chosen, skipped = _reasons(model)
    assert "graph input" in skipped["W2"]
    assert "graph output" in skipped["W1"]
    assert skipped["unused"] == "not used by any node"
    chosen, _ = _reasons(model, convert_graph_input_initializers=True)
    assert "W2" in chosen


def test_non_float_and_already_reduced_tensors_are_reported():
    model = embedding_mlp()
    model.graph.initializer.append(tensor("ids_table", np.arange(2000, dtype=np.int64)))
    half = onnx.TensorProto()
    half.CopyFrom(tensor("half", rand((2000,)).astype(np.float16)))
    model.graph.initializer.append(half)
    _, skipped = _reasons(model)
    assert skipped["ids_table"] == "dtype int64 (only float32 converts)"
    assert skipped["half"] == "dtype float16 (only float32 converts)"


def test_constant_nodes_are_candidates_unless_turned_off():
    value = tensor("cv", rand((64, 64)))
    model = make_model(
        [helper.make_node("Constant", [], ["C"], value=value), helper.make_node("MatMul", ["x", "C"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
    )
    chosen, _ = _reasons(model)
    assert chosen == {"C"}
    chosen, skipped = _reasons(model, convert_constants=False)
    assert chosen == set() and "convert_constants is off" in skipped["C"]


def test_uses_are_bound_only_when_the_tensor_rules_leave_a_candidate(monkeypatch):
    """A model whose tensors all fail the tensor's own rules never walks its nodes' inputs and makes no
    Definition (100,000 tiny tensors cost a few numbers each); a candidate binds, and its uses decide."""
    from olive_bf16_pass import selection

    bound = []
    monkeypatch.setattr(selection, "bind_uses", lambda scopes, found: bound.append(found) or bind_uses(scopes, found))
    model = embedding_mlp(vocab=64, hidden=32)
    all_scopes = scopes(model)
    selected = select(model, all_scopes, ConversionOptions(min_elements=1 << 20))
    assert selected.chosen == [] and len(selected.kept) == 6 and bound == []
    assert {k.kind.key for k in selected.kept} == {"too_small"} and selected.kept.kinds() == {KeepKind.TOO_SMALL}
    selected = select(model, all_scopes, ConversionOptions(op_block_list=["Gather"]))
    (candidates,) = bound
    assert sorted(d.name for d in candidates) == ["E", "W1", "W2"]  # the three the tensor rules leave
    uses = {d.name: sorted(u.node.name for u in d.uses) for d in candidates}
    assert uses["W1"] == ["fc1", "fc1_shared"] and uses["E"] == ["embed"]
    assert {c.name for c in selected.chosen} == {"W1", "W2"}
    assert [k.definition.name for k in selected.kept] == ["E", "b1", "gamma", "beta"]  # model order, E among them


def test_a_constant_binds_from_its_node_on_not_before():
    """Uses are bound in node order: a read before a Constant defines a name binds to the enclosing scope."""
    inner = helper.make_graph(
        [helper.make_node("Add", ["x", "K"], ["early"]),
         helper.make_node("Constant", [], ["K"], value=tensor("K_value", rand((4,), 1))),
         helper.make_node("Add", ["early", "K"], ["y_then"])],
        "then", [], [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [4])])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor("K", rand((4,), 2))]))
    all_scopes = scopes(model)
    found = definitions(all_scopes)
    bind_uses(all_scopes, found)
    outer, constant = (d for d in found if d.name == "K")
    assert outer.node is None and constant.node is not None
    assert [u.node.output[0] for u in outer.uses] == ["early"]
    assert [u.node.output[0] for u in constant.uses] == ["y_then"]
