"""onnx.checker on what was written, without reading the weights back into memory.

``onnx.checker.check_model`` on a proto resolves external data against the working directory,
and loading the written model would cost its size in memory. So the check runs on the skeleton
read back from the written file, made structural: tensors whose data is elsewhere become typed
graph inputs (initializers) or a Constant holding an empty sparse tensor of the same type and
shape (Constant values). Shape inference is unaffected: the tensors it reads (shapes, axes) are
small and stay inline.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.dtypes import expected_nbytes
from olive_bf16_pass.io.source import INLINE_LIMIT
from olive_bf16_pass.io.wire import SkeletonScanner
from olive_bf16_pass.traversal import constant_value, scopes
from olive_bf16_pass.validation import TYPED_FIELDS

__all__ = ["check", "check_written", "structure_only"]


def check_written(path: Path) -> None:
    """The full check of the written .onnx, its big tensors' data left on disk."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        skeleton = SkeletonScanner(buf, INLINE_LIMIT).scan()
    if _EXTERNAL_MARK not in skeleton:  # nothing lifted, nothing elsewhere: the checker reads the file as it is
        check(skeleton)
        return
    model = onnx.ModelProto()
    model.ParseFromString(skeleton)
    check(model)


# the key of an external-data location entry, as serialized: every tensor whose data is elsewhere (written
# so, or lifted by the scanner) has one; a name holding these bytes only sends a model the longer way
_EXTERNAL_MARK = onnx.StringStringEntryProto(key="location").SerializeToString()


def _elsewhere(tensor: onnx.TensorProto) -> bool:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return True
    if tensor.HasField("raw_data"):
        return False
    return not any(len(getattr(tensor, name)) for name in TYPED_FIELDS) and bool(expected_nbytes(tensor))


def structure_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, changed so that no tensor needs data from elsewhere (pass a copy you own)."""
    # the main graph's inputs: a subgraph's inputs are its formal parameters (an If branch has
    # none), so a subgraph's stripped tensor becomes an outer-scope input, which it may read
    inputs = {v.name for v in model.graph.input}
    for scope in scopes(model):
        initializers = scope.initializers
        for index in [i for i, tensor in enumerate(initializers) if _elsewhere(tensor)][::-1]:
            tensor = initializers[index]
            if tensor.name not in inputs:
                inputs.add(tensor.name)
                model.graph.input.append(_value_info(tensor))
            del initializers[index]
        if not any(map(_elsewhere, scope.attribute_tensors)):
            continue
        for node in scope.body.node:
            value = constant_value(node)
            if value is not None and _elsewhere(value) and node.output:
                node.CopyFrom(_shaped_like(value, node.output[0]))
    return model


def _shaped_like(value: onnx.TensorProto, output: str) -> onnx.NodeProto:
    """A Constant of the same type and shape as ``value`` that holds no data: an empty sparse tensor."""
    values = onnx.TensorProto(name=f"{output}__values", data_type=value.data_type, dims=[0])
    indices = onnx.TensorProto(name=f"{output}__indices", data_type=onnx.TensorProto.INT64, dims=[0])
    sparse = onnx.SparseTensorProto(values=values, indices=indices, dims=value.dims)
    attribute = onnx.AttributeProto(name="sparse_value", type=onnx.AttributeProto.SPARSE_TENSOR, sparse_tensor=sparse)
    return onnx.NodeProto(op_type="Constant", output=[output], attribute=[attribute])


def _value_info(tensor: onnx.TensorProto) -> onnx.ValueInfoProto:
    """What onnx.helper.make_tensor_value_info makes of the tensor's name, type and dims (without onnx.helper,
    whose import costs ml_dtypes')."""
    info = onnx.ValueInfoProto(name=tensor.name)
    info.type.tensor_type.elem_type = tensor.data_type
    info.type.tensor_type.shape.SetInParent()  # a shape of no dims: rank 0, not unknown
    for size in tensor.dims:
        info.type.tensor_type.shape.dim.add().dim_value = size
    return info


def check(model: onnx.ModelProto | bytes) -> None:
    """The full onnx.checker (with strict shape inference), on ``model`` made structural (pass a
    copy you own), or on serialized bytes whose tensors hold their data."""
    onnx.checker.check_model(model if isinstance(model, bytes) else structure_only(model), full_check=True)
