"""Does any initializer of the main graph keep values in a typed field? Asked of protobuf, in C, at once.

A tensor's values belong in one field; ``raw_data`` beside ``float_data`` is a corrupt file
(validation names it). Asking each of 100,000 initializers for its five typed fields costs a
tenth of a second in Python, so a twin of ``ModelProto`` is parsed instead, keeping only
``graph.initializer`` and, of each tensor, those five fields under their own numbers: once its
unknown fields are discarded, an initializer serializes as two bytes (tag and length 0) exactly
when it holds no typed value, so one ``ByteSize`` answers for all of them.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.validation import TYPED_FIELDS

__all__ = ["main_initializers_are_untyped"]

_PACKAGE = "olive_bf16_pass.typed_data"
_twin = None


def _field(kind, name: str):
    return kind.DESCRIPTOR.fields_by_name[name]


def _build():
    """ModelProto {graph} -> GraphProto {initializer} -> TensorProto {the typed fields}, same numbers."""
    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
    tensor = file.message_type.add(name="Tensor")
    for name in TYPED_FIELDS:
        field = _field(onnx.TensorProto, name)
        tensor.field.add(name=name, number=field.number, type=field.type, label=FieldDescriptor.LABEL_REPEATED)
    graph = file.message_type.add(name="Graph")
    graph.field.add(name="initializer", number=_field(onnx.GraphProto, "initializer").number,
                    type=FieldDescriptor.TYPE_MESSAGE, type_name=f".{_PACKAGE}.Tensor",
                    label=FieldDescriptor.LABEL_REPEATED)
    model = file.message_type.add(name="Model")
    model.field.add(name="graph", number=_field(onnx.ModelProto, "graph").number,
                    type=FieldDescriptor.TYPE_MESSAGE, type_name=f".{_PACKAGE}.Graph",
                    label=FieldDescriptor.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Model"))


def main_initializers_are_untyped(serialized: bytes) -> bool:
    """True when no initializer of the serialized model's main graph holds a value in float_data,
    int32_data, int64_data, double_data or uint64_data; False when one may (the caller then asks each)."""
    global _twin
    if _twin is None:
        _twin = _build()
    try:
        model = _twin.FromString(serialized)
    except (DecodeError, ValueError):
        return False
    model.DiscardUnknownFields()
    graph = model.graph
    return graph.ByteSize() == 2 * len(graph.initializer)
