"""The graph edits: BF16 tensors, each widened back to FP32 by one shared Cast.

Every converted tensor ``W`` is stored as ``W_bf16`` and a ``Cast(to=FLOAT)`` produces ``W``
again, so consumers, graph outputs and value_info keep their names and FP32 types and the
model runs on any runtime. A table read only through ``Gather`` is widened after the Gather
instead, so a runtime keeps the table in BF16 and widens only the rows it reads. All edits are
collected first and node lists rebuilt once, children before parents, in topological order.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from olive_bf16_pass.model_io import CONVERT_MARK, iter_graphs
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.rounding import RoundingStats, float32_to_bfloat16_bits
from olive_bf16_pass.selection import Candidate, Consumer

MIN_OPSET = 13  # Cast from bfloat16 exists from opset 13 on
_TOP = -1  # insertion slot before a graph's first node


class _Names:
    """Fresh names that collide with nothing in the model, subgraphs included."""

    def __init__(self, model: onnx.ModelProto):
        self.used: set[str] = set()
        for graph in iter_graphs(model.graph):
            self.used.update(t.name for t in graph.initializer)
            self.used.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
            for node in graph.node:
                self.used.update((node.name, *node.input, *node.output))

    def new(self, base: str) -> str:
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


def main_opset(model: onnx.ModelProto) -> int | None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return None


def tensor_to_bfloat16(tensor: onnx.TensorProto, options: ConversionOptions, stats: RoundingStats) -> None:
    """Turn an FP32 tensor into BF16 in place; data still on disk is only marked for the writer."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        tensor.external_data.add(key=CONVERT_MARK, value="float32")
    elif tensor.raw_data:
        values = np.frombuffer(tensor.raw_data, dtype="<f4")
        tensor.raw_data = float32_to_bfloat16_bits(values, options.rounding, options.saturate, stats=stats).tobytes()
    else:
        values = np.asarray(tensor.float_data, dtype=np.float32)
        tensor.ClearField("float_data")
        tensor.raw_data = float32_to_bfloat16_bits(values, options.rounding, options.saturate, stats=stats).tobytes()
    tensor.data_type = onnx.TensorProto.BFLOAT16


def _cast(names: _Names, src: str, dst: str) -> onnx.NodeProto:
    return onnx.helper.make_node("Cast", [src], [dst], name=names.new(f"{dst}_to_float"), to=onnx.TensorProto.FLOAT)


def _reads_gather_table(use: Consumer) -> bool:
    node = use.node
    return node.op_type == "Gather" and node.domain in ("", "ai.onnx") and use.input_index == 0


def apply(
    model: onnx.ModelProto, chosen: list[Candidate], options: ConversionOptions, stats: dict[str, RoundingStats]
) -> dict[str, tuple[str, str]]:
    """Convert ``chosen`` in ``model``; return {original name: (stored BF16 name, how it is widened)}.

    "cast": one Cast after the tensor; "after_gather": Casts after the Gathers that read it;
    "cast+after_gather": both, when it has other consumers too.

    ``stats`` receives, under the stored name, the rounding figures of tensors converted now;
    tensors still on disk get theirs when the writer streams them.
    """
    graphs = list(iter_graphs(model.graph))
    names = _Names(model)
    inserts: dict[int, dict[int, list[onnx.NodeProto]]] = defaultdict(lambda: defaultdict(list))
    renamed: dict[str, tuple[str, str]] = {}
    vanished: set[str] = set()
    graph_inputs = {v.name: v for v in model.graph.input}

    for cand in chosen:
        stored = names.new(f"{cand.name}_bf16")
        cand.tensor.name = stored
        tensor_to_bfloat16(cand.tensor, options, stats.setdefault(stored, RoundingStats()))
        if cand.kind == "constant":
            graphs[cand.graph_index].node[cand.constant_node_index].output[0] = stored
            slot = cand.constant_node_index
        else:
            slot = _TOP
            if cand.graph_index == 0 and cand.name in graph_inputs:
                graph_inputs[cand.name].name = stored
                graph_inputs[cand.name].type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16

        gathers = [u for u in cand.consumers if _reads_gather_table(u)] if options.cast_after_gather else []
        for use in gathers:
            node = graphs[use.graph_index].node[use.node_index]
            out = node.output[0]
            narrow = names.new(f"{out}_bf16")
            node.input[0], node.output[0] = stored, narrow
            inserts[use.graph_index][use.node_index].append(_cast(names, narrow, out))
        if len(gathers) < len(cand.consumers):
            inserts[cand.graph_index][slot].append(_cast(names, stored, cand.name))
        else:
            vanished.add(cand.name)
        how = "cast+after_gather" if gathers and cand.name not in vanished else "after_gather" if gathers else "cast"
        renamed[cand.name] = (stored, how)

    for graph_index in reversed(range(len(graphs))):  # children first: parents copy them
        if graph_index in inserts:
            _rebuild(graphs[graph_index], inserts[graph_index])
    for graph in graphs:
        if vanished:
            kept = [v for v in graph.value_info if v.name not in vanished]
            if len(kept) != len(graph.value_info):
                _replace(graph.value_info, kept)
    return renamed


def _replace(field, items) -> None:
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field[:]
    field.extend(copies)


def _rebuild(graph: onnx.GraphProto, inserts: dict[int, list[onnx.NodeProto]]) -> None:
    nodes = list(inserts.get(_TOP, []))
    for index, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(inserts.get(index, []))
    _replace(graph.node, nodes)
