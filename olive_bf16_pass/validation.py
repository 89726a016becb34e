"""What a model must hold to be converted: names that are text, data as long as its shape says,
types this onnx knows. Graph-only (no file system): the reader checks files with it, and
``convert_model`` checks in-memory models.
"""

from __future__ import annotations

import math
import operator

from google.protobuf.descriptor import FieldDescriptor

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.traversal import (
    BYTE_WIDTHS,
    Scope,
    data_type_name,
    elements,
    expected_nbytes,
    iter_tensors,
    names_in,
)

__all__ = [
    "KNOWN_TYPES", "TYPED_FIELDS", "check_inline_data", "check_names", "check_single_definitions",
    "check_sparse_inline", "check_text", "count_problem", "describe", "inline_data_problem", "invalid_utf8",
    "is_repeated", "not_utf8", "size_problem", "unknown_types",
]

_NOT_UTF8 = (
    "a name in the model is not valid UTF-8 ({where}{value!r}); the file is corrupt or not ONNX. "
    "Re-export it (or download it again)."
)
_CORRUPT = "the file is corrupt. Re-export the model (or download it again)."


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


def check_single_definitions(all_scopes: list[Scope], prefix: str = "") -> None:
    """Refuse a scope that defines a name twice (two initializers ``W``, an initializer and a node output).

    ONNX graphs define each name once; runtimes that load such a model differ on which definition a
    reader gets, so no converter can tell which tensor is meant, and an edit would make it worse.
    A graph input may share its initializer's name (an overridable default): that is one value.
    """
    for scope in all_scopes:
        inputs = set(scope.body.input) if scope.is_function else {v.name for v in scope.body.input}
        initialized = [tensor.name for tensor in scope.initializers]
        outputs = _outputs(scope.body.node)
        defined = set(initialized)
        defined.update(outputs)
        if len(defined) == len(initialized) + len(outputs) and inputs.isdisjoint(outputs):
            continue  # every name once: the walk below, which names the culprit, is not needed
        seen: dict[str, onnx.NodeProto | None] = {}  # name -> the node whose output it is (None: an initializer)
        for tensor in scope.initializers:
            name = tensor.name
            if name in seen:
                _twice(name, "an initializer", "an initializer", scope, prefix)
            seen[name] = None
        for node in scope.body.node:
            for name in node.output:
                if not name:
                    continue
                if name in inputs:
                    _twice(name, "an input", _output_of(node), scope, prefix)
                if name in seen:
                    first = seen[name]
                    _twice(name, "an initializer" if first is None else _output_of(first), _output_of(node), scope,
                           prefix)
                seen[name] = node


def _outputs(nodes) -> list[str]:
    """Every node output name that is not empty. Most nodes have one: indexing it is twice as fast
    as iterating upb's container."""
    containers = list(map(_OUTPUT, nodes))
    found = [out[0] for out in containers if len(out) == 1]
    found += [name for out in containers if len(out) != 1 for name in out]
    return [name for name in found if name] if "" in found else found


_OUTPUT = operator.attrgetter("output")


def _output_of(node: onnx.NodeProto) -> str:
    return f"the output of {node.op_type} node {node.name!r}"


def _twice(name: str, first: str, second: str, scope: Scope, prefix: str) -> None:
    both = f"{first} and {second}" if first != second else f"{first}, twice"
    raise ConversionError(
        f"{prefix}the input model defines {name!r} twice in {scope.label} ({both}); ONNX allows one "
        "definition per name and runtimes differ on which one a reader gets, so it is not clear which tensor is "
        "meant. Rename or remove one of them (onnx or onnx-ir), then convert."
    )


def check_sparse_inline(all_scopes: list[Scope], prefix: str = "") -> None:
    """Sparse tensors are carried to the output as they are: only with their data inline."""
    for scope in all_scopes:
        for sparse in scope.sparse_tensors:
            for part, tensor in (("values", sparse.values), ("indices", sparse.indices)):
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    raise ConversionError(
                        f"{prefix}sparse tensor {sparse.values.name!r} ({scope.label}) keeps its {part} in an external "
                        "data file; the converter carries sparse tensors only with their data inline. Densify it "
                        "(onnx.numpy_helper) or save the model with it inline, then convert."
                    )


def describe(all_scopes: list[Scope], tensor: onnx.TensorProto) -> str:
    """Words that find ``tensor`` (by identity) in the model: made only for an error message."""
    for scope in all_scopes:
        if any(t is tensor for t in scope.initializers):
            return f"initializer {tensor.name!r} ({scope.label})"
        for index, node in enumerate(scope.body.node):
            for attr in node.attribute:
                if (attr.type == onnx.AttributeProto.TENSOR and attr.t is tensor) or (
                    attr.type == onnx.AttributeProto.TENSORS and any(t is tensor for t in attr.tensors)
                ):
                    name = node.name or (node.output[0] if node.output else f"#{index}")
                    return f"attribute {attr.name!r} of {node.op_type} node {name!r} ({scope.label})"
    return f"tensor {tensor.name!r}"


_COMPLEX = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
_typed_fields = operator.attrgetter(*TYPED_FIELDS)  # all five in one call: the per-tensor fast path


def inline_data_problem(tensor: onnx.TensorProto) -> str | None:
    """Why an inline tensor's data does not fit its shape and type, or None (also when it cannot be judged:
    strings, types this onnx does not size, data that is elsewhere)."""
    held = [(name, len(getattr(tensor, name))) for name in TYPED_FIELDS if len(getattr(tensor, name))]
    places = (["raw_data"] if tensor.HasField("raw_data") else []) + [name for name, _ in held]
    if tensor.data_location == onnx.TensorProto.EXTERNAL and places:
        places.insert(0, "external data")
    if len(places) > 1:
        return (
            f"it holds its values twice ({places[0]} and {places[1]}); ONNX reads one of them and tools disagree on "
            "which. Re-save the tensor with its values in one field (onnx.numpy_helper.from_array)."
        )
    expected = expected_nbytes(tensor)
    if tensor.data_location == onnx.TensorProto.EXTERNAL or expected is None:
        return None
    if tensor.HasField("raw_data"):
        return size_problem(tensor, "raw_data", len(tensor.raw_data))
    if len(held) == 1:
        return count_problem(tensor, *held[0])
    if not held and expected:
        return (
            f"it holds no data, but shape {list(tensor.dims)} of {data_type_name(tensor.data_type)} "
            f"needs {expected} bytes; {_CORRUPT}"
        )
    return None


def count_problem(tensor: onnx.TensorProto, field_name: str, count: int) -> str | None:
    """Why a typed field holding ``count`` values does not fit the tensor's shape and type, or None."""
    expected = expected_nbytes(tensor)
    if expected is None:
        return None
    allowed = {elements(tensor) * (2 if tensor.data_type in _COMPLEX else 1)}
    if expected < elements(tensor):  # 2- and 4-bit types: one packed byte per int32_data entry
        allowed.add(expected)
    if count not in allowed:
        return (
            f"its {field_name} holds {count} values, but shape {list(tensor.dims)} of "
            f"{data_type_name(tensor.data_type)} needs {min(allowed)}; {_CORRUPT}"
        )
    return None


def size_problem(tensor: onnx.TensorProto, field_name: str, length: int) -> str | None:
    expected = expected_nbytes(tensor)
    if expected is None or expected == length:
        return None
    return (
        f"its {field_name} holds {length} bytes, but shape {list(tensor.dims)} of "
        f"{data_type_name(tensor.data_type)} needs {expected}; {_CORRUPT}"
    )


def check_inline_data(all_scopes: list[Scope], prefix: str = "", main_untyped: bool = False) -> None:
    """Refuse a model whose inline tensor data is not as long as its shape and type say.

    ``main_untyped``: the main graph's initializers are known to hold no typed field
    (``typed_data.main_initializers_are_untyped``), so theirs are not asked one by one."""
    widths = BYTE_WIDTHS
    for scope in all_scopes:
        untyped = main_untyped and scope is all_scopes[0]
        for tensor in scope.initializers if untyped else ():
            if tensor.HasField("raw_data"):
                width = widths.get(tensor.data_type)
                if width and len(tensor.raw_data) == math.prod(tensor.dims) * width:
                    continue  # the common case: a whole number of bytes, as long as the shape says
            _check_one(all_scopes, tensor, prefix)
        for tensor in scope.attribute_tensors if untyped else iter_tensors(None, [scope]):
            if (tensor.HasField("raw_data") and not any(map(len, _typed_fields(tensor)))
                    and len(tensor.raw_data) == expected_nbytes(tensor)):
                continue  # the common case, decided without building a message
            _check_one(all_scopes, tensor, prefix)


def _check_one(all_scopes: list[Scope], tensor: onnx.TensorProto, prefix: str) -> None:
    problem = inline_data_problem(tensor)
    if problem:
        raise ConversionError(f"{prefix}{describe(all_scopes, tensor)}: {problem}")


KNOWN_TYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def unknown_types(all_scopes: list[Scope]) -> list[str]:
    """One line per tensor whose data type this onnx does not know: nothing can check or convert it."""
    return [
        f"{describe(all_scopes, tensor)} has data type {tensor.data_type}, which onnx {onnx.__version__} does not "
        "know, so the model cannot be checked or converted. Upgrade onnx (pip install -U onnx), or re-export the "
        "model with standard ONNX types."
        for tensor in iter_tensors(None, all_scopes)
        if tensor.data_type not in KNOWN_TYPES
    ]


# --- naming the bad field: a walk over every string field (only when one is bad) --------------

_TEXT_FIELDS: dict[str, list[tuple[str, bool, bool]]] = {}


def _text_fields(descriptor) -> list[tuple[str, bool, bool]]:
    found = _TEXT_FIELDS.get(descriptor.full_name)
    if found is None:
        kinds = {FieldDescriptor.TYPE_STRING: False, FieldDescriptor.TYPE_MESSAGE: True}
        found = [(f.name, is_repeated(f), kinds[f.type]) for f in descriptor.fields if f.type in kinds]
        _TEXT_FIELDS[descriptor.full_name] = found
    return found


def is_repeated(field) -> bool:
    """Whether a protobuf field descriptor is a repeated field, on every protobuf this supports."""
    if hasattr(field, "is_repeated"):  # protobuf 5.28+; ``label`` is gone in 7
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


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
