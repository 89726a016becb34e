"""The graph edits: BF16 tensors, each widened back to FP32 by one shared Cast.

Every converted tensor ``W`` is stored as ``W_bf16`` and a ``Cast(to=FLOAT)`` produces ``W``
again in the scope that defines it, so consumers, graph outputs and value_info keep their names
and FP32 types and the model runs on any runtime. A table read only through ``Gather`` (and
``Transpose``, as tied LM heads read it) is widened after each of those readers instead, in the
reader's own scope, so a runtime keeps the table in BF16 and widens only what it reads. A table
that a MatMul or Gemm reads directly gets one shared Cast: one FP32 copy at run time, not two.
Edits are made on the definitions and uses that traversal.py bound by scope, never looked up
by name, and nodes are inserted in place (no list is rebuilt), so every node and tensor keeps
its identity for the writer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.rounding import RoundingStats, float32_to_bfloat16_bits
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Definition, Scope, Use

MIN_OPSET = 13  # Cast from bfloat16 exists from opset 13 on
_TOP = -1  # insertion slot before a body's first node


@dataclass(eq=False)
class Converted:
    """A definition now stored as BF16; ``on_disk``: its bytes are rounded by the writer."""

    definition: Definition
    stored_name: str
    widened: str  # "cast" (one Cast after the tensor), "after_gather" (after each Gather), "after_readers"
    # (after each Gather and Transpose: a tied head read through a Transpose)
    stats: RoundingStats
    on_disk: bool


class _Names:
    """Fresh names that collide with nothing in the model, in any scope."""

    def __init__(self, all_scopes: list[Scope]):
        self.used: set[str] = set()
        for scope in all_scopes:
            body = scope.body
            self.used.update(t.name for t in scope.initializers)
            if scope.is_function:
                self.used.update((*body.input, *body.output))
            else:
                self.used.update(v.name for v in (*body.input, *body.output, *body.value_info))
            for node in body.node:
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
        if opset.domain in DEFAULT_DOMAINS:
            return opset.version
    return None


def to_bfloat16(tensor: onnx.TensorProto, options: ConversionOptions, stats: RoundingStats) -> bool:
    """Retype an FP32 tensor as BF16, rounding the data it holds; True when its data is on disk."""
    on_disk = tensor.data_location == onnx.TensorProto.EXTERNAL
    if not on_disk:
        if tensor.raw_data:
            values = np.frombuffer(tensor.raw_data, dtype="<f4")
        else:
            values = np.asarray(tensor.float_data, dtype=np.float32)
            tensor.ClearField("float_data")
        bits = float32_to_bfloat16_bits(values, options.rounding, options.saturate, stats=stats)
        tensor.raw_data = bits.tobytes()
    tensor.data_type = onnx.TensorProto.BFLOAT16
    return on_disk


def reads_gather_table(use: Use) -> bool:
    node = use.node
    return node.op_type == "Gather" and node.domain in DEFAULT_DOMAINS and use.input_index == 0


def moves_data(use: Use) -> bool:
    """A reader that only moves a table's values (Gather rows, a Transpose), which ONNX Runtime does in
    BF16 too: the Cast can follow it. A tied LM head reads the embedding table through a Transpose."""
    node = use.node
    return node.op_type in ("Gather", "Transpose") and node.domain in DEFAULT_DOMAINS and use.input_index == 0


def _cast(names: _Names, src: str, dst: str) -> onnx.NodeProto:
    return onnx.helper.make_node("Cast", [src], [dst], name=names.new(f"{dst}_to_float"), to=onnx.TensorProto.FLOAT)


class _Inserts:
    """Nodes to insert after given nodes of each scope, applied at the end without copying."""

    def __init__(self):
        self._by_scope: dict[int, tuple[Scope, dict[int, list[onnx.NodeProto]]]] = {}
        self._index: dict[int, dict[int, int]] = {}

    def after(self, scope: Scope, node: onnx.NodeProto | None, new: onnx.NodeProto) -> None:
        if id(scope) not in self._index:
            self._index[id(scope)] = {id(n): i for i, n in enumerate(scope.body.node)}
        slot = _TOP if node is None else self._index[id(scope)][id(node)]
        self._by_scope.setdefault(id(scope), (scope, defaultdict(list)))[1][slot].append(new)

    def apply(self) -> None:
        for scope, slots in self._by_scope.values():
            nodes = scope.body.node
            for slot in sorted(slots, reverse=True):  # later slots first: earlier indices stay valid
                for offset, node in enumerate(slots[slot]):
                    nodes.insert(slot + 1 + offset, node)


def apply(model: onnx.ModelProto, all_scopes: list[Scope], chosen: list[Definition],
          options: ConversionOptions) -> list[Converted]:
    """Convert ``chosen``; tensors whose data is on disk are only retyped (the writer rounds them)."""
    if not chosen:
        return []
    names = _Names(all_scopes)
    inserts = _Inserts()
    graph_inputs = {v.name: v for v in model.graph.input}
    main = all_scopes[0]
    done: list[Converted] = []
    for definition in chosen:
        stored = names.new(f"{definition.name}_bf16")
        stats = RoundingStats()
        on_disk = to_bfloat16(definition.tensor, options, stats)
        definition.tensor.name = stored
        if definition.node is not None:  # a Constant: its output becomes the BF16 value
            definition.node.output[0] = stored
        elif definition.scope is main and definition.name in graph_inputs:
            graph_inputs[definition.name].name = stored
            graph_inputs[definition.name].type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16
        uses = definition.uses
        after_readers = (
            options.cast_after_gather
            and uses
            and all(moves_data(u) for u in uses)
            and any(map(reads_gather_table, uses))
        )
        if after_readers:
            for use in uses:
                out = use.node.output[0]
                narrow = names.new(f"{out}_bf16")
                use.node.input[0], use.node.output[0] = stored, narrow
                inserts.after(use.scope, use.node, _cast(names, narrow, out))
            _forget_value_info(definition)
        else:  # a table a MatMul or Gemm reads too (tied): one FP32 copy at run time, never BF16 and FP32
            inserts.after(definition.scope, definition.node, _cast(names, stored, definition.name))
        how = "cast" if not after_readers else "after_gather" if all(map(reads_gather_table, uses)) else "after_readers"
        done.append(Converted(definition, stored, how, stats, on_disk))
    inserts.apply()
    return done


def _forget_value_info(definition: Definition) -> None:
    """The name is no longer produced: drop value_info entries for it where it was visible."""
    seen = {id(definition.scope): definition.scope}
    seen.update((id(u.scope), u.scope) for u in definition.uses)
    for scope in seen.values():
        if scope.is_function:
            continue
        entries = scope.body.value_info
        for index in reversed(range(len(entries))):
            if entries[index].name == definition.name:
                del entries[index]
