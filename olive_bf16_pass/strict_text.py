"""Is every string of a model UTF-8? Asked of protobuf's parser, in C, in one pass; walked in Python
only when it is not, to name the field.

ONNX is proto2, whose parser does not validate strings; a proto3 parser does. So this module
derives from onnx's own descriptors a proto3 twin of ``ModelProto`` that keeps only string fields
and the messages that lead to them, under the same field numbers: parsing a model's bytes with
it fails exactly when some string field holds bytes that are not UTF-8 (everything else is
skipped as unknown). A model of 100,000 nodes is checked in a few hundredths of a second, where
gathering its names in Python took a third of a second. A failure only sends the caller to the
slow walk, which names the field.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.traversal import Scope, names_in
from olive_bf16_pass.validation import is_repeated

__all__ = ["all_text_is_utf8", "check_names", "check_text", "invalid_utf8", "not_utf8"]

_PACKAGE = "olive_bf16_pass.strict_text"
_twin = None


def _build():
    """The proto3 twin's ModelProto class: every message reachable from onnx's ModelProto, string and
    message fields only (a message with no text below it still parses: as an empty message)."""
    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto3")
    done: set[str] = set()
    todo = [onnx.ModelProto.DESCRIPTOR]
    while todo:
        kind = todo.pop()
        if kind.full_name in done:
            continue
        done.add(kind.full_name)
        twin = file.message_type.add(name=kind.full_name.replace(".", "_"))
        for field in kind.fields:
            if field.type == FieldDescriptor.TYPE_STRING:
                type_name = None
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                type_name = f".{_PACKAGE}.{field.message_type.full_name.replace('.', '_')}"
                todo.append(field.message_type)
            else:
                continue
            twin.field.add(
                name=field.name, number=field.number, type=field.type, type_name=type_name,
                label=FieldDescriptor.LABEL_REPEATED if is_repeated(field) else FieldDescriptor.LABEL_OPTIONAL,
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    found = pool.FindMessageTypeByName(f"{_PACKAGE}.{onnx.ModelProto.DESCRIPTOR.full_name.replace('.', '_')}")
    return message_factory.GetMessageClass(found)


def all_text_is_utf8(serialized: bytes) -> bool:
    """True when every string field of the serialized ModelProto is UTF-8; False when one is not, or
    when the bytes do not parse at all (the caller's own parse then says why)."""
    global _twin
    if _twin is None:
        _twin = _build()
    try:
        _twin.FromString(serialized)
    except (DecodeError, UnicodeDecodeError, ValueError):
        return False
    return True


_NOT_UTF8 = (
    "a name in the model is not valid UTF-8 ({where}{value!r}); the file is corrupt or not ONNX. "
    "Re-export it (or download it again)."
)


def not_utf8(where: str, value: bytes) -> str:
    return _NOT_UTF8.format(where=where, value=value)


def check_names(model: onnx.ModelProto, all_scopes: list[Scope], prefix: str = "") -> None:
    """Refuse a model with a name that is not UTF-8: a name nothing could look up or write.

    ONNX is proto2, whose parser does not validate strings: protobuf's upb runtime then hands such
    a field back as ``bytes`` where ``str`` is due, and the first ``str`` operation on it fails far
    from the cause. The names the converter reads are checked in one quick pass; only when one is
    bad is the whole model walked, to name the field.
    """
    if _names_are_text(all_scopes):
        return
    bad = invalid_utf8(model) or ("a name", b"?")
    raise ConversionError(prefix + not_utf8(f"{bad[0]} = ", bad[1]))


def check_text(model: onnx.ModelProto, prefix: str = "") -> None:
    """Refuse a model with any other string field that is not UTF-8 (a doc string, a metadata value):
    protobuf cannot write such a field back, so the output could not carry it."""
    bad = invalid_utf8(model)
    if bad is not None:
        raise ConversionError(
            f"{prefix}a text field of the model is not valid UTF-8 ({bad[0]} = {bad[1]!r}); the file is corrupt or "
            "was written by a broken exporter. Re-export it, or set that field to a text (onnx: assign it '') and "
            "save the model again."
        )


def _names_are_text(all_scopes: list[Scope]) -> bool:
    """``str.join`` refuses ``bytes``: one join per scope checks every name the converter reads."""
    for scope in all_scopes:
        texts = names_in(scope)
        texts += [tensor.name for tensor in scope.attribute_tensors]  # initializers are named by names_in
        for tensor in (*scope.initializers, *scope.attribute_tensors):
            if tensor.external_data:
                texts += [text for entry in tensor.external_data for text in (entry.key, entry.value)]
        try:
            "".join(texts)
        except TypeError:
            return False
    return True


# --- naming the bad field: a walk over every string field (only when one is bad) --------------

_TEXT_FIELDS: dict[str, list[tuple[str, bool, bool]]] = {}


def _text_fields(descriptor) -> list[tuple[str, bool, bool]]:
    found = _TEXT_FIELDS.get(descriptor.full_name)
    if found is None:
        kinds = {FieldDescriptor.TYPE_STRING: False, FieldDescriptor.TYPE_MESSAGE: True}
        found = [(f.name, is_repeated(f), kinds[f.type]) for f in descriptor.fields if f.type in kinds]
        _TEXT_FIELDS[descriptor.full_name] = found
    return found


def invalid_utf8(message, where: str = "model") -> tuple[str, bytes] | None:
    """The first string field (its path, its bytes) that is not valid UTF-8, or None.

    ONNX is proto2, whose parser does not validate strings: protobuf's upb runtime then hands
    such a field back as ``bytes`` where ``str`` is due, and the first ``str`` operation on it
    fails far from the cause. Only string and message fields are read (a tensor's data is never
    copied); the path is worked out only when a bad field exists.
    """
    return _find_invalid(message, where) if _has_invalid(message) else None


def _has_invalid(message) -> bool:
    """The fast pass: set fields only, no paths."""
    stack = [message]
    while stack:
        msg = stack.pop()
        if isinstance(msg, onnx.TensorProto):  # ListFields would copy raw_data
            if _find_invalid(msg, "") is not None:
                return True
            continue
        for f, value in msg.ListFields():
            if f.type == FieldDescriptor.TYPE_STRING:
                if any(type(v) is not str for v in value) if is_repeated(f) else type(value) is not str:
                    return True
            elif f.type == FieldDescriptor.TYPE_MESSAGE:
                if is_repeated(f):
                    stack.extend(value)
                else:
                    stack.append(value)
    return False


def _find_invalid(message, where: str) -> tuple[str, bytes] | None:
    stack = [(message, where)]
    while stack:
        msg, at = stack.pop()
        for name, repeated, is_message in _text_fields(msg.DESCRIPTOR):
            if is_message:
                if repeated:
                    values = getattr(msg, name)
                    stack.extend((values[i], f"{at}.{name}[{i}]") for i in reversed(range(len(values))))
                elif msg.HasField(name):
                    stack.append((getattr(msg, name), f"{at}.{name}"))
            elif repeated:
                for i, value in enumerate(getattr(msg, name)):
                    if not isinstance(value, str):
                        return f"{at}.{name}[{i}]", bytes(value)
            else:
                value = getattr(msg, name)
                if not isinstance(value, str):
                    return f"{at}.{name}", bytes(value)
    return None
