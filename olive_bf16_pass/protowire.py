"""The protobuf wire format's primitives: varints, length-delimited fields, a message's fields.

Standard library only, so code that runs at every ``import olive`` (olive/attributes.py) can read
and append a model file's metadata with the same primitives the skeleton scanner (io/wire.py) uses.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["LEN", "Truncated", "fields", "len_field", "read_varint", "varint"]

LEN = 2  # wire type of length-delimited fields


class Truncated(Exception):
    """The bytes are not a complete protobuf message."""


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise Truncated
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise Truncated


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def len_field(field: int, length: int) -> bytes:
    """Tag and length prefix of a length-delimited field."""
    return varint(field << 3 | LEN) + varint(length)


def fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (field, wire_type, field_start, value_start, value_end) of a message's fields."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = read_varint(buf, pos, end)
            value_start = pos
        elif wire == 1:
            value_start, pos = pos, pos + 8
        elif wire == LEN:
            length, value_start = read_varint(buf, pos, end)
            pos = value_start + length
        elif wire == 5:
            value_start, pos = pos, pos + 4
        else:
            raise Truncated
        if pos > end or field == 0:
            raise Truncated
        yield field, wire, field_start, value_start, pos
