"""The public entry points, one way through: read -> plan -> edit -> stream -> check -> report. Glue only."""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from pathlib import Path

from olive_bf16_pass import graph, guards, strict_text, traversal, validation
from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.gc_pause import gc_paused
from olive_bf16_pass.io.destination import Destination
from olive_bf16_pass.io.source import read_model
from olive_bf16_pass.io.streamer import Conversion, Progress, Streamer
from olive_bf16_pass.io.writer import DEFAULT_SIZE_THRESHOLD, ExternalDataSpec, stage_model
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.report import Report

__all__ = ["convert_file", "convert_model"]


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
    skeleton = traversal.Skeleton.read(work)
    strict_text.check_names(skeleton.model, skeleton.scopes)  # a file's names and data are checked when it is read
    validation.check_inline_data(skeleton.scopes)
    validation.check_single_definitions(skeleton.scopes)
    plan = guards.checked_plan(skeleton, options)
    converted = graph.apply(plan.skeleton.model, plan.skeleton.scopes, plan.chosen, options)
    fault = guards.check_output(_copy(plan.skeleton.model), lambda: _copy(model))
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
    if guards.same_file(src, destination.model) and not in_place:
        raise ConversionError(
            f"{destination.model}: the output is the input. Choose another output path, or pass in_place=True."
        )
    started = time.perf_counter()
    source = read_model(src)
    bytes_before = source.file_bytes  # before an in-place write replaces the input
    if not in_place:
        guards.refuse_overwriting_input(source, destination)
    plan = guards.checked_plan(source.skeleton, options)
    converted = graph.apply(plan.skeleton.model, plan.skeleton.scopes, plan.chosen, options)
    conversions = {id(c.definition.tensor): Conversion(c.definition.tensor, c.stats) for c in converted if c.on_disk}
    streamer = Streamer(source.where, options.rounding, options.saturate)
    streamer.progress = progress
    spec = ExternalDataSpec(size_threshold, convert_attribute) if save_as_external_data else None
    unconverted = source.file if not plan.chosen else None  # then the output may be the input's bytes again
    with stage_model(plan.skeleton, destination, streamer, conversions, spec, unconverted) as staged:
        report = Report.build(  # the streamed tensors' figures are final now
            plan,
            converted,
            source=str(src),
            destination=[str(p) for p in staged.files],
            file_bytes_before=bytes_before,
            file_bytes_after=staged.nbytes,
        )
        # the checker's memory grows with the graph: the skeleton's goes first
        del source, plan, converted, conversions, streamer
        gc.collect()  # the walk's objects hold cycles, and collection is paused during a conversion
        # the input's bytes again (nothing converted, the input canonical): no fault the input lacks, unchecked
        fault = None if staged.unchanged else guards.check_output(staged.model, lambda: read_model(src).model)
        staged.place()
    return dataclasses.replace(report, input_fails_checker=fault, seconds=time.perf_counter() - started)
