"""What OnnxFloatToBFloat16 records about a conversion, and where the evaluators find it.

Olive's OrtTransformersOptimization builds a Hugging Face model wrapper from ANY non-empty
``model_attributes`` (and crashes on an ONNX input that has none). So the pass never makes empty
attributes non-empty: its record lives in the output model's ``metadata_props`` under the key
``olive_bf16_pass`` (JSON), appended to the file without rewriting it, and, only where the input
model already had attributes (a Hugging Face export), also in ``model_attributes["olive_bf16_pass"]``.
Models made by older versions carry ``model_attributes["bf16_source_model_path"]``; it is still read.

Imports nothing but the standard library: the evaluators import this at every ``import olive``.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RECORD_KEY", "SOURCE_MODEL_ATTRIBUTE", "append_record", "bf16_tensors", "conversion_record", "read_metadata", "source_model_path", "undone_message",
]

RECORD_KEY = "olive_bf16_pass"  # metadata_props / model_attributes key of the conversion record
SOURCE_MODEL_ATTRIBUTE = "bf16_source_model_path"  # the key older versions wrote to model_attributes

_METADATA_PROPS = 14  # ModelProto.metadata_props
_KEY, _VALUE = 1, 2  # StringStringEntryProto.key / .value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model file's metadata_props, read by skipping over the graph (no model load)."""
    props: dict[str, str] = {}
    with open(path, "rb") as f:
        if Path(path).stat().st_size == 0:
            return props
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos, end = 0, len(buf)
            while pos < end:
                key, pos = _read_varint(buf, pos)
                field, wire = key >> 3, key & 7
                if wire == 0:
                    _, pos = _read_varint(buf, pos)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                elif wire == 2:
                    length, pos = _read_varint(buf, pos)
                    if field == _METADATA_PROPS:
                        entry, entry_end, k, v = pos, pos + length, "", ""
                        while entry < entry_end:
                            tag, entry = _read_varint(buf, entry)
                            size, entry = _read_varint(buf, entry)
                            text = bytes(buf[entry : entry + size]).decode("utf-8", "replace")
                            k, v = (text, v) if tag >> 3 == _KEY else (k, text)
                            entry += size
                        props[k] = v
                    pos += length
                else:  # not a model file we understand; no record
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
    entry = _len_field(_KEY, RECORD_KEY.encode()) + _len_field(_VALUE, value.encode())
    with open(path, "ab") as f:
        f.write(_len_field(_METADATA_PROPS, entry))


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
