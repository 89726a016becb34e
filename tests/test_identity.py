"""Regression tests for tensor identity: ONNX names are not unique, and a converter that tracks
tensors by name can write the wrong weights and still exit 0.

One minimal model per hazard, built with onnx.helper. Every test compares ONNX Runtime CPU
outputs of the converted model with the *original* model whose reported tensors were replaced
by their BF16-rounded values (``_fuzz_models.bf16_reference``), to float32 precision, so a
swapped, misplaced or unreported tensor fails; and checks that the input files are unchanged
and that the output reads only its own external data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import (
    all_tensors,
    assert_data_is_own,
    assert_same,
    bf16_reference,
    round_bf16,
    run_proto,
    run_session,
    save_input,
    scopes,
    sha256,
    varied,
)
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.convert import convert_file, convert_model
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.options import ConversionOptions

N = 64  # 64 x 64 = 4096 elements: converts with the default min_elements (1024)
FORMS = [(False, False), (False, True), (True, False), (True, True)]
FORM_IDS = ["single-in-single-out", "single-in-external-out", "external-in-single-out", "external-in-external-out"]


def _model(nodes, inputs, outputs, inits=(), opset=17, functions=(), ir_version=10, value_info=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version, functions=list(functions))
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _t(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _w(seed, shape=(N, N), scale=0.1):
    """Varied, seed-distinct weights: two tensors of different seeds never look alike."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _x(n=N, seed=100):
    return np.random.default_rng(seed).standard_normal((1, n)).astype(np.float32)


def roundtrip(
    model: onnx.ModelProto,
    tmp: Path,
    feeds: list[dict],
    options: ConversionOptions | None = None,
    in_external: bool = False,
    out_external: bool = False,
    src: Path | None = None,
    inputs: list[Path] | None = None,
):
    """convert_file the model (saved as asked, or already at ``src``) and check it against the reference."""
    options = options or ConversionOptions()
    form = f"{'external-data' if in_external else 'single-file'} input -> {'external-data' if out_external else 'single-file'} output"
    if src is None:
        (tmp / "in").mkdir()
        src = tmp / "in" / "model.onnx"
        inputs = save_input(model, src, in_external, threshold=0, attributes=True)
    hashes = {p: sha256(p) for p in inputs}
    (tmp / "out").mkdir()
    dst = tmp / "out" / "model_bf16.onnx"
    report = convert_file(src, dst, options, save_as_external_data=out_external, size_threshold=0)
    assert {p: sha256(p) for p in inputs} == hashes, f"{form}: the conversion modified its input files"
    assert_data_is_own(dst, report.destination)
    onnx.checker.check_model(str(dst), full_check=True)
    reference = bf16_reference(model, report, options.rounding)
    for i, f in enumerate(feeds):
        assert_same(run_session(dst, f), run_proto(reference, f), f"{form}, feeds #{i}")
    return report, dst


def _names(report) -> list[str]:
    return sorted(r.name for r in report.converted)


# --- (a) sibling If branches, each with its own initializer "W" ----------------------------------


def sibling_branches_model():
    x = _vi("x", [1, N])
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"])], "then", [], [_vi("t", [1, N])], [_t("W", _w(1))]
    )
    else_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["e"])], "else", [], [_vi("e", [1, N])], [_t("W", _w(2) + 1.0)]
    )
    return _model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        [x, _vi("cond", [], TensorProto.BOOL)],
        [_vi("y", [1, N])],
    )


@pytest.mark.parametrize("in_external,out_external", FORMS, ids=FORM_IDS)
def test_sibling_branches_each_with_their_own_W(tmp_path, in_external, out_external):
    model = sibling_branches_model()
    feeds = [{"x": _x(), "cond": np.array(True)}, {"x": _x(), "cond": np.array(False)}]
    report, _ = roundtrip(model, tmp_path, feeds, in_external=in_external, out_external=out_external)
    assert _names(report) == ["W", "W"], f"both branches' W must convert, each once; report: {_names(report)}"
    converted, mem_report = convert_model(model, ConversionOptions())
    reference = bf16_reference(model, mem_report)
    for f in feeds:
        assert_same(run_proto(converted, f), run_proto(reference, f), f"convert_model, cond={f['cond']}")


# --- (b) Constants whose value tensors are named "" or like an initializer ------------------------


def constant_names_model():
    nodes = [
        helper.make_node("Constant", [], ["C1"], value=_t("", _w(3))),  # an empty-named value
        helper.make_node("Constant", [], ["C2"], value=_t("W", _w(4) - 0.5)),  # named like the initializer W
        helper.make_node("MatMul", ["x", "W"], ["a"]),
        helper.make_node("MatMul", ["x", "C1"], ["b"]),
        helper.make_node("MatMul", ["x", "C2"], ["c"]),
        helper.make_node("Sum", ["a", "b", "c"], ["s"]),
        helper.make_node("Concat", ["a", "b", "c"], ["y"], axis=1),
    ]
    return _model(nodes, [_vi("x", [1, N])], [_vi("y", [1, 3 * N]), _vi("s", [1, N])], [_t("W", _w(5))])


@pytest.mark.parametrize("in_external,out_external", FORMS, ids=FORM_IDS)
def test_constant_value_names_empty_or_taken(tmp_path, in_external, out_external):
    model = constant_names_model()
    feeds = [{"x": _x()}]
    report, _ = roundtrip(model, tmp_path, feeds, in_external=in_external, out_external=out_external)
    assert _names(report) == ["C1", "C2", "W"], f"report: {[(r.name, r.kind) for r in report.converted]}"
    converted, mem_report = convert_model(model)
    assert_same(run_proto(converted, feeds[0]), run_proto(bf16_reference(model, mem_report), feeds[0]), "convert_model")


# --- (c) a Gather table named like a tensor of another scope --------------------------------------


def gather_other_scope_model(gather_in_then: bool):
    """One branch reads its own table E only through Gather (it may widen after the Gather); the
    sibling holds another E read by MatMul (widened by a Cast in *that* branch only)."""
    gather = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["g"]), helper.make_node("Reshape", ["g", "shape"], ["gy"])],
        "gather_branch",
        [],
        [_vi("gy", [1, N])],
        [_t("E", _w(6)), _t("shape", np.array([1, N], np.int64))],
    )
    matmul = helper.make_graph(
        [helper.make_node("MatMul", ["x", "E"], ["m"])], "matmul_branch", [], [_vi("m", [1, N])], [_t("E", _w(7) + 2.0)]
    )
    then_g, else_g = (gather, matmul) if gather_in_then else (matmul, gather)
    return _model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        [_vi("x", [1, N]), _vi("ids", [1], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL)],
        [_vi("y", [1, N])],
    )


def _defined_in_scope(model: onnx.ModelProto) -> list[str]:
    """Node inputs that no enclosing scope defines: a consumer wired to another scope's name."""
    problems = []

    def walk(graph, outer, label):
        names = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer}
        for node in graph.node:
            for name in node.input:
                if name and name not in names:
                    problems.append(f"{label}: {node.op_type} reads {name!r}, which its scope does not define")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, names, f"{label}/{attr.g.name}")
            names.update(node.output)

    walk(model.graph, set(), "main")
    return problems


@pytest.mark.parametrize("gather_in_then", [True, False], ids=["gather-in-then", "gather-in-else"])
@pytest.mark.parametrize("cast_after_gather", [True, False])
def test_gather_table_named_like_another_scopes_tensor(tmp_path, gather_in_then, cast_after_gather):
    model = gather_other_scope_model(gather_in_then)
    options = ConversionOptions(cast_after_gather=cast_after_gather)
    feeds = [{"x": _x(), "ids": np.array([5], np.int64), "cond": np.array(c)} for c in (True, False)]
    try:
        report, dst = roundtrip(model, tmp_path, feeds, options)
    except ConversionError as exc:
        pytest.fail(f"a valid model was refused: {exc}")
    assert _names(report) == ["E", "E"], f"both tables must convert; report: {_names(report)}"
    assert _defined_in_scope(onnx.load(str(dst))) == []


# --- (d) subgraph value_info of converted tensors --------------------------------------------------


def value_info_model():
    then_g = helper.make_graph(
        [
            helper.make_node("Gather", ["T", "ids"], ["g"]),
            helper.make_node("Reshape", ["g", "shape"], ["gr"]),
            helper.make_node("MatMul", ["gr", "V"], ["t"]),
        ],
        "then",
        [],
        [_vi("t", [1, N])],
        [_t("T", _w(8)), _t("V", _w(9)), _t("shape", np.array([1, N], np.int64))],
        value_info=[_vi("T", [N, N]), _vi("V", [N, N]), _vi("g", [1, N]), _vi("gr", [1, N])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["K"], value=_t("K", _w(10))), helper.make_node("MatMul", ["x", "K"], ["e"])],
        "else",
        [],
        [_vi("e", [1, N])],
        value_info=[_vi("K", [N, N])],
    )
    return _model(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        [_vi("x", [1, N]), _vi("ids", [1], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL)],
        [_vi("y", [1, N])],
        value_info=[_vi("y", [1, N])],
    )


def _stale_value_info(model: onnx.ModelProto) -> list[str]:
    """value_info entries naming nothing their graph defines, or typed unlike the tensor they name."""
    problems = []
    for graph in _graphs(model.graph):
        types = {t.name: t.data_type for t in graph.initializer}
        defined = set(types) | {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
        for node in graph.node:
            if node.op_type == "Cast":
                for o in node.output:
                    types[o] = next(a.i for a in node.attribute if a.name == "to")
            if node.op_type == "Constant":
                types[node.output[0]] = next(a.t.data_type for a in node.attribute if a.name == "value")
        for v in graph.value_info:
            if v.name not in defined:
                problems.append(f"graph {graph.name!r}: value_info {v.name!r} names nothing the graph defines")
            elif v.name in types and types[v.name] != v.type.tensor_type.elem_type:
                problems.append(
                    f"graph {graph.name!r}: value_info {v.name!r} says elem_type {v.type.tensor_type.elem_type}, "
                    f"the tensor is {types[v.name]}"
                )
    return problems


def _graphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)


@pytest.mark.parametrize("cast_after_gather", [True, False])
def test_subgraph_value_info_survives(tmp_path, cast_after_gather):
    model = value_info_model()
    options = ConversionOptions(cast_after_gather=cast_after_gather)
    feeds = [{"x": _x(), "ids": np.array([7], np.int64), "cond": np.array(c)} for c in (True, False)]
    report, dst = roundtrip(model, tmp_path, feeds, options)
    assert _names(report) == ["K", "T", "V"], f"report: {_names(report)}"
    out = onnx.load(str(dst))
    onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True, data_prop=True)
    assert _stale_value_info(out) == []


# --- (e) a local function holding a large Constant --------------------------------------------------


def function_model():
    k = varied(128 * 128, scale=0.2).reshape(128, 128)
    fn = helper.make_function(
        "local",
        "Lin",
        ["X"],
        ["Y"],
        [helper.make_node("Constant", [], ["K"], value=_t("K", k)), helper.make_node("MatMul", ["X", "K"], ["Y"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    branch = helper.make_graph(
        [helper.make_node("Lin", ["x"], ["t"], domain="local")], "then", [], [_vi("t", [1, 128])]
    )
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e", [1, 128])])
    return _model(
        [
            helper.make_node("Lin", ["x"], ["a"], domain="local"),
            helper.make_node("If", ["cond"], ["b"], then_branch=branch, else_branch=other),
            helper.make_node("Add", ["a", "b"], ["y"]),
        ],
        [_vi("x", [1, 128]), _vi("cond", [], TensorProto.BOOL)],
        [_vi("y", [1, 128])],
        functions=[fn],
    )


@pytest.mark.parametrize("in_external,out_external", FORMS, ids=FORM_IDS)
def test_local_function_constant(tmp_path, in_external, out_external):
    model = function_model()
    feeds = [{"x": _x(128), "cond": np.array(c)} for c in (True, False)]
    report, dst = roundtrip(model, tmp_path, feeds, in_external=in_external, out_external=out_external)
    assert "K" in _names(report), f"the function's Constant K (16384 FP32 elements) was not converted: {_names(report)}"
    out = onnx.load(str(dst))
    left = [
        (label, t.name, list(t.dims))
        for label, _, nodes in scopes(out)
        if label.startswith("function")
        for n in nodes
        for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
        for t in [a.t]
        if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) >= 1024
    ]
    assert left == [], f"large FP32 Constants left in local functions: {left}"


# --- (f) packed 2-bit and 6-bit tensors --------------------------------------------------------------

_PACKED_BITS = {"INT2": 2, "UINT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6}


def _bitwidth(name: str) -> int:
    """From onnx-ir when present (DataType.bitwidth), else the spec's table above."""
    try:
        import onnx_ir

        return onnx_ir.DataType(getattr(TensorProto, name)).bitwidth
    except (ImportError, AttributeError, ValueError):
        return _PACKED_BITS[name]


def packed_model(type_name: str):
    elements = 4099  # not a multiple of 4 or 8: the last byte is partly padding
    nbytes = -(-elements * _bitwidth(type_name) // 8)
    raw = bytearray(np.random.default_rng(11).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    used = (elements * _bitwidth(type_name)) % 8
    if used:
        raw[-1] &= (1 << used) - 1  # padding bits zero (the checker requires it for FLOAT6)
    packed = TensorProto(name="P", data_type=getattr(TensorProto, type_name), dims=[elements], raw_data=bytes(raw))
    ir_version = 14 if type_name.startswith("FLOAT6") else 11
    model = _model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [_vi("x", [1, N])],
        [_vi("y", [1, N])],
        [_t("W", _w(12)), packed],
        ir_version=ir_version,
    )
    return model, bytes(raw)


@pytest.mark.parametrize("in_external", [False, True], ids=["single-file", "external-data"])
@pytest.mark.parametrize("type_name", sorted(_PACKED_BITS))
def test_packed_sub_byte_tensors(tmp_path, type_name, in_external):
    assert hasattr(TensorProto, type_name), f"onnx {onnx.__version__} has no TensorProto.{type_name}"
    model, raw = packed_model(type_name)
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "model.onnx"
    inputs = save_input(model, src, in_external, threshold=0)
    hashes = {p: sha256(p) for p in inputs}
    dst = tmp_path / "model_bf16.onnx"
    try:
        report = convert_file(src, dst, ConversionOptions(), save_as_external_data=in_external, size_threshold=0)
    except ConversionError as exc:
        pytest.fail(f"a valid model with a {type_name} tensor of 4099 elements ({len(raw)} bytes) was refused: {exc}")
    assert {p: sha256(p) for p in inputs} == hashes
    assert_data_is_own(dst, report.destination)
    onnx.checker.check_model(str(dst), full_check=True)
    assert _names(report) == ["W"]
    out = onnx.load(str(dst))
    p = next(t for t in out.graph.initializer if t.name == "P")
    assert p.data_type == getattr(TensorProto, type_name) and p.raw_data == raw, f"{type_name} tensor P changed"
    stored = next(t for t in out.graph.initializer if t.name == report.converted[0].stored_name)
    assert np.array_equal(
        numpy_helper.to_array(stored).astype(np.float32), round_bf16(numpy_helper.to_array(model.graph.initializer[0]))
    ), "W's stored BF16 values are not W rounded"
    if not type_name.startswith("FLOAT6"):  # ONNX Runtime 1.31 refuses FLOAT6 models outright
        f = {"x": _x()}
        assert_same(run_session(dst, f), run_proto(bf16_reference(model, report), f), type_name)


# --- (g) a model reached through a symlink, as in the Hugging Face cache ----------------------------


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
@pytest.mark.parametrize("in_external", [False, True], ids=["single-file", "external-data"])
def test_hugging_face_cache_symlinks(tmp_path, in_external):
    model = sibling_branches_model()
    staging = tmp_path / "staging"
    staging.mkdir()
    made = save_input(model, staging / "model.onnx", in_external, threshold=0)
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    links = []
    for i, path in enumerate(made):
        blob = repo / "blobs" / f"{sha256(path)[:12]}{i}"
        path.rename(blob)
        link = snapshot / path.name
        os.symlink(os.path.join("..", "..", "blobs", blob.name), link)
        links.append(blob)
    feeds = [{"x": _x(), "cond": np.array(c)} for c in (True, False)]
    try:
        report, _ = roundtrip(model, tmp_path, feeds, src=snapshot / "model.onnx", inputs=links,
                              in_external=in_external)
    except ConversionError as exc:
        pytest.fail(f"a model in a Hugging Face cache snapshot (files are links to ../../blobs) was refused: {exc}")
    assert _names(report) == ["W", "W"]


# --- (h) opset 11 and 12 models are upgraded ------------------------------------------------------


def old_opset_model(opset: int):
    inits = [
        _t("E", _w(13, (16, N))),
        _t("W", _w(14)),
        _t("b", _w(15, (N,))),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["g"]),  # [1, N]
        helper.make_node("MatMul", ["g", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h2"]),
        helper.make_node("Split", ["h2"], ["s1", "s2"], axis=1, split=[N // 4, 3 * N // 4]),  # split: input from 13
        helper.make_node("ReduceSum", ["s2"], ["r"], axes=[1], keepdims=1),  # axes: input from 13
        helper.make_node("Unsqueeze", ["s1"], ["u"], axes=[0]),  # axes: input from 13
        helper.make_node("Squeeze", ["u"], ["sq"], axes=[0]),
        helper.make_node("Mul", ["sq", "r"], ["y"]),
    ]
    return _model(
        nodes, [_vi("ids", [1], TensorProto.INT64)], [_vi("y", [1, N // 4])], inits, opset=opset, ir_version=7
    )


@pytest.mark.parametrize("opset", [11, 12])
def test_old_opsets_are_upgraded(tmp_path, opset):
    model = old_opset_model(opset)
    feeds = [{"ids": np.array([i], np.int64)} for i in (0, 9)]
    try:
        options = ConversionOptions()
        report, dst = roundtrip(model, tmp_path, feeds, options)
    except ConversionError as exc:
        pytest.fail(f"an opset-{opset} model was refused instead of upgraded to opset >= 13: {exc}")
    out = onnx.load(str(dst))
    version = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    assert version >= 13, f"the output still declares opset {version}"
    assert _names(report) == ["E", "W"], f"report: {_names(report)}"
    assert f"opset: upgraded from {opset} to {version}" in report.summary(), report.summary()
    assert report.to_dict()["opset_upgrade"] == [opset, version]


@pytest.mark.parametrize("opset", [11, 12])
def test_old_opsets_refused_when_upgrade_is_off(tmp_path, opset):
    model = old_opset_model(opset)
    src = tmp_path / "model.onnx"
    onnx.save(model, str(src))
    try:
        options = ConversionOptions(upgrade_opset=False)
    except TypeError as exc:
        pytest.fail(f"ConversionOptions has no upgrade_opset option: {exc}")
    with pytest.raises(ConversionError, match="opset"):
        convert_file(src, tmp_path / "out.onnx", options)
    assert not (tmp_path / "out.onnx").exists()
    # the refusal is about the opset only: with the upgrade on, the same model converts to the right values
    converted, report = convert_model(model, ConversionOptions())
    f = {"ids": np.array([3], np.int64)}
    assert_same(run_proto(converted, f), run_proto(bf16_reference(model, report), f), f"opset {opset}, upgraded")


# --- (i) a tied table: Gather and MatMul (or Gemm) read one table ---------------------------------------


def tied_model(head: str):
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"])]  # [1, N]
    if head == "MatMul":  # h @ E: E is [N, N], rows double as columns
        nodes.append(helper.make_node("MatMul", ["h", "E"], ["y"]))
    else:  # the LM-head form: logits = h @ E^T
        nodes.append(helper.make_node("Gemm", ["h", "E"], ["y"], transB=1))
    return _model(nodes, [_vi("ids", [1], TensorProto.INT64)], [_vi("y", [1, N])], [_t("E", _w(16, scale=1.0))])


@pytest.mark.parametrize("cast_after_gather", [True, False])
@pytest.mark.parametrize("head", ["MatMul", "Gemm"])
@pytest.mark.parametrize("out_external", [False, True], ids=["single-out", "external-out"])
def test_tied_table(tmp_path, head, cast_after_gather, out_external):
    model = tied_model(head)
    options = ConversionOptions(cast_after_gather=cast_after_gather)
    feeds = [{"ids": np.array([i], np.int64)} for i in (0, 17, N - 1)]
    report, dst = roundtrip(model, tmp_path, feeds, options, out_external=out_external)
    assert _names(report) == ["E"]
    bf16 = [t for t in all_tensors(onnx.load(str(dst))) if t.data_type == TensorProto.BFLOAT16]
    assert len(bf16) == 1, f"the tied table must be stored once, as BF16; found {[t.name for t in bf16]}"


@pytest.mark.slow
def test_identity_holds_on_the_pure_python_protobuf_backend_too():
    """The edits add Casts by sorting a node list and rely on it moving messages, not copying them
    (the writer knows tensors by identity). upb does; protobuf's pure-Python backend, which some
    environments select, must too: these tests and the graph tests run again on it."""
    import subprocess
    import sys

    tests = Path(__file__).parent
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    env["PYTHONPATH"] = os.pathsep.join([str(tests), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    probe = "from google.protobuf.internal import api_implementation as a; print(a.Type())"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip() == "python"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not pure_python",
         str(tests / "test_identity.py"), str(tests / "test_graph.py")],
        cwd=tests.parent, env=env, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and " passed" in out and " failed" not in out, out[-4000:]
