"""Which tensors convert, and why the others do not.

Selection reads only the graph (names, dtypes, shapes, the uses traversal.py bound by scope),
never tensor data, so it runs on a skeleton whose weights are still on disk. Every candidate
ends with a decision; one that stays as it is carries a ``KeepKind`` (what a report groups by)
and the detail a person can act on (the node, the count), never prose to be parsed back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.dtypes import type_nbytes
from olive_bf16_pass.kept import KeepKind, Kept, KeptTensors
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Definition, Scope, bind_uses, constant_definition

__all__ = ["FLOAT32_ONLY_INPUTS", "KeepKind", "Kept", "KeptTensors", "Selection", "select"]

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


_FLOAT, _BFLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16
_REDUCIBLE = (_FLOAT, _BFLOAT16, onnx.TensorProto.FLOAT16)


@dataclass
class Selection:
    """What ``select`` decided, and what its walk counted on the way."""

    chosen: list[Definition]
    kept: KeptTensors
    types: set[int] = field(default_factory=set)  # the data types of every initializer and Constant value
    initializer_counts: dict[int, int] = field(default_factory=dict)  # by data type
    initializer_bytes: dict[int, int] = field(default_factory=dict)  # by data type


def select(model: onnx.ModelProto, all_scopes: list[Scope], options: ConversionOptions) -> Selection:
    """Decide every initializer and Constant value of ``all_scopes`` (weights only are kept: a Constant of
    shapes or indices is left out).

    One walk applies the tensor's own rules, which decide most tensors; only those they leave become
    ``Definition``s, and the node inputs that read them are bound for them alone. A model of 100,000
    tensors that are all too small keeps 100,000 entries of a few numbers, and never walks its nodes' inputs.
    """
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for scope in all_scopes for o in scope.body.output if not isinstance(o, str)}
    graph_outputs.update(o for scope in all_scopes if scope.is_function for o in scope.body.output)
    kept = KeptTensors(all_scopes, options.min_elements)
    selection = Selection([], kept)
    candidates: list[tuple[Definition, int]] = []  # with their places in ``kept``
    counts, nbytes, types = selection.initializer_counts, selection.initializer_bytes, selection.types
    for number, scope in enumerate(all_scopes):
        inputs = graph_inputs if number == 0 else ()
        for place, tensor in enumerate(scope.initializers):
            data_type, size, name = tensor.data_type, math.prod(tensor.dims), tensor.name
            counts[data_type] = counts.get(data_type, 0) + 1
            nbytes[data_type] = nbytes.get(data_type, 0) + (type_nbytes(data_type, size) or 0)
            kind = _tensor_rule(data_type, name, size, False, name in inputs, options, graph_outputs)
            if kind is None:
                candidates.append((Definition(name, tensor, scope, size=size, index=place), kept.reserve()))
            else:
                kept.add_decided(kind, number, place, size, data_type)
        for index, node in enumerate(scope.body.node):
            defined = constant_definition(node)
            if defined is None:
                continue
            name, value = defined
            definition = Definition(name, value, scope, node, size=math.prod(value.dims), index=index)
            types.add(value.data_type)
            kind = _tensor_rule(value.data_type, name, definition.size, True, False, options, graph_outputs)
            if kind is None:
                candidates.append((definition, kept.reserve()))
            elif value.data_type in _REDUCIBLE:
                kept.add(definition, kind)
    types.update(counts)
    if candidates:
        bind_uses(all_scopes, [definition for definition, _ in candidates])
        for definition, slot in candidates:
            decision = _keep_by_uses(definition, options)
            if decision is None:
                selection.chosen.append(definition)
            kept.fill(slot, decision)
        kept.finish()
    return selection


def _tensor_rule(data_type: int, name: str, size: int, constant: bool, is_graph_input: bool,
                 options: ConversionOptions, graph_outputs: set[str]) -> KeepKind | None:
    """Why a tensor stays as it is, judged by the tensor alone; None when the nodes that read it decide."""
    if data_type != _FLOAT:
        return KeepKind.ALREADY_BF16 if data_type == _BFLOAT16 else KeepKind.OTHER_DTYPE
    if constant and not options.convert_constants:
        return KeepKind.CONSTANTS_OFF
    if options.include_initializers is not None and name not in options.include_initializers:
        return KeepKind.NOT_INCLUDED
    if name in options.exclude_initializers:
        return KeepKind.EXCLUDED
    if size < options.min_elements:
        return KeepKind.TOO_SMALL
    if is_graph_input and not options.convert_graph_input_initializers:
        return KeepKind.GRAPH_INPUT
    if name in graph_outputs:
        return KeepKind.GRAPH_OUTPUT
    return None


def _keep_by_uses(d: Definition, options: ConversionOptions) -> Kept | None:
    """Why ``d`` stays as it is, judged by the nodes that read it, or None when it converts."""
    if not d.uses:
        return Kept(d, KeepKind.UNUSED)
    for use in d.uses:
        node = use.node
        if node.op_type in options.op_block_list:
            return Kept(d, KeepKind.OP_BLOCKED, f"input of {node.op_type} node {node.name!r} (op type in op_block_list)")
        if options.op_include_list is not None and node.op_type not in options.op_include_list:
            return Kept(d, KeepKind.OP_NOT_INCLUDED,
                        f"input of {node.op_type} node {node.name!r} (op type not in op_include_list)")
        if node.name and node.name in options.node_block_list:
            return Kept(d, KeepKind.NODE_BLOCKED, f"input of node {node.name!r} (in node_block_list)")
        if options.node_include_list is not None and node.name not in options.node_include_list:
            return Kept(d, KeepKind.NODE_NOT_INCLUDED, f"input of node {node.name!r} (not in node_include_list)")
        only_fp32 = FLOAT32_ONLY_INPUTS.get((node.domain if node.domain not in DEFAULT_DOMAINS else "", node.op_type))
        if only_fp32 and use.input_index in only_fp32:
            return Kept(d, KeepKind.FLOAT32_INPUT,
                        f"input {use.input_index} of {node.op_type} node {node.name!r} needs float32 (scales, roi)")
    return None
