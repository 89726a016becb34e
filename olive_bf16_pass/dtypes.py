"""ONNX data types: how many bytes a tensor's raw data holds, and a type's name for people.

Widths come from numpy and ml_dtypes, so packed sub-byte types (INT2, INT4, FLOAT4E2M1, ...) are
sized as onnx packs them; numpy's own types are known without importing onnx.helper (whose
import costs ml_dtypes').
"""

from __future__ import annotations

import math

import numpy as np

from olive_bf16_pass import lean_onnx as onnx

__all__ = ["BYTE_WIDTHS", "data_type_name", "elements", "expected_nbytes", "type_nbytes"]


def elements(tensor: onnx.TensorProto) -> int:
    return math.prod(tensor.dims)


def expected_nbytes(tensor: onnx.TensorProto, count: int | None = None) -> int | None:
    """Bytes of the tensor's raw data, or None for strings and types this onnx does not know.

    The element type comes from onnx, its width in bits from numpy / ml_dtypes, so packed
    sub-byte types (INT2, INT4, FLOAT4E2M1, FLOAT6E2M3, ...) are sized as onnx packs them.
    ``count``: its number of elements, when known.
    """
    return type_nbytes(tensor.data_type, elements(tensor) if count is None else count)


def type_nbytes(data_type: int, count: int) -> int | None:
    """Bytes of ``count`` elements of ``data_type`` as raw data (``expected_nbytes`` without the tensor)."""
    bits = _BITS.get(data_type)
    if bits is None:
        bits = _bits_of(data_type)
        _BITS[data_type] = bits
    if bits == 0:
        return None
    return (count * bits + 7) // 8


# numpy's own types, known without onnx.helper (whose import costs ml_dtypes'); the rest asks onnx
_T = onnx.TensorProto
_KNOWN_BITS: dict[int, int] = {
    _T.FLOAT: 32, _T.DOUBLE: 64, _T.FLOAT16: 16, _T.BFLOAT16: 16, _T.BOOL: 8, _T.COMPLEX64: 64, _T.COMPLEX128: 128,
    _T.INT8: 8, _T.INT16: 16, _T.INT32: 32, _T.INT64: 64, _T.UINT8: 8, _T.UINT16: 16, _T.UINT32: 32, _T.UINT64: 64,
    _T.STRING: 0, _T.UNDEFINED: 0,
}
_BITS = dict(_KNOWN_BITS)  # and the others, once asked
# bytes per element of the types whose elements are whole bytes: a size test that needs no rounding
BYTE_WIDTHS: dict[int, int] = {data_type: bits // 8 for data_type, bits in _KNOWN_BITS.items() if bits and bits % 8 == 0}


def _bits_of(data_type: int) -> int:
    """Bits per element of an ONNX data type; 0 when it has no fixed size here."""
    import ml_dtypes

    if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 0
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, ValueError, TypeError):  # a type newer than this onnx
        return 0
    if dtype.type.__module__.startswith("ml_dtypes"):  # may be narrower than its one-byte storage
        for info in (ml_dtypes.finfo, ml_dtypes.iinfo):
            try:
                return int(info(dtype).bits)
            except (ValueError, TypeError):
                continue
    return dtype.itemsize * 8


def data_type_name(data_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"unknown type {data_type}"
