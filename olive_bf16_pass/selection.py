"""Which tensors convert, and why the others do not.

Selection reads only the graph (names, dtypes, shapes, the uses traversal.py bound by scope),
never tensor data, so it runs on a skeleton whose weights are still on disk. Every candidate
ends with a decision; one that stays as it is carries a ``KeepKind`` (what a report groups by)
and the detail a person can act on (the node, the count), never prose to be parsed back.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Definition, Scope, bind_uses, data_type_name

__all__ = ["FLOAT32_ONLY_INPUTS", "KeepKind", "Kept", "select"]

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


class KeepKind(enum.Enum):
    """Why a tensor stays as it is. The value is the stable name in the JSON report; ``group`` is the
    summary line's words for it ({} takes the kind's group detail: a dtype, a threshold)."""

    ALREADY_BF16 = ("already_bfloat16", "already bfloat16")
    OTHER_DTYPE = ("dtype", "dtype {} (only float32 converts)")
    CONSTANTS_OFF = ("constants_off", "Constant node value (convert_constants is off)")
    NOT_INCLUDED = ("not_in_include_initializers", "not in include_initializers")
    EXCLUDED = ("in_exclude_initializers", "in exclude_initializers")
    TOO_SMALL = ("too_small", "fewer than min_elements={}")
    GRAPH_INPUT = (
        "graph_input", "also a graph input, overridable at run time (convert_graph_input_initializers is off)"
    )
    GRAPH_OUTPUT = ("graph_output", "a graph output: its value is returned as it is")
    UNUSED = ("unused", "not used by any node")
    OP_BLOCKED = ("op_block_list", "input of an op_block_list node")
    OP_NOT_INCLUDED = ("not_in_op_include_list", "input of a node whose op type is not in op_include_list")
    NODE_BLOCKED = ("node_block_list", "input of a node_block_list node")
    NODE_NOT_INCLUDED = ("not_in_node_include_list", "input of a node not in node_include_list")
    FLOAT32_INPUT = ("float32_input", "an input that must stay float32 (scales, roi)")

    def __init__(self, key: str, group: str):
        self.key, self.group = key, group


_REDUCIBLE = (onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16)


@dataclass(eq=False, slots=True)  # not frozen: a frozen dataclass costs twice as much to make, 100,000 times
class Kept:
    """A tensor that stays as it is: why (``kind``), and the detail that varies (node, count, dtype)."""

    definition: Definition
    kind: KeepKind
    detail: str = ""  # the words this tensor adds to its kind's: the reading node (a count is worded by reason)
    group_detail: str = ""  # what fills the kind's {} in the summary: a dtype, the min_elements threshold

    @property
    def reason(self) -> str:
        """The per-tensor sentence of the JSON report (stable wording)."""
        if self.kind is KeepKind.TOO_SMALL:  # worded when asked: a model may keep 100,000 tiny tensors
            return f"{self.definition.size} elements, fewer than min_elements={self.group_detail}"
        return self.detail or self.group

    @property
    def group(self) -> str:
        return self.kind.group.format(self.group_detail)


def select(
    model: onnx.ModelProto, all_scopes: list[Scope], found: list[Definition], options: ConversionOptions
) -> tuple[list[Definition], list[Kept]]:
    """The definitions that convert, and those kept (weights only: shape and index constants are left out).

    The tensor's own rules first; the node inputs that read it are bound only for the tensors those
    rules leave, so a model whose tensors are all too small never walks its nodes' inputs."""
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for scope in all_scopes for o in scope.body.output if not isinstance(o, str)}
    graph_outputs.update(o for scope in all_scopes if scope.is_function for o in scope.body.output)
    main = all_scopes[0]
    decisions: list[Kept | None] = []
    undecided: list[int] = []  # places in ``found`` whose uses decide
    for definition in found:
        is_input = definition.scope is main and definition.node is None and definition.name in graph_inputs
        decision = _keep_by_tensor(definition, options, is_input, graph_outputs)
        if decision is _BY_USES:
            undecided.append(len(decisions))
            decision = None
        decisions.append(decision)
    if undecided:
        bind_uses(all_scopes, found)
        for place in undecided:
            decisions[place] = _keep_by_uses(found[place], options)
    chosen: list[Definition] = []
    kept: list[Kept] = []
    for definition, decision in zip(found, decisions):
        if decision is None:
            chosen.append(definition)
        elif definition.node is None or definition.tensor.data_type in _REDUCIBLE:
            kept.append(decision)  # a Constant of shapes or indices is not a weight: not worth a report line
    return chosen, kept


_BY_USES = object()  # the tensor's own rules let it convert: the nodes that read it decide


def _keep_by_tensor(d: Definition, options: ConversionOptions, is_graph_input: bool, graph_outputs: set[str]):
    """Why ``d`` stays as it is, judged by the tensor alone; ``_BY_USES`` when that is not enough."""
    t = d.tensor
    if t.data_type != onnx.TensorProto.FLOAT:
        if t.data_type == onnx.TensorProto.BFLOAT16:
            return Kept(d, KeepKind.ALREADY_BF16)
        dtype = data_type_name(t.data_type)
        return Kept(d, KeepKind.OTHER_DTYPE, group_detail=dtype)
    if d.node is not None and not options.convert_constants:
        return Kept(d, KeepKind.CONSTANTS_OFF)
    if options.include_initializers is not None and d.name not in options.include_initializers:
        return Kept(d, KeepKind.NOT_INCLUDED)
    if d.name in options.exclude_initializers:
        return Kept(d, KeepKind.EXCLUDED)
    if d.size < options.min_elements:
        return Kept(d, KeepKind.TOO_SMALL, group_detail=_threshold(options.min_elements))
    if is_graph_input and not options.convert_graph_input_initializers:
        return Kept(d, KeepKind.GRAPH_INPUT)
    if d.name in graph_outputs:
        return Kept(d, KeepKind.GRAPH_OUTPUT)
    return _BY_USES


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


@functools.lru_cache(maxsize=8)
def _threshold(min_elements: int) -> str:
    """One string for every tensor kept as too small."""
    return str(min_elements)
