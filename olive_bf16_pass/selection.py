"""Which tensors convert, and why the others do not.

Selection reads only the graph (names, dtypes, shapes, consumers), never tensor data, so it
runs on a skeleton whose weights are still on disk. Every FP32 candidate ends with a decision
and, when it stays FP32, a reason a person can act on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

from olive_bf16_pass.model_io import expected_nbytes, iter_graphs
from olive_bf16_pass.options import ConversionOptions

# Inputs whose value drives shapes or quantization math: FP32 is part of their meaning.
# (domain, op_type) -> input indices
FLOAT32_ONLY_INPUTS: dict[tuple[str, str], frozenset[int]] = {
    ("", "Resize"): frozenset({1, 2}),  # roi, scales
    ("", "Upsample"): frozenset({1}),  # scales
    ("", "QuantizeLinear"): frozenset({1}),  # y_scale
    ("", "DequantizeLinear"): frozenset({1}),  # x_scale
    ("", "QLinearMatMul"): frozenset({1, 4, 7}),
    ("", "QLinearConv"): frozenset({1, 4, 6}),
    ("com.microsoft", "QuantizeLinear"): frozenset({1}),
    ("com.microsoft", "DequantizeLinear"): frozenset({1}),
    ("com.microsoft", "MatMulNBits"): frozenset({2}),  # scales
}


@dataclass
class Consumer:
    graph_index: int  # position in list(iter_graphs(model.graph))
    node_index: int
    node: onnx.NodeProto
    input_index: int


@dataclass
class Candidate:
    """One FP32 tensor that could convert: an initializer or a Constant node's value."""

    name: str
    graph_index: int  # position in list(iter_graphs(model.graph))
    tensor: onnx.TensorProto
    kind: str  # "initializer" or "constant"
    constant_node_index: int | None = None
    consumers: list[Consumer] = field(default_factory=list)
    reason: str | None = None  # why it stays FP32; None means it converts

    @property
    def elements(self) -> int:
        return int(np.prod(self.tensor.dims, dtype=np.int64))


@dataclass
class Skipped:
    name: str
    reason: str
    nbytes: int


_REDUCIBLE = (onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16)


def _dtype_name(data_type: int) -> str:
    return onnx.TensorProto.DataType.Name(data_type).lower()


def consumers_by_name(model: onnx.ModelProto) -> dict[str, list[Consumer]]:
    """Every node input in the graph hierarchy, including subgraphs reading outer-scope names."""
    found: dict[str, list[Consumer]] = defaultdict(list)
    for graph_index, graph in enumerate(iter_graphs(model.graph)):
        for node_index, node in enumerate(graph.node):
            for index, name in enumerate(node.input):
                if name:
                    found[name].append(Consumer(graph_index, node_index, node, index))
    return found


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
    return None


def select(model: onnx.ModelProto, options: ConversionOptions) -> tuple[list[Candidate], list[Skipped]]:
    """Return the tensors that convert and those that stay as they are, with reasons."""
    consumers = consumers_by_name(model)
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for g in iter_graphs(model.graph) for o in g.output}
    chosen: list[Candidate] = []
    skipped: list[Skipped] = []

    for graph_index, graph in enumerate(iter_graphs(model.graph)):
        found = [Candidate(t.name, graph_index, t, "initializer") for t in graph.initializer]
        for node_index, node in enumerate(graph.node):
            value = _constant_value(node)
            if value is not None and node.output:
                found.append(Candidate(node.output[0], graph_index, value, "constant", node_index))
        for cand in found:
            cand.consumers = consumers.get(cand.name, [])
            is_input = graph_index == 0 and cand.kind == "initializer" and cand.name in graph_inputs
            cand.reason = _reason(cand, options, is_input, graph_outputs)
            if cand.reason is None:
                chosen.append(cand)
            elif cand.kind == "constant" and cand.tensor.data_type not in _REDUCIBLE:
                continue  # shape and index constants: not weights, not worth a line in the report
            else:
                skipped.append(Skipped(cand.name, cand.reason, expected_nbytes(cand.tensor) or 0))
    return chosen, skipped


def _reason(cand: Candidate, options: ConversionOptions, is_graph_input: bool, graph_outputs: set[str]) -> str | None:
    """Why ``cand`` stays as it is, or None when it converts."""
    t = cand.tensor
    if t.data_type != onnx.TensorProto.FLOAT:
        if t.data_type == onnx.TensorProto.BFLOAT16:
            return "already bfloat16"
        return f"dtype {_dtype_name(t.data_type)} (only float32 converts)"
    if cand.kind == "constant" and not options.convert_constants:
        return "Constant node value (convert_constants is off)"
    if options.include_initializers is not None and cand.name not in options.include_initializers:
        return "not in include_initializers"
    if cand.name in options.exclude_initializers:
        return "in exclude_initializers"
    if cand.elements < options.min_elements:
        return f"{cand.elements} elements, fewer than min_elements={options.min_elements}"
    if is_graph_input and not options.convert_graph_input_initializers:
        return "also a graph input, overridable at run time (convert_graph_input_initializers is off)"
    if cand.name in graph_outputs:
        return "a graph output: its value is returned as it is"
    if not cand.consumers:
        return "not used by any node"
    for use in cand.consumers:
        node = use.node
        if node.op_type in options.op_block_list:
            return f"input of {node.op_type} node {node.name!r} (op type in op_block_list)"
        if node.name and node.name in options.node_block_list:
            return f"input of node {node.name!r} (in node_block_list)"
        only_fp32 = FLOAT32_ONLY_INPUTS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        if only_fp32 and use.input_index in only_fp32:
            return f"input {use.input_index} of {node.op_type} node {node.name!r} needs float32 (scales, roi)"
    return None
