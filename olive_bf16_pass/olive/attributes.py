"""What OnnxFloatToBFloat16 records about a conversion, and where the evaluators find it.

Olive's OrtTransformersOptimization builds a Hugging Face model wrapper from ANY non-empty
``model_attributes`` (and crashes on an ONNX input that has none). So the pass never makes empty
attributes non-empty: its record lives in the output model's ``metadata_props`` under the key
``olive_bf16_pass`` (JSON), appended to the file without rewriting it, and, only where the input
model already had attributes (a Hugging Face export), also in ``model_attributes["olive_bf16_pass"]``.
Models made by older versions carry ``model_attributes["bf16_source_model_path"]``; it is still read.

Imports nothing but the standard library (and protowire.py, which imports only it): the evaluators
import this at every ``import olive``.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from olive_bf16_pass.protowire import LEN, Truncated, fields, len_field

__all__ = [
    "RECORD_KEY", "SOURCE_MODEL_ATTRIBUTE", "append_record", "bf16_tensors", "conversion_record", "read_metadata", "source_model_path", "undone_message",
]

RECORD_KEY = "olive_bf16_pass"  # metadata_props / model_attributes key of the conversion record
SOURCE_MODEL_ATTRIBUTE = "bf16_source_model_path"  # the key older versions wrote to model_attributes

_METADATA_PROPS = 14  # ModelProto.metadata_props
_KEY, _VALUE = 1, 2  # StringStringEntryProto.key / .value


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model file's metadata_props, read by skipping over the graph (no model load); {} for a file
    that is not a whole protobuf message."""
    props: dict[str, str] = {}
    with open(path, "rb") as f:
        if Path(path).stat().st_size == 0:
            return props
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                for field, wire, _, start, end in fields(buf, 0, len(buf)):
                    if field == _METADATA_PROPS and wire == LEN:
                        entry = {number: bytes(buf[s:e]).decode("utf-8", "replace")
                                 for number, _, _, s, e in fields(buf, start, end)}
                        props[entry.get(_KEY, "")] = entry.get(_VALUE, "")
            except Truncated:  # not a model file we understand; no record
                return {}
    return props


def append_record(path: str | Path, record: Mapping[str, Any]) -> None:
    """Add ``metadata_props[olive_bf16_pass] = json(record)`` to the model file.

    A protobuf message may repeat a repeated field anywhere, so the entry is appended to the file
    (O(1), the weights untouched). Where the model already has the key (a converted model converted
    again), the model is rewritten with onnx instead, so the key stays unique (onnx.checker).
    """
    value = json.dumps(dict(record), sort_keys=True)
    if RECORD_KEY in read_metadata(path):
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == RECORD_KEY:
                prop.value = value
        onnx.save(model, str(path))
        return
    entry = _string_field(_KEY, RECORD_KEY) + _string_field(_VALUE, value)
    with open(path, "ab") as f:
        f.write(len_field(_METADATA_PROPS, len(entry)) + entry)


def _string_field(field: int, text: str) -> bytes:
    data = text.encode()
    return len_field(field, len(data)) + data


def _model_file(model: Any) -> str | None:
    path = getattr(model, "model_path", None)
    if not path:
        return None
    path = Path(path)
    if path.is_dir():
        name = getattr(model, "onnx_file_name", None)
        candidates = [path / name] if name else sorted(path.glob("*.onnx"))
        path = candidates[0] if candidates else path
    return str(path) if path.is_file() else None


def conversion_record(model_or_attributes: Any) -> dict[str, Any]:
    """The pass's record of a model's conversion ({} when there is none).

    Takes a model handler (its ``model_attributes``, then its file's metadata) or a plain
    ``model_attributes`` mapping.
    """
    if isinstance(model_or_attributes, Mapping):
        attributes, model = model_or_attributes, None
    else:
        attributes, model = getattr(model_or_attributes, "model_attributes", None) or {}, model_or_attributes
    record = attributes.get(RECORD_KEY)
    if isinstance(record, Mapping):
        return dict(record)
    if attributes.get(SOURCE_MODEL_ATTRIBUTE):  # written by older versions
        return {"source_model_path": attributes[SOURCE_MODEL_ATTRIBUTE]}
    path = _model_file(model) if model is not None else None
    if path:
        try:
            text = read_metadata(path).get(RECORD_KEY)
        except (OSError, IndexError, ValueError):
            text = None
        if text:
            try:
                return dict(json.loads(text))
            except ValueError:
                return {}
    return {}


def source_model_path(model_or_attributes: Any) -> str | None:
    """The FP32 model a BF16 model was converted from, or None where nothing recorded it."""
    return conversion_record(model_or_attributes).get("source_model_path") or None


def bf16_tensors(path: str | Path) -> tuple[int, int]:
    """(BF16 tensors in every scope, bytes of the model's files), read as a skeleton: the weights stay
    on disk, so memory stays bounded whatever the model's size."""
    import onnx

    from olive_bf16_pass.io.source import read_model
    from olive_bf16_pass.traversal import iter_tensors

    source = read_model(path)
    count = sum(t.data_type == onnx.TensorProto.BFLOAT16 for t in iter_tensors(source.model, source.scopes))
    return count, source.file_bytes


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def undone_message(model: Any) -> str | None:
    """One line when a pass after OnnxFloatToBFloat16 folded BF16 weights back to FP32, else None.

    "a later pass undid the BF16 conversion: 45 BF16 tensors became 2, 46 MB became 67 MB ..."
    """
    record = conversion_record(model)
    want = record.get("bf16_tensors")
    path = _model_file(model)
    if not want or not path:
        return None
    try:
        have, size = bf16_tensors(path)
    except ValueError:  # a model the reader refuses: the evaluation that loads it says why
        return None
    if have >= want:
        return None
    before = record.get("bytes_after")
    sizes = f", {_mb(before)} became {_mb(size)}" if before else f"; the model is now {_mb(size)}"
    return (
        f"a later pass undid the BF16 conversion: {want} BF16 tensors became {have}{sizes}. Run"
        " OnnxFloatToBFloat16 last, after the passes that optimize or quantize the graph."
    )
