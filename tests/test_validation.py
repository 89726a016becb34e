"""validation.py's quick tests against the walks that name the culprit: the same verdict on every shape."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from helpers import IR_VERSION, rand, tensor
from olive_bf16_pass import validation
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.traversal import scopes


def _graph(nodes, initializers=("W",), inputs=("x",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor(n, rand((4,))) for n in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


_SPLIT = helper.make_node("Split", ["x"], ["a", "", "b"], num_outputs=3)  # an empty name: an output not asked for
_CASES = {
    "one output each": ([helper.make_node("Add", ["x", "W"], ["y"])], None),
    "several, one empty": ([_SPLIT, helper.make_node("Add", ["a", "b"], ["y"])], None),
    "empty names twice": ([_SPLIT, helper.make_node("Split", ["x"], ["", "c"], num_outputs=2),
                           helper.make_node("Add", ["a", "c"], ["y"])], None),
    "no output": ([helper.make_node("Add", ["x", "W"], ["y"]), helper.make_node("Identity", ["x"], [])], None),
    "an output twice, among several": ([_SPLIT, helper.make_node("Add", ["a", "W"], ["b"])], "'b' twice"),
    "an output named as an initializer": ([helper.make_node("Relu", ["x"], ["W"])], "'W' twice"),
    "an output named as an input": ([helper.make_node("Relu", ["W"], ["x"])], "'x' twice"),
    "the same output twice in one node": ([helper.make_node("Split", ["x"], ["a", "a"], num_outputs=2)], "'a' twice"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_single_definitions(case):
    nodes, refused = _CASES[case]
    model = _graph(nodes)
    if refused is None:
        validation.check_single_definitions(scopes(model))
    else:
        with pytest.raises(ConversionError, match=refused):
            validation.check_single_definitions(scopes(model))


def test_two_initializers_with_no_name_are_two_definitions():
    model = _graph([helper.make_node("Identity", ["x"], ["y"])], initializers=("", ""))
    with pytest.raises(ConversionError, match="defines '' twice"):
        validation.check_single_definitions(scopes(model))
    validation.check_single_definitions(scopes(_graph([helper.make_node("Identity", ["x"], ["y"])], ("",))))


def test_a_hash_collision_only_sends_the_check_the_long_way(monkeypatch):
    """Every name hashing alike: the quick test cannot tell, so the names are compared, and they differ."""
    monkeypatch.setattr(validation, "hash", lambda name: 7 if name else 0, raising=False)
    validation.check_single_definitions(scopes(_graph([_SPLIT, helper.make_node("Add", ["a", "b"], ["y"])])))
    with pytest.raises(ConversionError, match="'b' twice"):
        validation.check_single_definitions(scopes(_graph([_SPLIT, helper.make_node("Add", ["a", "W"], ["b"])])))


def test_a_name_hashing_as_the_empty_one_sends_the_check_the_long_way(monkeypatch):
    monkeypatch.setattr(validation, "hash", lambda name: 0, raising=False)
    validation.check_single_definitions(scopes(_graph([_SPLIT, helper.make_node("Add", ["a", "b"], ["y"])])))
    with pytest.raises(ConversionError, match="'y' twice"):
        validation.check_single_definitions(scopes(_graph([helper.make_node("Relu", ["x"], ["y"]),
                                                           helper.make_node("Relu", ["W"], ["y"])])))
