"""Protobuf wire format: find where each tensor's raw_data sits in a serialized model.

A 1 GB model should cost kilobytes until it is written, so reading copies the model's bytes
except large ``raw_data`` fields, which are described instead by ONNX's own external-data
fields pointing back at the model file. Every place a tensor can live is scanned: initializers
of the main graph and of every subgraph, node attribute tensors (Constant values), and local
functions.
"""

from __future__ import annotations

import numpy as np

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.protowire import LEN as _LEN
from olive_bf16_pass.protowire import Truncated, fields, len_field, read_varint, varint

__all__ = ["DATA_LOCATION", "EXTERNAL_DATA", "FIELD_KEY", "LIFTED", "PROTOBUF_DEPTH", "RAW_DATA", "VARINT_FIELDS",
           "SkeletonScanner", "TooDeep", "nesting_depth", "verbatim_field"]

_EXTERNAL = onnx.TensorProto.EXTERNAL


def _number(kind, name: str) -> int:
    return kind.DESCRIPTOR.fields_by_name[name].number


RAW_DATA = _number(onnx.TensorProto, "raw_data")
EXTERNAL_DATA = _number(onnx.TensorProto, "external_data")
DATA_LOCATION = _number(onnx.TensorProto, "data_location")
_KEY, _VALUE = _number(onnx.StringStringEntryProto, "key"), _number(onnx.StringStringEntryProto, "value")
_DATA_TYPE = _number(onnx.TensorProto, "data_type")
_FLOAT_DATA, _DOUBLE_DATA = _number(onnx.TensorProto, "float_data"), _number(onnx.TensorProto, "double_data")
_VALUE_FIELDS = frozenset(
    _number(onnx.TensorProto, name)
    for name in ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
)
# packed typed fields whose bytes are the raw_data of these types (fixed width, little-endian)
_RAW_LIKE = {
    _FLOAT_DATA: (onnx.TensorProto.FLOAT, onnx.TensorProto.COMPLEX64),
    _DOUBLE_DATA: (onnx.TensorProto.DOUBLE, onnx.TensorProto.COMPLEX128),
}
# packed varint fields: lifted too, and carried verbatim, in the same field (nothing converts them)
VARINT_FIELDS = {_number(onnx.TensorProto, name): name for name in ("int32_data", "int64_data", "uint64_data")}
# the external_data key that names such a field, on a lifted tensor of the skeleton only (cleared when written)
FIELD_KEY = "olive_bf16_pass.field"

# message kind -> {field number: kind of the message it holds}; fields not listed are copied as they are
_CONTAINERS = {
    "model": {_number(onnx.ModelProto, "graph"): "graph", _number(onnx.ModelProto, "functions"): "function"},
    "graph": {_number(onnx.GraphProto, "node"): "node", _number(onnx.GraphProto, "initializer"): "tensor"},
    "function": {_number(onnx.FunctionProto, "node"): "node"},
    "node": {_number(onnx.NodeProto, "attribute"): "attribute"},
    "attribute": {
        _number(onnx.AttributeProto, "t"): "tensor",
        _number(onnx.AttributeProto, "g"): "graph",
        _number(onnx.AttributeProto, "tensors"): "tensor",
        _number(onnx.AttributeProto, "graphs"): "graph",
    },
}


# the location of bytes the scanner leaves in the model file: no file can bear the name (< > are
# refused on Windows, and a real location is never looked up as it), and it is text whatever the
# model file is called (a file name need not be UTF-8 on Linux)
LIFTED = "<lifted from the model file>"
PROTOBUF_DEPTH = 100  # upb's (and protobuf C++'s) default limit on nested messages


class TooDeep(Exception):
    """Messages nested deeper than protobuf parses: the model is well formed, but no ONNX tool can load it."""

    def __init__(self, depth: int):
        super().__init__(depth)
        self.depth = depth


def _entry(key: str, value: str) -> bytes:
    body = len_field(_KEY, len(key.encode())) + key.encode() + len_field(_VALUE, len(value.encode())) + value.encode()
    return len_field(EXTERNAL_DATA, len(body)) + body


_OFFSET_KEY, _LENGTH_KEY = (len_field(_KEY, len(k)) + k for k in (b"offset", b"length"))
_VALUE_TAG = _VALUE << 3 | _LEN  # one byte, as is every length below: a number's digits are fewer than 128


def _number_entry(key: bytes, value: int) -> bytes:
    """``_entry`` for an ASCII key and a number, without the varint calls (the hot path of lifting)."""
    digits = str(value).encode()
    body = key + bytes((_VALUE_TAG, len(digits))) + digits
    return len_field(EXTERNAL_DATA, len(body)) + body


class SkeletonScanner:
    """Copies a model's bytes, lifting every raw_data of at least ``limit`` bytes out of it.

    Each lifted tensor gets ``data_location: EXTERNAL`` and external data at ``location`` with
    its offset and length in the scanned buffer, so the skeleton parses as an ordinary model
    whose big tensors happen to be external. ``spans`` lists the (offset, length) lifted.
    """

    def __init__(self, buf, limit: int, location: str = LIFTED):
        self.buf, self.location, self.limit = buf, location, limit
        self.spans: list[tuple[int, int]] = []
        self.values: dict[tuple[int, int], int] = {}  # span of a lifted varint field -> how many values it holds
        # what every lifted tensor gains first: data_location EXTERNAL and the location entry
        self._lifted = varint(DATA_LOCATION << 3) + varint(_EXTERNAL) + _entry("location", location)

    def scan(self) -> bytes:
        parts = self._message("model", 0, len(self.buf), 1)
        return b"".join(parts) if parts is not None else bytes(self.buf)

    def _message(self, kind: str, start: int, end: int, depth: int) -> list[bytes] | None:
        """The message's bytes with lifts, as parts; None when nothing in it was lifted.

        The hot loop of reading a model with many small nodes and tensors: one-byte keys and
        lengths are read inline, and untouched runs of fields are copied as one slice. Recursion is
        bounded by protobuf's own depth limit: anything deeper no parser reads, so it is refused.
        """
        if depth > PROTOBUF_DEPTH:
            raise TooDeep(depth)
        if kind == "tensor":
            return self._tensor(start, end)
        buf, containers, limit = self.buf, _CONTAINERS[kind], self.limit
        parts: list[bytes] = []
        copied = pos = start  # bytes before ``copied`` are in ``parts``
        while pos < end:
            field_start = pos
            key = buf[pos]
            pos += 1
            if key >= 0x80:
                key, pos = read_varint(buf, field_start, end)
            field, wire = key >> 3, key & 7
            if wire == _LEN:
                if pos >= end:
                    raise Truncated
                length = buf[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = read_varint(buf, pos - 1, end)
                value_start, pos = pos, pos + length
            elif wire == 0:
                _, pos = read_varint(buf, pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise Truncated
            if pos > end or field == 0:
                raise Truncated
            sub = containers.get(field) if wire == _LEN else None
            if sub is None or pos - value_start < limit:
                continue
            inner = self._message(sub, value_start, pos, depth + 1)
            if inner is not None:
                body = b"".join(inner)
                parts.append(buf[copied:field_start])
                parts.append(len_field(field, len(body)) + body)
                copied = pos
        if copied == start:
            return None
        parts.append(buf[copied:end])
        return parts

    def _tensor(self, start: int, end: int) -> list[bytes] | None:
        """A tensor whose data is one field of ``limit`` bytes or more, lifted: ``raw_data``, or packed
        ``float_data`` / ``double_data`` of a type they hold byte for byte as ``raw_data`` would
        (little-endian IEEE), so the rest of the converter sees one encoding and memory stays bounded
        whatever the exporter chose. A tensor with its values in two fields is left as it is (the
        validation refuses it), as is one whose data is already elsewhere."""
        kept: list[bytes] = []
        data: list[tuple[int, int, int]] = []  # (field, offset, length) of every value field
        data_type = 0
        for field, wire, fstart, vstart, vend in fields(self.buf, start, end):
            if field == EXTERNAL_DATA:
                return None  # already external (or malformed): leave it as it is
            if field == _DATA_TYPE and wire == 0:  # fields() gives a varint's end only: read it from its key
                data_type = read_varint(self.buf, read_varint(self.buf, fstart, vend)[1], vend)[0]
            if field in _VALUE_FIELDS:
                data.append((field, vstart, vend - vstart) if wire == _LEN else (field, -1, 0))
                if wire == _LEN and vend - vstart >= self.limit and len(data) == 1:
                    continue  # may be lifted; kept below if not
            kept.append(self.buf[fstart:vend])
        if len(data) != 1 or data[0][1] < 0 or data[0][2] < self.limit:
            return None
        field, offset, length = data[0]
        verbatim = VARINT_FIELDS.get(field)
        if field != RAW_DATA and data_type not in _RAW_LIKE.get(field, ()) and verbatim is None:
            return None
        if verbatim is not None:
            values = _varints(self.buf, offset, length)
            if values is None:
                return None  # malformed: left in memory, where the validation names it
            self.values[(offset, length)] = values
        self.spans.append((offset, length))
        kept += (self._lifted, _number_entry(_OFFSET_KEY, offset), _number_entry(_LENGTH_KEY, length))
        if verbatim is not None:
            kept.append(_entry(FIELD_KEY, verbatim))
        return kept


def verbatim_field(tensor: onnx.TensorProto) -> int | None:
    """The number of the packed varint field a lifted tensor's bytes belong to, or None (raw bytes)."""
    for entry in tensor.external_data:
        if entry.key == FIELD_KEY:
            return _FIELD_NUMBERS[entry.value]
    return None


_FIELD_NUMBERS = {name: number for number, name in VARINT_FIELDS.items()}


def _varints(buf, offset: int, length: int) -> int | None:
    """How many varints ``length`` bytes hold (bytes that end one), or None when the last one is cut."""
    view = np.frombuffer(buf, dtype=np.uint8, count=length, offset=offset)
    if view[-1] >= 0x80:
        return None
    return int(np.count_nonzero(view < 0x80))


def nesting_depth(buf) -> int:
    """How deep the model's graphs nest, in messages (model = 1), following the fields that hold
    graphs, nodes and attributes; iterative. Used to tell a model too deep for protobuf from a
    truncated file, once parsing has failed. Raises Truncated on malformed bytes."""
    deepest = 0
    stack = [("model", 0, len(buf), 1)]
    while stack:
        kind, start, end, depth = stack.pop()
        deepest = max(deepest, depth)
        containers = _CONTAINERS.get(kind, {})
        for field, wire, _, value_start, value_end in fields(buf, start, end):
            sub = containers.get(field) if wire == _LEN else None
            if sub is not None and sub != "tensor":
                stack.append((sub, value_start, value_end, depth + 1))
    return deepest
