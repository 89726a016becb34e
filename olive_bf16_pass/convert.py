"""The public entry points: read, upgrade, select, edit, write, report. Glue only."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import onnx

from olive_bf16_pass import checking, graph, selection, traversal, validation
from olive_bf16_pass.errors import ConversionError, one_line
from olive_bf16_pass.filters import unmatched_filters
from olive_bf16_pass.gc_pause import gc_paused
from olive_bf16_pass.io.source import SourceModel, read_model
from olive_bf16_pass.io.streamer import Conversion, Progress, Streamer
from olive_bf16_pass.io.writer import ExternalDataSpec, write_model
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.report import Report, TensorRecord

logger = logging.getLogger(__name__)

UPGRADE_TARGET = graph.MIN_OPSET  # the smallest change that gives Cast from bfloat16


@gc_paused()
def convert_model(model: onnx.ModelProto, options: ConversionOptions | None = None) -> tuple[onnx.ModelProto, Report]:
    """Convert an in-memory model with its data loaded; the caller's model is not modified."""
    options = options or ConversionOptions()
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in traversal.iter_tensors(model)):
        raise ConversionError(
            "the model's external data is not loaded. Use onnx.load(path) (which loads it) or convert_file()."
        )
    work = _copy(model)
    started = time.perf_counter()
    all_scopes = traversal.scopes(work)  # a file's names and data are checked when it is read
    validation.check_names(work, all_scopes)
    validation.check_inline_data(all_scopes)
    work, upgraded = upgrade_opset(work, options)
    report, converted = _edit(work, options, all_scopes if upgraded is None else None)
    report.opset_upgrade = upgraded
    report.input_fails_checker = _check(_copy(work), lambda: _copy(model))
    _finish(report, converted)
    report.seconds = time.perf_counter() - started
    return work, report


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
    size_threshold: int = 1024,
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
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst) and not in_place:
        raise ConversionError(f"{dst}: the output is the input. Choose another output path, or pass in_place=True.")
    started = time.perf_counter()
    source = read_model(src)
    bytes_before = source.file_bytes  # before an in-place write replaces the input
    if not in_place:
        _refuse_overwriting_input(source, dst, external_data_name if save_as_external_data else None)
    source.model, upgraded = upgrade_opset(source.model, options)
    report, converted = _edit(source.model, options, source.scopes if upgraded is None else None)
    report.opset_upgrade = upgraded
    spec = (
        ExternalDataSpec(external_data_name, size_threshold, convert_attribute) if save_as_external_data else None
    )
    conversions = {id(c.definition.tensor): Conversion(c.definition.tensor, c.stats) for c in converted if c.on_disk}
    streamer = Streamer(source.where, options.rounding, options.saturate)
    streamer.progress = progress
    written = write_model(
        source.model,
        dst,
        streamer,
        conversions,
        spec,
        check=lambda tmp: setattr(  # the input's own checker fault, when it is kept
            report, "input_fails_checker", _check(tmp, lambda: read_model(src).model)
        ),
        all_scopes=source.scopes if upgraded is None else None,
    )
    _finish(report, converted)
    report.source = str(src)
    report.destination = [str(p) for p in written]
    report.file_bytes_before = bytes_before
    report.file_bytes_after = sum(p.stat().st_size for p in written)
    report.seconds = time.perf_counter() - started
    return report


def upgrade_opset(model: onnx.ModelProto, options: ConversionOptions) -> tuple[onnx.ModelProto, list[int] | None]:
    """Models below opset 13 (no Cast from bfloat16) are upgraded with onnx's version converter.

    It runs on the skeleton, so memory stays bounded: tensors on disk stay references.
    Returns the model and ``[old, new]`` when it changed.
    """
    opset = graph.main_opset(model)
    if opset is None or opset >= graph.MIN_OPSET:
        return model, None
    how = (
        "Upgrade it first (onnx.version_converter.convert_version(model, 17) or Olive's "
        "OnnxOpVersionConversion pass)"
    )
    if not options.upgrade_opset:
        raise ConversionError(
            f"the model uses ONNX opset {opset}; BF16 needs opset {graph.MIN_OPSET} or later (Cast from bfloat16). "
            f"{how}, or let the converter upgrade it (upgrade_opset=True, the default)."
        )
    try:
        upgraded = onnx.version_converter.convert_version(model, UPGRADE_TARGET)
    except Exception as exc:  # noqa: BLE001 - onnx raises RuntimeError, ValueError, ConvertError...
        raise ConversionError(
            f"the model uses ONNX opset {opset} and onnx's version converter could not upgrade it to "
            f"{UPGRADE_TARGET} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). {how} with a newer "
            "exporter, then convert the result."
        ) from exc
    logger.warning("the model used ONNX opset %d; upgraded to %d (Cast from bfloat16 needs 13).", opset, UPGRADE_TARGET)
    return upgraded, [opset, UPGRADE_TARGET]


def _refuse_overwriting_input(source: SourceModel, dst: Path, data_name: str | None) -> None:
    """The output's files (model, external data) must not replace any file the input reads."""
    outputs = [dst, dst.parent / (data_name or f"{dst.name}.data")]
    for out in outputs:
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


def _edit(
    model: onnx.ModelProto, options: ConversionOptions, all_scopes: list[traversal.Scope] | None = None
) -> tuple[Report, list[graph.Converted]]:
    all_scopes = all_scopes or traversal.scopes(model)
    sparse = [repr(t.values.name) if t.values.name else "?" for scope in all_scopes if not scope.is_function
              for t in scope.body.sparse_initializer]
    if sparse:
        raise ConversionError(
            f"the model has sparse initializers ({', '.join(sparse[:3])}); they are not supported. "
            "Densify them first (onnx.numpy_helper / onnx-ir), then convert."
        )
    validation.check_types(all_scopes)
    found = traversal.definitions(all_scopes)
    weight_bytes = _weight_bytes(all_scopes, found)
    chosen, skipped = selection.select(model, all_scopes, found, options)
    if options.has_filters:  # the model's names are gathered only to check filters that were given
        nodes = [node for scope in all_scopes for node in scope.body.node]
        for line in unmatched_filters(
            options, (d.name for d in found), (n.name for n in nodes), (n.op_type for n in nodes)
        ):
            logger.warning("%s", line)
    already = any(s.reason == "already bfloat16" for s in skipped)  # converting twice equals converting once
    if not chosen and not already and any(s.reason.startswith("dtype float16") for s in skipped):
        raise ConversionError(
            "the model's weights are float16 and none are float32: BF16 conversion starts from an FP32 model. "
            "Convert the FP32 export instead."
        )
    converted = graph.apply(model, all_scopes, chosen, options)
    saved = sum(c.definition.size * 2 for c in converted)  # 4 bytes become 2
    report = Report(
        skipped=skipped,
        weight_bytes_before=weight_bytes,
        weight_bytes_after=weight_bytes - saved,
        options=options.to_dict(),
    )
    return report, converted


def _weight_bytes(all_scopes: list[traversal.Scope], found: list[traversal.Definition]) -> int:
    """Bytes of every tensor's data; the definitions' sizes are known already."""
    total = sum(traversal.expected_nbytes(d.tensor, d.size) or 0 for d in found)
    defined = {id(d.tensor) for d in found}
    return total + sum(
        traversal.expected_nbytes(t) or 0 for s in all_scopes for t in s.attribute_tensors if id(t) not in defined
    )


def _finish(report: Report, converted: list[graph.Converted]) -> None:
    """One record per converted tensor, once its figures are final (those on disk round as they stream)."""
    report.converted = [
        TensorRecord(
            c.definition.name, c.stored_name, c.definition.kind, list(c.definition.tensor.dims),
            c.definition.size * 4, c.definition.size * 2, c.widened, c.definition.scope.label,
            c.stats.max_abs_error, c.stats.max_rel_error, c.stats.nan_count, c.stats.inf_count,
            c.stats.saturated_count, c.stats.overflow_count,
        )
        for c in converted
    ]


def _check(result: onnx.ModelProto | Path, load_original) -> str | None:
    """Refuse to hand back a model that fails onnx.checker, unless its input already failed it.

    A fault the conversion introduced is refused (ConversionError; nothing is written). An input
    that already fails the full checker is still converted, since many exported models fail the
    strict checker (full shape inference) yet run: the output keeps that fault, a warning names
    the checker's message about the input, and it is returned for ``Report.input_fails_checker``
    (None when the output passes). The input is checked only when the output fails, so a passing
    conversion costs no second check.
    """
    try:
        checking.check_written(result) if isinstance(result, Path) else checking.check(result)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        try:
            checking.check(load_original())
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as original:
            message = one_line(original)
            message = message if len(message) <= 400 else message[:397] + "..."
            logger.warning(
                "the input model already fails onnx.checker (%s); converted anyway, and the output keeps that "
                "fault. Runtimes often load such models, but fix the export to get one that passes.",
                message,
            )
            return message
        raise ConversionError(
            f"the converted model fails onnx.checker, so it was not written: {one_line(exc)}. The input passes it, "
            "so this is a bug in the converter: please report it with the model (or its shapes)."
        ) from exc
    return None
