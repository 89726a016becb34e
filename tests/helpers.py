"""Model builders for the tests: tiny ONNX graphs made with onnx.helper, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # onnxruntime 1.31 loads IR <= 13; onnx 1.23 would stamp 14


def make_model(nodes, inputs, outputs, initializers=(), opset=17, value_info=(), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers), value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    return model


def rand(shape, seed=0, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def tensor(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def embedding_mlp(vocab=64, hidden=32, seed=0) -> onnx.ModelProto:
    """ids -> Gather(E) -> MatMul(W1) -> Add(b1) -> Relu -> MatMul(W2) -> LayerNorm -> y.

    W1 is shared by two MatMuls; E is a Gather table; b1 and the LayerNorm's scale are small.
    """
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "W1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "W1"], ["h3"], name="fc1_shared"),
        helper.make_node("MatMul", ["h3", "W2"], ["h4"], name="fc2"),
        helper.make_node("LayerNormalization", ["h4", "gamma", "beta"], ["y"], name="ln", axis=-1),
    ]
    inits = [
        tensor("E", rand((vocab, hidden), seed)),
        tensor("W1", rand((hidden, hidden), seed + 1, 0.2)),
        tensor("b1", rand((hidden,), seed + 2)),
        tensor("W2", rand((hidden, hidden), seed + 3, 0.2)),
        tensor("gamma", np.ones(hidden, np.float32)),
        tensor("beta", np.zeros(hidden, np.float32)),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
        value_info=[helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "seq", hidden])],
        doc_string="tiny embedding model",
        producer_name="tests",
    )


def if_subgraph_model(n=64) -> onnx.ModelProto:
    """An If whose branches read an outer initializer W and hold an initializer V of their own."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    then_out = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, n])
    else_out = helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, n])
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t_mm"]), helper.make_node("Add", ["t_mm", "V"], ["t_out"])],
        "then",
        [],
        [then_out],
        [tensor("V", rand((n,), 7))],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["C"], value=tensor("C_value", rand((n, n), 8, 0.1))),
            helper.make_node("MatMul", ["x", "C"], ["e_out"]),
        ],
        "else",
        [],
        [else_out],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ]
    return make_model(
        nodes,
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [tensor("W", rand((n, n), 9, 0.1)), tensor("zero", np.array(0.0, np.float32))],
    )


def run(model_or_path, feeds: dict) -> list[np.ndarray]:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    if external:  # onnx.save moves the data of the model it is given out to the file: give it a copy
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save(copy, path, save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, path)
    return path


def bf16_tolerance(reference: np.ndarray, rel: float = 0.02) -> float:
    """Absolute tolerance for outputs of a net whose weights were rounded to 8 mantissa bits."""
    return rel * max(1.0, float(np.abs(reference).max()))
