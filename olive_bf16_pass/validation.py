"""What a model must hold to be converted: each name defined once, data as long as its shape says,
types this onnx knows (names that are text: strict_text.py). Graph-only (no file system): the
reader checks files with it, and ``convert_model`` checks in-memory models.
"""

from __future__ import annotations

import math
import operator

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.dtypes import BYTE_WIDTHS, data_type_name, elements, expected_nbytes
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.traversal import Scope, iter_tensors

__all__ = [
    "KNOWN_TYPES", "TYPED_FIELDS", "check_inline_data", "check_single_definitions", "check_sparse_inline",
    "count_problem", "describe", "inline_data_problem", "is_repeated", "size_problem", "unknown_types",
]

_CORRUPT = "the file is corrupt. Re-export the model (or download it again)."


def check_single_definitions(all_scopes: list[Scope], prefix: str = "") -> None:
    """Refuse a scope that defines a name twice (two initializers ``W``, an initializer and a node output).

    ONNX graphs define each name once; runtimes that load such a model differ on which definition a
    reader gets, so no converter can tell which tensor is meant, and an edit would make it worse.
    A graph input may share its initializer's name (an overridable default): that is one value.
    """
    for scope in all_scopes:
        inputs = set(scope.body.input) if scope.is_function else {v.name for v in scope.body.input}
        if _defined_once(scope, inputs):
            continue  # the walk below, which names the culprit, is not needed
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


def _defined_once(scope: Scope, inputs: set[str]) -> bool:
    """Whether every initializer and node output of ``scope`` is a name of its own, told by the names'
    hashes: equal names hash alike, so distinct hashes are distinct names (the same hash only sends
    the caller to compare the names). 8 bytes a name, where a set of 100,000 names costs 20 MB."""
    initializers = scope.initializers
    named = np.fromiter(map(hash, map(_NAME, initializers)), np.int64, count=len(initializers))
    outputs = _output_hashes(scope.body.node)
    if outputs is None:
        return False
    defined = np.concatenate([named, outputs])
    defined.sort()
    if defined.size > 1 and bool((defined[1:] == defined[:-1]).any()):
        return False
    return not np.isin(outputs, np.fromiter(map(hash, inputs), np.int64, count=len(inputs))).any()


def _output_hashes(nodes) -> np.ndarray | None:
    """The hashes of every node output name that is not empty (hash('') is 0); None when a name hashes to 0
    too. Most nodes have one output: indexing it is twice as fast as iterating upb's container."""
    first = np.fromiter((hash(out[0]) if len(out) == 1 else 0 for out in map(_OUTPUT, nodes)), np.int64,
                        count=len(nodes))
    more = []
    for index in np.flatnonzero(first == 0).tolist():  # no output, several, or an empty name
        for name in nodes[index].output:
            if name:
                more.append(hash(name))
                if more[-1] == 0:
                    return None
    return np.concatenate([first[first != 0], np.array(more, np.int64)])


_NAME, _OUTPUT = operator.attrgetter("name"), operator.attrgetter("output")


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


def is_repeated(field) -> bool:
    """Whether a protobuf field descriptor is a repeated field, on every protobuf this supports."""
    if hasattr(field, "is_repeated"):  # protobuf 5.28+; ``label`` is gone in 7
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED
