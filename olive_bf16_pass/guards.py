"""The guards every command that writes a model shares (convert, emulate): one place for each refusal.

- ``checked_plan``: the plan, refused or warned about as a conversion must be;
- ``same_file`` and ``refuse_overwriting_input``: the output never replaces a file the input reads;
- ``check_output``: the written model passes onnx.checker, or fails with exactly the input's own fault.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from olive_bf16_pass import checking
from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError, one_line
from olive_bf16_pass.io.destination import Destination
from olive_bf16_pass.io.source import SourceModel
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.plan import Plan, make_plan
from olive_bf16_pass.traversal import Skeleton

__all__ = ["check_output", "checked_plan", "refuse_overwriting_input", "same_file"]

logger = logging.getLogger(__name__)


def checked_plan(skeleton: Skeleton, options: ConversionOptions) -> Plan:
    """The plan, refused or warned about as a conversion must be: a refusal raises, a warning is logged."""
    plan = make_plan(skeleton, options)
    plan.raise_if_refused()
    for line in plan.warnings:
        logger.warning("%s", line)
    if plan.opset_upgrade:
        logger.warning("the model used ONNX opset %d; upgraded to %d (Cast from bfloat16 needs 13).",
                       *plan.opset_upgrade)
    return plan


def refuse_overwriting_input(source: SourceModel, destination: Destination) -> None:
    """The output's files (model, external data) must not replace any file the input reads."""
    for out in (destination.model, destination.data):
        if any(same_file(i, out) for i in source.files):
            raise ConversionError(
                f"{out}: writing it would overwrite a file of the input model. Choose another output path "
                "or external data name, or pass in_place=True."
            )


def same_file(src: Path, dst: Path) -> bool:
    """Whether ``dst`` exists and is the file ``src`` (a link, another spelling of the path)."""
    try:
        return dst.exists() and os.path.samefile(src, dst)
    except OSError:
        return False


def check_output(result: onnx.ModelProto | Path, load_original) -> str | None:
    """Refuse to hand back a model that fails onnx.checker, unless it fails with exactly the input's own fault.

    A fault the conversion introduced is refused (ConversionError; nothing is written). An input
    that already fails the full checker is still converted, since many exported models fail the
    strict checker (full shape inference) yet run: the output may keep that fault and no other,
    so the checker's message about the output must be its message about the input. A warning names
    it, and it is returned for ``Report.input_fails_checker`` (None when the output passes). The
    input is checked only when the output fails, so a passing conversion costs no second check.
    """
    try:
        checking.check_written(result) if isinstance(result, Path) else checking.check(result)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        output_fault = one_line(exc)
        try:
            checking.check(load_original())
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as original:
            message = one_line(original)
            if message != output_fault:
                raise ConversionError(
                    f"the converted model fails onnx.checker with a fault the input does not have, so it was not "
                    f"written: {_cut(output_fault)} (the input's own fault: {_cut(message)}). Fix the input's fault "
                    "first (it may hide the cause), or report it with the model (or its shapes)."
                ) from exc
            logger.warning(
                "the input model already fails onnx.checker (%s); converted anyway, and the output keeps that "
                "fault and no other. Runtimes often load such models, but fix the export to get one that passes.",
                _cut(message),
            )
            return _cut(message)
        raise ConversionError(
            f"the converted model fails onnx.checker, so it was not written: {output_fault}. The input passes it, "
            "so this is a bug in the converter: please report it with the model (or its shapes)."
        ) from exc
    return None


def _cut(message: str) -> str:
    return message if len(message) <= 400 else message[:397] + "..."
