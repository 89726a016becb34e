"""The public entry points, one way through: read -> plan -> edit -> stream -> check -> report. Glue only."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import onnx

from olive_bf16_pass import checking, graph, traversal, validation
from olive_bf16_pass.errors import ConversionError, one_line
from olive_bf16_pass.gc_pause import gc_paused
from olive_bf16_pass.io.destination import Destination
from olive_bf16_pass.io.source import SourceModel, read_model
from olive_bf16_pass.io.streamer import Conversion, Progress, Streamer
from olive_bf16_pass.io.writer import DEFAULT_SIZE_THRESHOLD, ExternalDataSpec, write_model
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.plan import Plan, make_plan
from olive_bf16_pass.report import Report

__all__ = ["convert_file", "convert_model"]

logger = logging.getLogger(__name__)


@gc_paused()
def convert_model(model: onnx.ModelProto, options: ConversionOptions | None = None) -> tuple[onnx.ModelProto, Report]:
    """Convert an in-memory model with its data loaded; the caller's model is not modified."""
    options = options or ConversionOptions()
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in traversal.iter_tensors(model)):
        raise ConversionError(
            "the model's external data is not loaded. Use onnx.load(path) (which loads it) or convert_file()."
        )
    started = time.perf_counter()
    work = _copy(model)
    skeleton = traversal.Skeleton.of(work, traversal.settle_attributes(work))
    validation.check_names(skeleton.model, skeleton.scopes)  # a file's names and data are checked when it is read
    validation.check_inline_data(skeleton.scopes)
    validation.check_single_definitions(skeleton.scopes)
    plan = _plan(skeleton, options)
    converted = graph.apply(plan.skeleton.model, plan.skeleton.scopes, plan.chosen, options)
    fault = _check(_copy(plan.skeleton.model), lambda: _copy(model))
    report = Report.build(plan, converted, input_fails_checker=fault, seconds=time.perf_counter() - started)
    return plan.skeleton.model, report


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


@gc_paused()
def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    options: ConversionOptions | None = None,
    *,
    save_as_external_data: bool = False,
    external_data_name: str | None = None,
    size_threshold: int = DEFAULT_SIZE_THRESHOLD,
    convert_attribute: bool = False,
    in_place: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Convert the model at ``src`` into ``dst``, streaming tensors; ``src`` is never modified.

    ``dst`` and its external data appear only when complete and checked. Models whose output
    would pass 2 GB are written with external data whatever ``save_as_external_data`` says;
    ``convert_attribute`` puts large Constant values in the external data file too.
    """
    options = options or ConversionOptions()
    src = Path(src)
    destination = Destination(Path(dst), external_data_name if save_as_external_data else None)
    if _same_file(src, destination.model) and not in_place:
        raise ConversionError(
            f"{destination.model}: the output is the input. Choose another output path, or pass in_place=True."
        )
    started = time.perf_counter()
    source = read_model(src)
    bytes_before = source.file_bytes  # before an in-place write replaces the input
    if not in_place:
        _refuse_overwriting_input(source, destination)
    plan = _plan(source.skeleton, options)
    converted = graph.apply(plan.skeleton.model, plan.skeleton.scopes, plan.chosen, options)
    conversions = {id(c.definition.tensor): Conversion(c.definition.tensor, c.stats) for c in converted if c.on_disk}
    streamer = Streamer(source.where, options.rounding, options.saturate)
    streamer.progress = progress
    written = write_model(
        plan.skeleton,
        destination,
        streamer,
        conversions,
        ExternalDataSpec(size_threshold, convert_attribute) if save_as_external_data else None,
        check=lambda tmp: _check(tmp, lambda: read_model(src).model),  # the input's own fault, when kept
    )
    return Report.build(  # the streamed tensors' figures are final now
        plan,
        converted,
        source=str(src),
        destination=[str(p) for p in written.files],
        file_bytes_before=bytes_before,
        file_bytes_after=sum(p.stat().st_size for p in written.files),
        input_fails_checker=written.checked,
        seconds=time.perf_counter() - started,
    )


def _plan(skeleton: traversal.Skeleton, options: ConversionOptions) -> Plan:
    """The plan, refused or warned about as a conversion must be: a refusal raises, a warning is logged."""
    plan = make_plan(skeleton, options)
    plan.raise_if_refused()
    for line in plan.warnings:
        logger.warning("%s", line)
    if plan.opset_upgrade:
        logger.warning("the model used ONNX opset %d; upgraded to %d (Cast from bfloat16 needs 13).",
                       *plan.opset_upgrade)
    return plan


def _refuse_overwriting_input(source: SourceModel, destination: Destination) -> None:
    """The output's files (model, external data) must not replace any file the input reads."""
    for out in (destination.model, destination.data):
        if any(_same_file(i, out) for i in source.files):
            raise ConversionError(
                f"{out}: writing it would overwrite a file of the input model. Choose another output path "
                "or external data name, or pass in_place=True."
            )


def _same_file(src: Path, dst: Path) -> bool:
    try:
        return dst.exists() and os.path.samefile(src, dst)
    except OSError:
        return False


def _check(result: onnx.ModelProto | Path, load_original) -> str | None:
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
