"""The .onnx as pieces: serialized bytes, with tensors still on disk to stream between them.

A model whose weights stay on disk until written cannot go through ``SerializeToString``: each
message that holds such a tensor is taken apart, field by field, down to the tensor, whose
header and raw_data tag are written around the streamed bytes. Everything else serializes in one
protobuf call per message, except a repeated field of more than ``LONG_FIELD`` messages (100,000
nodes, say): a :class:`Batches` piece, serialized a batch at a time as it is written, since one
call would hold the field's bytes twice at once (protobuf's buffer and the copy it returns). A
graph or function with such a field is taken apart like one that holds a tensor to stream.
"""

from __future__ import annotations

from google.protobuf import unknown_fields

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.io.streamer import Conversion, Streamer
from olive_bf16_pass.io.wire import RAW_DATA, verbatim_field
from olive_bf16_pass.protowire import len_field
from olive_bf16_pass.traversal import iter_tensors, scopes
from olive_bf16_pass.validation import is_repeated

__all__ = ["LONG_FIELD", "Batches", "clear_external", "pieces"]

# message type -> its fields that may hold tensors still on disk; the rest serialize as they are
def _fields(kind, *names):
    """(name, number, repeated) of fields, from onnx's own descriptors."""
    found = []
    for name in names:
        descriptor = kind.DESCRIPTOR.fields_by_name[name]
        found.append((name, descriptor.number, is_repeated(descriptor)))
    return tuple(found)


_CONTAINERS = {
    onnx.ModelProto: _fields(onnx.ModelProto, "graph", "functions"),
    onnx.GraphProto: _fields(onnx.GraphProto, "node", "initializer"),
    onnx.FunctionProto: _fields(onnx.FunctionProto, "node"),
    onnx.NodeProto: _fields(onnx.NodeProto, "attribute"),
    onnx.AttributeProto: _fields(onnx.AttributeProto, "t", "g", "tensors", "graphs"),
}


# more messages than this in one repeated field: serialized in batches of this many (about 250 KB of nodes)
LONG_FIELD = 4096


class Batches:
    """The bytes of a long repeated message field, made a batch at a time when iterated: each batch is a
    message of the field's owner type holding only those items, whose bytes are exactly the field's
    bytes for them. ``nbytes`` takes one pass, which keeps no batch; writing takes another."""

    def __init__(self, owner: type, name: str, items):
        self.owner, self.name, self.items = owner, name, items
        self.nbytes = sum(len(part) for part in self)

    def __iter__(self):
        for start in range(0, len(self.items), LONG_FIELD):
            part = self.owner()
            getattr(part, self.name).extend(self.items[start:start + LONG_FIELD])
            yield part.SerializeToString()


def _long_fields(message) -> set[int]:
    """The numbers of ``message``'s repeated message fields longer than LONG_FIELD."""
    return {d.number for d in message.DESCRIPTOR.fields
            if d.type == d.TYPE_MESSAGE and is_repeated(d) and len(getattr(message, d.name)) > LONG_FIELD}



def pieces(
    model: onnx.ModelProto,
    streamer: Streamer,
    conversions: dict[int, Conversion],
    written: frozenset[int] = frozenset(),
    all_scopes: list | None = None,
) -> tuple[list, int]:
    """The model serialized as bytes (and :class:`Batches`), with tensors to stream between them; and its
    total size.

    Only the messages that hold a tensor still on disk are taken apart: a graph's nodes or
    initializers, when none of them holds one, serialize in one protobuf call. Each tensor on
    disk becomes its header and the tag of a raw_data field, then its streamed bytes. Fields come in
    protobuf's own order (field numbers ascending, unknown fields last), so the bytes are exactly
    ``SerializeToString`` of the model with its data inline: the same model gives the same bytes.
    """
    return _Serializer(model, streamer, conversions, written, all_scopes).pieces()


class _Serializer:
    def __init__(self, model, streamer, conversions, written, all_scopes):
        self.model, self.streamer, self.conversions = model, streamer, conversions
        self.scopes = all_scopes or scopes(model)  # kept alive: the ids below are theirs
        self.streamed = {
            id(t): t for t in iter_tensors(model, self.scopes)
            if t.data_location == onnx.TensorProto.EXTERNAL and id(t) not in written
        }
        self.hot: dict[int, object] = {}  # id -> message to take apart: it holds a tensor to stream or a long field
        self.hot_fields: dict[int, set[str]] = {}  # id(message) -> its fields to take apart (long ones: batched)
        for scope in reversed(self.scopes):  # children first
            body, fields = scope.body, set()
            if self.streamed:
                if any(id(t) in self.streamed for t in scope.initializers):
                    fields.add("initializer")
                for node in body.node:
                    if self._node_is_hot(node):
                        fields.add("node")
            if fields or _long_fields(body):  # a long field alone: taken apart so that _in_order batches it
                self._mark(body, fields)
        if id(model.graph) in self.hot:
            self._mark(model, {"graph"} | ({"functions"} if any(id(f) in self.hot for f in model.functions) else set()))
        elif any(id(f) in self.hot for f in model.functions):
            self._mark(model, {"functions"})

    def _mark(self, message, fields: set[str]) -> None:
        self.hot[id(message)] = message
        self.hot_fields[id(message)] = fields

    def _node_is_hot(self, node: onnx.NodeProto) -> bool:
        hot = False
        for attr in node.attribute:
            fields = set()
            if attr.type == onnx.AttributeProto.TENSOR and id(attr.t) in self.streamed:
                fields.add("t")
            elif attr.type == onnx.AttributeProto.TENSORS and any(id(t) in self.streamed for t in attr.tensors):
                fields.add("tensors")
            elif attr.type == onnx.AttributeProto.GRAPH and id(attr.g) in self.hot:
                fields.add("g")
            elif attr.type == onnx.AttributeProto.GRAPHS and any(id(g) in self.hot for g in attr.graphs):
                fields.add("graphs")
            if fields:
                self._mark(attr, fields)
                hot = True
        if hot:
            self._mark(node, {"attribute"})
        return hot

    def pieces(self) -> tuple[list, int]:
        out: list = []
        return out, self._add(self.model, out)

    def _add(self, message, out: list) -> int:
        if type(message) is onnx.TensorProto and id(message) in self.streamed:
            conversion = self.conversions.get(id(message))
            nbytes = self.streamer.out_nbytes(message, conversion)
            field = verbatim_field(message) or RAW_DATA  # a packed varint field goes back where it came from
            data = (len_field(field, nbytes), (message, conversion, nbytes))
            header = onnx.TensorProto()
            header.CopyFrom(message)
            clear_external(header)
            if field == RAW_DATA and not _after_raw_data(header):  # the usual tensor: its fields come before raw_data
                head = header.SerializeToString() + data[0]
                out.extend((head, data[1]))
                return len(head) + nbytes
            return _in_order(header, out, {field: lambda parts: (parts.extend(data), len(data[0]) + nbytes)[1]})
        fields = self.hot_fields.get(id(message))
        if fields is None:
            data = message.SerializeToString()
            out.append(data)
            return len(data)
        hot = {}
        for name, number, repeated in _CONTAINERS[type(message)]:
            if name in fields:
                items = getattr(message, name) if repeated else [getattr(message, name)]
                hot[number] = lambda parts, number=number, items=items: self._items(number, items, parts)
        return _in_order(message, out, hot)

    def _items(self, number: int, items, out: list) -> int:
        total = 0
        for item in items:
            inner: list = []
            size = self._add(item, inner)
            prefix = len_field(number, size)
            out.append(prefix)
            out.extend(inner)
            total += len(prefix) + size
        return total


# a tensor's fields that protobuf writes after raw_data (external_data and data_location aside: cleared)
_AFTER_RAW_DATA = tuple(
    (f.name, _fields(onnx.TensorProto, f.name)[0][2]) for f in onnx.TensorProto.DESCRIPTOR.fields
    if f.number > RAW_DATA and f.name not in ("external_data", "data_location")
)


def _after_raw_data(tensor: onnx.TensorProto) -> bool:
    """Whether ``tensor`` has a field protobuf writes after raw_data (unknown fields included)."""
    for name, repeated in _AFTER_RAW_DATA:
        if len(getattr(tensor, name)) if repeated else tensor.HasField(name):
            return True
    return bool(len(unknown_fields.UnknownFieldSet(tensor)))


def _in_order(message, out: list, hot: dict) -> int:
    """``message`` serialized as protobuf does it (fields by number, then unknown fields), except that
    each field numbered in ``hot`` is written by its function (``hot[number](out) -> bytes added``),
    whether or not the message has it set. Runs of other fields serialize in one call each, and a
    repeated message field longer than LONG_FIELD as :class:`Batches`."""
    total = 0
    run: list = []
    pending = sorted(hot)
    long = _long_fields(message)

    def flush() -> None:
        nonlocal total, run
        if run:
            part = type(message)()
            for descriptor, value in run:
                _set(part, descriptor, value)
            data = part.SerializeToString()
            out.append(data)
            total += len(data)
            run = []

    for descriptor, value in sorted(message.ListFields(), key=lambda field: field[0].number):  # ListFields: declaration order
        number = descriptor.number
        while pending and pending[0] <= number:
            flush()
            total += hot[pending.pop(0)](out)
        if number in hot:
            continue
        if number in long:
            flush()
            batches = Batches(type(message), descriptor.name, value)
            out.append(batches)
            total += batches.nbytes
            continue
        run.append((descriptor, value))
    while pending:
        flush()
        total += hot[pending.pop(0)](out)
    flush()
    if len(unknown_fields.UnknownFieldSet(message)):  # protobuf writes them after every known field
        rest = type(message)()
        rest.CopyFrom(message)
        for descriptor, _ in rest.ListFields():
            rest.ClearField(descriptor.name)
        data = rest.SerializeToString()
        out.append(data)
        total += len(data)
    return total


def _set(message, descriptor, value) -> None:
    """Copy one field's value into ``message``."""
    if is_repeated(descriptor):
        getattr(message, descriptor.name).extend(value)
    elif descriptor.type == descriptor.TYPE_MESSAGE:
        field = getattr(message, descriptor.name)
        field.SetInParent()
        field.CopyFrom(value)
    else:
        setattr(message, descriptor.name, value)


def clear_external(tensor: onnx.TensorProto) -> None:
    del tensor.external_data[:]
    tensor.ClearField("data_location")
