"""Property tests: random models converted in memory and through files, checked value by value.

The generator (``_fuzz_models.random_models``) makes random DAGs of MatMul, Add, Gather (tables
also read by MatMul, or by Gemm(transB=1) as a tied LM head), Conv, LayerNormalization,
Constant, If and calls of local functions (FunctionProto holding Constant nodes, called from the
main graph and from If branches), with random initializer shapes and shared initializers, and
the name hazards a converter that tracks tensors by name trips on: sibling If branches each with
their own initializer under one name (different values), sibling Constants with one output name,
Constant value tensors named "" or like an initializer elsewhere, function Constants named like
main-graph initializers. ``file_forms`` saves each input as a single file or with onnx's external
data (size thresholds 0/64/1024/4096, Constant values external or not) and writes the output
either way, beside the input or elsewhere, reading tensor bytes as shipped or all in small chunks,
through maps of the file or with read(). ``test_large_tensors`` adds one tensor a little over a
streaming chunk (16 MB), of varied values, so a chunk written at the wrong offset shows.

Every example must:

- pass onnx.checker.check_model(full_check=True), the written file by path;
- on ONNX Runtime CPU, give the outputs of the *original* model whose reported tensors were
  replaced by their BF16-rounded values, to float32 precision (not merely BF16 tolerance of the
  FP32 outputs: a swapped or misplaced tensor, or one converted without being reported, fails);
- be a fixed point: converting the converted model changes nothing;
- be the same model whether converted in memory or through files, whatever the file forms;
- leave its input files byte for byte as they were, and read external data only from files the
  conversion wrote.

Knobs, for a long local hunt (defaults keep this file under a minute on CI's 2 cores)::

    BF16_FUZZ_EXAMPLES=2000 BF16_FUZZ_LARGE_EXAMPLES=20 python -m pytest tests/test_fuzz.py -x

``BF16_FUZZ_EXAMPLES`` (default 40): small random models per run of test_random_models.
``BF16_FUZZ_LARGE_EXAMPLES`` (default 2): models with one tensor over a chunk (~17 MB each).
``BF16_FUZZ_SHRINK=1``: shrink a failing small example to a minimal one (minutes); off by default,
so a failure reports its first example at once. Large examples are never shrunk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import (
    BATCH,
    IDS,
    assert_data_is_own,
    assert_same,
    bf16_reference,
    canonical,
    file_forms,
    random_models,
    reading_as,
    run_proto,
    run_session,
    save_input,
    scopes,
    sha256,
)
from hypothesis import HealthCheck, Phase, find, given, settings

from olive_bf16_pass.convert import convert_file, convert_model
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.options import ConversionOptions

EXAMPLES = int(os.environ.get("BF16_FUZZ_EXAMPLES", "40"))
LARGE_EXAMPLES = int(os.environ.get("BF16_FUZZ_LARGE_EXAMPLES", "2"))
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
_NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]
_PHASES = list(Phase) if os.environ.get("BF16_FUZZ_SHRINK", "0") not in ("", "0") else _NO_SHRINK


def _feeds(model: onnx.ModelProto, cond: bool) -> dict:
    width = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(width).standard_normal((BATCH, width)).astype(np.float32)
    return {"x": x, "ids": IDS, "cond": np.array(cond)}


def _describe(forms: dict) -> str:
    src = (
        f"input external data (size_threshold={forms['in_threshold']}, "
        f"Constants {'external' if forms['in_constants_external'] else 'inline'})"
        if forms["in_external"]
        else "single-file input"
    )
    dst = (
        f"external-data output ({forms['out_data_name'] or 'default name'}, size_threshold={forms['out_threshold']})"
        if forms["out_external"]
        else "single-file output"
    )
    reading = f", read in {forms['chunk_bytes']}-byte chunks" if forms.get("chunk_bytes") else ""
    reading += "" if forms.get("mapped", True) else " with read(), not maps"
    return f"{src} -> {dst}{' beside the input' if forms['out_beside_input'] else ''}{reading}"


def _convert_again(path_or_model, options, convert):
    """Convert a converted model again: nothing may change, or a clear refusal."""
    try:
        return convert()
    except ConversionError as exc:  # a refusal is acceptable only if it says why
        assert "bfloat16" in str(exc).lower() or "already" in str(exc).lower(), (
            f"converting the converted model again was refused without saying it is already converted: {exc}"
        )
        return None


def check_example(model: onnx.ModelProto, options: ConversionOptions, forms: dict, tmp: Path) -> None:
    onnx.checker.check_model(model, full_check=True)  # the generator's own sanity

    # in memory
    converted, report = convert_model(model, options)
    onnx.checker.check_model(converted, full_check=True)
    assert all(r.max_rel_error <= 2**-7 for r in report.converted), [(r.name, r.max_rel_error) for r in report.converted]
    reference = bf16_reference(model, report, options.rounding)
    for cond in (True, False):
        feeds = _feeds(model, cond)
        assert_same(run_proto(converted, feeds), run_proto(reference, feeds), f"convert_model, cond={cond}")
    again = _convert_again(converted, options, lambda: convert_model(converted, options))
    if again is not None:
        assert again[1].converted == [], f"converting again converted {[r.name for r in again[1].converted]}"
        assert canonical(again[0]) == canonical(converted), "converting the converted model again changed it"

    # through files
    what = _describe(forms)
    folder = tmp / "in"
    folder.mkdir()
    src = folder / "model.onnx"
    inputs = save_input(
        model, src, forms["in_external"], forms["in_threshold"], forms["in_constants_external"]
    )
    hashes = {p: sha256(p) for p in inputs}
    out_folder = folder if forms["out_beside_input"] else tmp / "out"
    out_folder.mkdir(exist_ok=True)
    dst = out_folder / "converted.onnx"
    with reading_as(forms):
        file_report = convert_file(
            src,
            dst,
            options,
            save_as_external_data=forms["out_external"],
            external_data_name=forms["out_data_name"],
            size_threshold=forms["out_threshold"],
        )
    assert {p: sha256(p) for p in inputs} == hashes, f"{what}: the conversion modified its input files"
    assert_data_is_own(dst, file_report.destination)
    onnx.checker.check_model(str(dst), full_check=True)
    assert [(r.name, r.kind) for r in file_report.converted] == [(r.name, r.kind) for r in report.converted], (
        f"{what}: convert_file converted other tensors than convert_model"
    )
    file_reference = bf16_reference(model, file_report, options.rounding)
    for cond in (True, False):
        feeds = _feeds(model, cond)
        assert_same(run_session(dst, feeds), run_proto(file_reference, feeds), f"{what}, cond={cond}")
    assert canonical(dst) == canonical(converted), f"{what}: the file's model differs from convert_model's"

    # the converted file converted again: the same model
    again_folder = tmp / "again"
    again_folder.mkdir()
    written = {Path(p): sha256(Path(p)) for p in file_report.destination}
    dst2 = again_folder / "again.onnx"
    report2 = _convert_again(
        dst,
        options,
        lambda: convert_file(dst, dst2, options, save_as_external_data=forms["out_external"],
                             size_threshold=forms["out_threshold"]),
    )
    if report2 is not None:
        assert report2.converted == [], f"{what}: converting again converted {[r.name for r in report2.converted]}"
        assert canonical(dst2) == canonical(dst), f"{what}: converting the converted file again changed it"
    assert {p: sha256(p) for p in written} == written, f"{what}: converting the output again modified it"


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=_SLOW, phases=_PHASES, report_multiple_bugs=False
)
@given(random_models(), file_forms())
def test_random_models(case, forms):
    model, options, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        check_example(model, options, forms, Path(tmp))


@settings(
    max_examples=LARGE_EXAMPLES,
    deadline=None,
    suppress_health_check=_SLOW,
    phases=_NO_SHRINK,  # shrinking would convert ~17 MB models for minutes
    report_multiple_bugs=False,
)
@given(random_models(large=True), file_forms())
def test_large_tensors(case, forms):
    """One tensor over a streaming chunk, varied values: a chunk at the wrong offset changes the output."""
    model, options, features = case
    assert features & {"large_initializer", "large_constant"}
    with tempfile.TemporaryDirectory() as tmp:
        check_example(model, options, forms, Path(tmp))


_OPS = ["MatMul", "Add", "Gather", "Gemm", "Conv", "LayerNormalization", "Constant", "If"]
_FEATURES = [
    "function_in_main",
    "function_in_branch",
    "function_reused",
    "function_name_collision",
    "sibling_initializers_same_name",
    "sibling_constants_same_name",
    "constant_value_empty_name",
    "constant_value_initializer_name",
    "tied_matmul",
    "tied_gemm",
]


@pytest.mark.parametrize("what", _OPS + _FEATURES)
def test_the_generator_makes_everything(what):
    """Each op and each name hazard appears in some generated model, whose conversion gives the
    reference's values, so a broken generator cannot pass silently."""

    def has(case):
        if what in _FEATURES:
            return what in case[2]
        return what in {n.op_type for _, _, nodes in scopes(case[0]) for n in nodes}

    model, _, _ = find(random_models(), has, settings=settings(max_examples=2000, database=None, phases=[Phase.generate]))
    options = ConversionOptions(min_elements=1)
    converted, report = convert_model(model, options)
    assert report.converted
    reference = bf16_reference(model, report)
    for cond in (True, False):
        feeds = _feeds(model, cond)
        assert_same(run_proto(converted, feeds), run_proto(reference, feeds), f"{what}, cond={cond}")
