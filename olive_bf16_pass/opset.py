"""The model's ONNX opset: BF16 needs 13 (Cast from bfloat16), and older models are upgraded to it.

The upgrade runs on the skeleton, so memory stays bounded: tensors on disk stay references. It
copies the model, so it returns a new Skeleton whose scopes are those of the copy.
"""

from __future__ import annotations

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError, one_line
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Skeleton

__all__ = ["MIN_OPSET", "main_opset", "upgrade"]

MIN_OPSET = 13  # Cast from bfloat16 exists from opset 13 on; also the upgrade's target (the smallest change)
_HOW = "Upgrade it first (onnx.version_converter.convert_version(model, 17) or Olive's OnnxOpVersionConversion pass)"


def main_opset(model: onnx.ModelProto) -> int | None:
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS:
            return opset.version
    return None


def upgrade(skeleton: Skeleton, options: ConversionOptions) -> tuple[Skeleton, list[int] | None]:
    """The skeleton at opset 13 or later, and ``[old, new]`` when it had to be upgraded."""
    opset = main_opset(skeleton.model)
    if opset is None or opset >= MIN_OPSET:
        return skeleton, None
    if not options.upgrade_opset:
        raise ConversionError(
            f"the model uses ONNX opset {opset}; BF16 needs opset {MIN_OPSET} or later (Cast from bfloat16). "
            f"{_HOW}, or let the converter upgrade it (upgrade_opset=True, the default)."
        )
    try:
        upgraded = onnx.version_converter.convert_version(skeleton.model, MIN_OPSET)
    except Exception as exc:
        raise ConversionError(
            f"the model uses ONNX opset {opset} and onnx's version converter could not upgrade it to "
            f"{MIN_OPSET} ({type(exc).__name__}: {one_line(exc)[:300]}). {_HOW} with a newer exporter, then convert "
            "the result."
        ) from exc
    return Skeleton.of(upgraded, skeleton.dropped), [opset, MIN_OPSET]
