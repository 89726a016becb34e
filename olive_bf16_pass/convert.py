"""The public entry points: read, select, edit, write, report. Glue only."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import onnx

from olive_bf16_pass import graph, model_io, selection
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.report import Report, SkippedRecord, TensorRecord
from olive_bf16_pass.rounding import RoundingStats

logger = logging.getLogger(__name__)


def convert_model(model: onnx.ModelProto, options: ConversionOptions | None = None) -> tuple[onnx.ModelProto, Report]:
    """Convert an in-memory model with its data loaded; the caller's model is not modified."""
    options = options or ConversionOptions()
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model_io.iter_tensors(model)):
        raise ConversionError(
            "the model's external data is not loaded. Use onnx.load(path) (which loads it) or convert_file()."
        )
    work = onnx.ModelProto()
    work.CopyFrom(model)
    started = time.perf_counter()
    stats: dict[str, RoundingStats] = {}
    report = _edit(work, options, stats)
    _check(work, lambda: model)
    _finish(report, stats)
    report.seconds = time.perf_counter() - started
    return work, report


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    options: ConversionOptions | None = None,
    *,
    save_as_external_data: bool = False,
    external_data_name: str | None = None,
    size_threshold: int = 1024,
    in_place: bool = False,
    progress: model_io.Progress | None = None,
) -> Report:
    """Convert the model at ``src`` into ``dst``, streaming tensors; ``src`` is never modified.

    ``dst`` and its external data appear only when complete and checked. Models whose output
    would pass 2 GB are written with external data whatever ``save_as_external_data`` says.
    """
    options = options or ConversionOptions()
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst) and not in_place:
        raise ConversionError(f"{dst}: the output is the input. Choose another output path, or pass in_place=True.")
    started = time.perf_counter()
    source = model_io.read_model(src)
    bytes_before = source.file_bytes  # before an in-place write replaces the input
    if not in_place:
        _refuse_overwriting_input(source, dst, external_data_name if save_as_external_data else None)
    stats: dict[str, RoundingStats] = {}
    report = _edit(source.model, options, stats)
    spec = model_io.ExternalDataSpec(external_data_name, size_threshold) if save_as_external_data else None
    written = model_io.write_model(
        source.model,
        dst,
        source.base_dir,
        rounding=options.rounding,
        saturate=options.saturate,
        external=spec,
        stats=stats,
        check=lambda result: _check(result, lambda: model_io.read_model(src).model),
        progress=progress,
    )
    _finish(report, stats)
    report.source = str(src)
    report.destination = [str(p) for p in written]
    report.file_bytes_before = bytes_before
    report.file_bytes_after = sum(p.stat().st_size for p in written)
    report.seconds = time.perf_counter() - started
    return report


def _refuse_overwriting_input(source: model_io.SourceModel, dst: Path, data_name: str | None) -> None:
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


def _edit(model: onnx.ModelProto, options: ConversionOptions, stats: dict[str, RoundingStats]) -> Report:
    opset = graph.main_opset(model)
    if opset is not None and opset < graph.MIN_OPSET:
        raise ConversionError(
            f"the model uses ONNX opset {opset}; BF16 needs opset {graph.MIN_OPSET} or later (Cast from bfloat16). "
            "Upgrade it first, e.g. onnx.version_converter.convert_version(model, 17) or Olive's "
            "OnnxOpVersionConversion pass."
        )
    sparse = [t.values.name or "?" for g in model_io.iter_graphs(model.graph) for t in g.sparse_initializer]
    if sparse:
        raise ConversionError(
            f"the model has sparse initializers ({', '.join(sparse[:3])}); they are not supported. "
            "Densify them first (onnx.numpy_helper / onnx-ir), then convert."
        )
    weight_bytes = sum(model_io.expected_nbytes(t) or 0 for t in model_io.iter_tensors(model))
    chosen, skipped = selection.select(model, options)
    if not chosen and any(s.reason.startswith("dtype float16") for s in skipped):
        raise ConversionError(
            "the model's weights are float16 and none are float32: BF16 conversion starts from an FP32 model. "
            "Convert the FP32 export instead."
        )
    records = [
        TensorRecord(
            name=c.name,
            stored_name="",
            kind=c.kind,
            shape=list(c.tensor.dims),
            bytes_before=c.elements * 4,
            bytes_after=c.elements * 2,
            widened="",
        )
        for c in chosen
    ]
    done = graph.apply(model, chosen, options, stats)
    for record in records:
        record.stored_name, record.widened = done[record.name]
    saved = sum(r.bytes_before - r.bytes_after for r in records)
    return Report(
        converted=records,
        skipped=[SkippedRecord(s.name, s.reason, s.nbytes) for s in skipped],
        weight_bytes_before=weight_bytes,
        weight_bytes_after=weight_bytes - saved,
        options=options.to_dict(),
    )


_STAT_FIELDS = ("max_abs_error", "max_rel_error", "nan_count", "inf_count", "saturated_count", "overflow_count")


def _finish(report: Report, stats: dict[str, RoundingStats]) -> None:
    for record in report.converted:
        s = stats.get(record.stored_name)
        for name in _STAT_FIELDS if s is not None else ():
            setattr(record, name, getattr(s, name))


def _check(result: onnx.ModelProto, load_original) -> None:
    """Refuse to hand back a model that fails onnx.checker when its source passed."""
    try:
        onnx.checker.check_model(model_io.structure_only(result), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        try:
            onnx.checker.check_model(model_io.structure_only(load_original()), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
            logger.warning("the input model already fails onnx.checker; the output keeps that fault: %s", exc)
            return
        raise ConversionError(f"the converted model fails onnx.checker, so it was not written: {exc}") from exc
