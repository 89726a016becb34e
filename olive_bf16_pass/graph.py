"""The graph edits: BF16 tensors, each widened back to FP32 by one shared Cast.

Every converted tensor ``W`` is stored as ``W_bf16`` and a ``Cast(to=FLOAT)`` produces ``W``
again in the scope that defines it, so consumers, graph outputs and value_info keep their names
and FP32 types and the model runs on any runtime. A table read only through ``Gather`` (and
``Transpose``, as tied LM heads read it) is widened after each of those readers instead, in the
reader's own scope, so a runtime keeps the table in BF16 and widens only what it reads. A table
that a MatMul or Gemm reads directly gets one shared Cast: one FP32 copy at run time, not two.
Edits are made on the definitions and uses that traversal.py bound by scope, never looked up
by name, and new nodes are sorted into place (a list sort moves messages, it does not copy them),
so every node and tensor keeps its identity for the writer.

With ``storage="float32"`` the same tensors are rounded to BF16 values exactly as above but stay
FP32 (BF16 bits shifted back: 4 bytes an element), under their own names, with no Cast: the form
AMD documents as the Ryzen AI compiler's input (Quark's ``simulate_bf16``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.rounding import RoundingStats, bfloat16_bits_to_float32, float32_to_bfloat16_bits, round_segments
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Definition, Scope, Use, names_in

__all__ = ["Converted", "Names", "apply", "moves_data", "reads_gather_table", "to_bfloat16"]

_ALONE_BYTES = 1 << 22  # inline tensors this large are rounded alone; smaller ones together, up to
_BATCH = 4096  # this many (or this many bytes) at a time
_TO_FLOAT = onnx.AttributeProto(name="to", type=onnx.AttributeProto.INT, i=onnx.TensorProto.FLOAT)


@dataclass(eq=False)
class Converted:
    """A definition now stored as BF16; ``on_disk``: its bytes are rounded by the writer."""

    definition: Definition
    stored_name: str
    widened: str  # "cast" (one Cast after the tensor), "after_gather" (after each Gather), "after_readers"
    # (after each Gather and Transpose: a tied head read through a Transpose), "none" (storage float32: no Cast)
    stats: RoundingStats
    on_disk: bool


class Names:
    """Fresh names that collide with nothing in the model, in any scope."""

    def __init__(self, all_scopes: list[Scope]):
        self.used: set[str] = set().union(*map(names_in, all_scopes))

    def new(self, base: str) -> str:
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name


def to_bfloat16(tensors: list[onnx.TensorProto], options: ConversionOptions) -> list[RoundingStats]:
    """Retype inline FP32 tensors as BF16, rounding their data: large ones alone (in cache-sized
    chunks), small ones together, as numpy's cost per call would dominate them one by one."""
    stats: list[RoundingStats | None] = [None] * len(tensors)  # each is filled below
    batch: list[tuple[int, bytes]] = []
    held = 0
    for index, tensor in enumerate(tensors):
        data = tensor.raw_data if tensor.HasField("raw_data") else np.asarray(tensor.float_data, "<f4").tobytes()
        if len(data) >= _ALONE_BYTES:
            stats[index] = RoundingStats()
            values = np.frombuffer(data, "<f4")
            bits = float32_to_bfloat16_bits(values, options.rounding, options.saturate, stats=stats[index])
            _store(tensor, bits, options.storage)
            continue
        batch.append((index, data))
        held += len(data)
        if held >= _ALONE_BYTES or len(batch) >= _BATCH:
            _round_together(tensors, batch, stats, options)
            batch, held = [], 0
    _round_together(tensors, batch, stats, options)
    return stats


def _round_together(tensors, batch: list[tuple[int, bytes]], stats: list[RoundingStats], options) -> None:
    if not batch:
        return
    sizes = [len(data) // 4 for _, data in batch]
    values = np.frombuffer(b"".join(data for _, data in batch), dtype="<f4")
    bits, figures = round_segments(values, sizes, options.rounding, options.saturate)
    stop = 0
    for (index, _), size, measured in zip(batch, sizes, figures):
        _store(tensors[index], bits[stop:stop + size], options.storage)
        stats[index] = measured
        stop += size


def _store(tensor: onnx.TensorProto, bits, storage: str = "bfloat16") -> None:
    """Store rounded BF16 ``bits`` (uint16) as BF16, or (storage float32) as the FP32 values they are."""
    tensor.ClearField("float_data")
    if storage == "float32":
        tensor.raw_data = bfloat16_bits_to_float32(bits).astype("<f4", copy=False).tobytes()
        return  # still FLOAT
    tensor.raw_data = bits.astype("<u2", copy=False).tobytes()
    tensor.data_type = onnx.TensorProto.BFLOAT16


def reads_gather_table(use: Use) -> bool:
    node = use.node
    return node.op_type == "Gather" and node.domain in DEFAULT_DOMAINS and use.input_index == 0


def moves_data(use: Use) -> bool:
    """A reader that only moves a table's values (Gather rows, a Transpose), which ONNX Runtime does in
    BF16 too: the Cast can follow it. A tied LM head reads the embedding table through a Transpose."""
    node = use.node
    return node.op_type in ("Gather", "Transpose") and node.domain in DEFAULT_DOMAINS and use.input_index == 0


class _Casts:
    """Cast nodes to add after given nodes of each scope (or first, after none).

    They are added in one go and the node list is sorted into place: inserting one at a time
    would cost a copy of the list each, and sorting moves the messages without copying them,
    so every node and tensor keeps its identity for the writer.
    """

    def __init__(self, names: Names):
        self.names = names
        self._by_scope: dict[int, tuple[Scope, list[tuple[onnx.NodeProto | None, str, str]]]] = {}

    def after(self, scope: Scope, node: onnx.NodeProto | None, src: str, dst: str) -> None:
        self._by_scope.setdefault(id(scope), (scope, []))[1].append((node, src, dst))

    def add(self) -> None:
        for scope, casts in self._by_scope.values():
            nodes = scope.body.node
            present = list(nodes)  # alive while sorting: the keys are their ids
            step = len(casts) + 1
            place = {id(node): (index + 1) * step for index, node in enumerate(present)}
            added = []  # alive too: a freed wrapper would come back with another id
            for order, (after, src, dst) in enumerate(casts, start=1):
                name = self.names.new(f"{dst}_to_float")
                cast = nodes.add(op_type="Cast", input=[src], output=[dst], name=name, attribute=[_TO_FLOAT])
                place[id(cast)] = (0 if after is None else place[id(after)]) + order
                added.append(cast)
            nodes.sort(key=lambda node: place[id(node)])


def apply(model: onnx.ModelProto, all_scopes: list[Scope], chosen: list[Definition],
          options: ConversionOptions) -> list[Converted]:
    """Convert ``chosen``; tensors whose data is on disk are only retyped (the writer rounds them)."""
    if not chosen:
        return []
    if options.storage == "float32":
        return _round_in_place(chosen, options)
    names = Names(all_scopes)
    casts = _Casts(names)
    graph_inputs = {v.name: v for v in model.graph.input}
    main = all_scopes[0]
    done: list[Converted] = []
    inline: list[Converted] = []
    gone: dict[int, tuple[Scope, set[str]]] = {}  # value_info names no longer produced, by scope
    for definition in chosen:
        stored = names.new(f"{definition.name}_bf16")
        tensor = definition.tensor
        on_disk = tensor.data_location == onnx.TensorProto.EXTERNAL
        if on_disk:
            tensor.data_type = onnx.TensorProto.BFLOAT16
        tensor.name = stored
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
                casts.after(use.scope, use.node, narrow, out)
            for scope in (definition.scope, *(u.scope for u in uses)):
                gone.setdefault(id(scope), (scope, set()))[1].add(definition.name)
        else:  # a table a MatMul or Gemm reads too (tied): one FP32 copy at run time, never BF16 and FP32
            casts.after(definition.scope, definition.node, stored, definition.name)
        how = "cast" if not after_readers else "after_gather" if all(map(reads_gather_table, uses)) else "after_readers"
        done.append(Converted(definition, stored, how, RoundingStats(), on_disk))
        if not on_disk:
            inline.append(done[-1])
    for converted, stats in zip(inline, to_bfloat16([c.definition.tensor for c in inline], options)):
        converted.stats = stats
    casts.add()
    for scope, forgotten in gone.values():
        _forget_value_info(scope, forgotten)
    return done


def _round_in_place(chosen: list[Definition], options: ConversionOptions) -> list[Converted]:
    """Storage float32: each tensor keeps its name, FP32 type and readers; only its values are rounded
    (inline ones here, those on disk by the streamer, which writes 4 bytes an element for a FLOAT tensor)."""
    done = [
        Converted(d, d.name, "none", RoundingStats(), d.tensor.data_location == onnx.TensorProto.EXTERNAL)
        for d in chosen
    ]
    inline = [c for c in done if not c.on_disk]
    for converted, stats in zip(inline, to_bfloat16([c.definition.tensor for c in inline], options)):
        converted.stats = stats
    return done


def _forget_value_info(scope: Scope, forgotten: set[str]) -> None:
    """Names no longer produced (where they were visible): their value_info entries go."""
    if scope.is_function:
        return
    entries = scope.body.value_info
    for index in reversed(range(len(entries))):
        if entries[index].name in forgotten:
            del entries[index]
