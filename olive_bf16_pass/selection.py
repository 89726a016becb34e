"""Which tensors convert, and why the others do not.

Selection reads only the graph (names, dtypes, shapes, the uses traversal.py bound by scope),
never tensor data, so it runs on a skeleton whose weights are still on disk. Every FP32
candidate ends with a decision and, when it stays FP32, a reason a person can act on.
"""

from __future__ import annotations

import onnx

from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.report import SkippedRecord
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Definition, Scope, data_type_name, expected_nbytes

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


_REDUCIBLE = (onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16)


def select(
    model: onnx.ModelProto, all_scopes: list[Scope], found: list[Definition], options: ConversionOptions
) -> tuple[list[Definition], list[SkippedRecord]]:
    """Return the definitions that convert and those that stay as they are, with reasons."""
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for scope in all_scopes for o in scope.body.output if not isinstance(o, str)}
    graph_outputs.update(o for scope in all_scopes if scope.is_function for o in scope.body.output)
    chosen: list[Definition] = []
    skipped: list[SkippedRecord] = []
    main = all_scopes[0]
    for definition in found:
        is_input = definition.scope is main and definition.node is None and definition.name in graph_inputs
        reason = _reason(definition, options, is_input, graph_outputs)
        if reason is None:
            chosen.append(definition)
        elif definition.node is not None and definition.tensor.data_type not in _REDUCIBLE:
            continue  # shape and index constants: not weights, not worth a line in the report
        else:
            nbytes = expected_nbytes(definition.tensor, definition.size) or 0
            skipped.append(SkippedRecord(definition.name, reason, nbytes, definition.scope.label))
    return chosen, skipped


def _reason(d: Definition, options: ConversionOptions, is_graph_input: bool, graph_outputs: set[str]) -> str | None:
    """Why ``d`` stays as it is, or None when it converts."""
    t = d.tensor
    if t.data_type != onnx.TensorProto.FLOAT:
        if t.data_type == onnx.TensorProto.BFLOAT16:
            return "already bfloat16"
        return f"dtype {data_type_name(t.data_type)} (only float32 converts)"
    if d.kind == "constant" and not options.convert_constants:
        return "Constant node value (convert_constants is off)"
    if options.include_initializers is not None and d.name not in options.include_initializers:
        return "not in include_initializers"
    if d.name in options.exclude_initializers:
        return "in exclude_initializers"
    count = d.size
    if count < options.min_elements:
        return f"{count} elements, fewer than min_elements={options.min_elements}"
    if is_graph_input and not options.convert_graph_input_initializers:
        return "also a graph input, overridable at run time (convert_graph_input_initializers is off)"
    if d.name in graph_outputs:
        return "a graph output: its value is returned as it is"
    if not d.uses:
        return "not used by any node"
    for use in d.uses:
        node = use.node
        if node.op_type in options.op_block_list:
            return f"input of {node.op_type} node {node.name!r} (op type in op_block_list)"
        if node.name and node.name in options.node_block_list:
            return f"input of node {node.name!r} (in node_block_list)"
        only_fp32 = FLOAT32_ONLY_INPUTS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        if only_fp32 and use.input_index in only_fp32:
            return f"input {use.input_index} of {node.op_type} node {node.name!r} needs float32 (scales, roi)"
    return None

