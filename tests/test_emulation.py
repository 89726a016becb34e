"""BF16-compute emulation: exact node by node, kept by every ONNX Runtime optimization level, scoped, marked."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from olive_bf16_pass.cli import main
from olive_bf16_pass.emulation import (
    EMULATION_KEY,
    EMULATION_NOTE,
    EmulationOptions,
    emulate_file,
    read_node_list,
    write_node_list,
)
from tests.helpers import make_model, rand, tensor

LEVELS = [level for name, level in ort.GraphOptimizationLevel.__members__.items()]


def block(seed=0) -> onnx.ModelProto:
    """x -> MatMul -> Add -> LayerNorm -> Gelu (Div, Erf, Add, Mul, Mul) -> Relu -> self-attention-like
    (Transpose, MatMul, Softmax, MatMul) -> residual Add with the float graph input -> ReduceMean."""
    h = 8
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h0"], name="fc"),
        helper.make_node("Add", ["h0", "b"], ["h1"], name="bias"),
        helper.make_node("LayerNormalization", ["h1", "g", "beta"], ["h2"], name="ln", axis=-1),
        helper.make_node("Div", ["h2", "sqrt2"], ["h3"], name="gelu_div"),
        helper.make_node("Erf", ["h3"], ["h4"], name="gelu_erf"),
        helper.make_node("Add", ["h4", "one"], ["h5"], name="gelu_add"),
        helper.make_node("Mul", ["h2", "h5"], ["h6"], name="gelu_mul"),
        helper.make_node("Mul", ["h6", "half"], ["h7"], name="gelu_half"),
        helper.make_node("Relu", ["h7"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["t"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["r", "t"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "h7"], ["o"], name="context"),
        helper.make_node("Add", ["o", "x"], ["y"], name="residual"),
        helper.make_node("ReduceMean", ["y", "axes"], ["z"], name="mean", keepdims=0),
    ]
    inits = [
        tensor("W", rand((h, h), seed, 0.5)), tensor("b", rand((h,), seed + 1)),
        tensor("g", 1 + rand((h,), seed + 2, 0.1)), tensor("beta", rand((h,), seed + 3, 0.1)),
        tensor("sqrt2", np.float32(np.sqrt(2))), tensor("one", np.float32(1)), tensor("half", np.float32(0.5)),
        tensor("axes", np.array([-1], np.int64)),
    ]
    return make_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, h]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])], inits, opset=18,
    )


def bf16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def run_node(node: onnx.NodeProto, values: dict[str, np.ndarray], opset=18) -> list[np.ndarray]:
    """One node alone, in FP32 on ONNX Runtime's CPU EP (no optimization), on the given inputs."""
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), values[n].shape)
           for n in node.input]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in node.output]
    graph = helper.make_graph([node], "one", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, {n: values[n] for n in node.input})


def reference(model: onnx.ModelProto, feed: dict, kept=()) -> dict[str, np.ndarray]:
    """The emulation's definition, node by node: a BF16 node computes in FP32 on BF16-rounded inputs and its
    result is rounded to BF16; a kept node computes in FP32 on what it is given (FP32 weights) and its results
    stay FP32 for its readers (as do those of a move, Relu or Transpose, that reads them)."""
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    values.update(feed)
    held = set()
    for node in model.graph.node:
        keep = node.name in kept or (node.op_type in ("Relu", "Transpose") and held & set(node.input))
        given = {n: (values[n] if keep or n in held or values[n].dtype != np.float32 else bf16(values[n]))
                 for n in node.input}
        for name, out in zip(node.output, run_node(node, given)):
            values[name] = out if keep or out.dtype != np.float32 else bf16(out)
            if keep:
                held.add(name)
    return values


def session(path, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL, optimized=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def all_values_as_outputs(path, out):
    """The model at ``path`` with every value of the main graph also a graph output."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(v for v in model.graph.value_info if v.name not in have
                              and v.type.tensor_type.elem_type != TensorProto.BFLOAT16)  # numpy has no bf16
    onnx.save(model, str(out))
    return out


@pytest.fixture
def emulated(tmp_path):
    src = tmp_path / "block.onnx"
    onnx.save(block(), str(src))
    report = emulate_file(src, tmp_path / "emulated.onnx")
    return src, tmp_path / "emulated.onnx", report


FEED = {"x": rand((2, 4, 8), 7)}


def test_every_node_is_fp32_compute_on_bf16_inputs_rounded_to_bf16_bit_for_bit(emulated, tmp_path):
    _src, dst, report = emulated
    want = reference(block(), FEED)
    probe = session(all_values_as_outputs(dst, tmp_path / "probe.onnx"))
    got = dict(zip([o.name for o in probe.get_outputs()], probe.run(None, FEED)))
    checked = 0
    for node in block().graph.node:
        for name in node.output:
            assert got[name].tobytes() == want[name].tobytes(), f"{node.name}: {name} differs"
            assert got[name].tobytes() == bf16(got[name]).tobytes(), f"{name} is not BF16-exact"
            checked += 1
    assert checked == 15
    assert report.rounding.inputs == 1  # the float graph input x, rounded once for its two readers
    assert report.rounding.outputs == 13  # Relu and Transpose only move rounded values


@pytest.mark.parametrize("level", LEVELS, ids=[str(level).split(".")[-1] for level in LEVELS])
def test_every_optimization_level_keeps_the_rounding(emulated, tmp_path, level):
    src, dst, _ = emulated
    want = reference(block(), FEED)
    optimized = tmp_path / "optimized.onnx"
    got = session(dst, level, optimized).run(["y", "z"], FEED)
    fp32 = session(src, level).run(["y", "z"], FEED)
    for name, value, plain in zip(["y", "z"], got, fp32):
        assert value.tobytes() == want[name].tobytes(), f"{name}: the rounding is not kept at {level}"
        assert not np.array_equal(value, plain)  # would fail if ORT folded the Cast pairs away
    kept = onnx.load(str(optimized), load_external_data=False)
    to_bf16 = [n for n in kept.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.BFLOAT16]
    assert len(to_bf16) >= 13


def test_kept_op_types_and_nodes_compute_in_fp32(tmp_path):
    src = tmp_path / "block.onnx"
    onnx.save(block(), str(src))
    kept = {"softmax", "fc", "gelu_half"}  # gelu_half's FP32 result goes on FP32 through Relu and Transpose
    options = EmulationOptions(keep_op_types=["Softmax"], keep_nodes=["fc", "gelu_half"])
    report = emulate_file(src, tmp_path / "kept.onnx", options)
    assert sorted(report.rounding.kept) == sorted(kept)
    want = reference(block(), FEED, kept=kept)
    got = session(tmp_path / "kept.onnx").run(["y", "z"], FEED)
    assert got[0].tobytes() == want["y"].tobytes() and got[1].tobytes() == want["z"].tobytes()
    model = onnx.load(str(tmp_path / "kept.onnx"))
    assert any(t.name == "W" and t.data_type == TensorProto.FLOAT for t in model.graph.initializer)  # fc's weight


def test_metadata_says_diagnostic_and_the_model_checks(emulated):
    _, dst, _ = emulated
    model = onnx.load(str(dst))
    props = {p.key: p.value for p in model.metadata_props}
    assert props[EMULATION_KEY] == EMULATION_NOTE
    assert json.loads(props[EMULATION_KEY + ".kept_nodes"]) == []
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_type == TensorProto.BFLOAT16 for t in model.graph.initializer  # every weight, scalars too
               if t.data_type != TensorProto.INT64)


def test_switches_span_fp32_to_full_emulation_and_any_kept_set(tmp_path, emulated):
    src, dst, _ = emulated
    report = emulate_file(src, tmp_path / "switched.onnx", switches=True)
    switches = report.rounding.switches
    assert [node for _, node in switches] == [n.name for n in block().graph.node
                                              if n.op_type not in ("Relu", "Transpose")]
    sw = session(tmp_path / "switched.onnx")

    def run(on):
        return sw.run(["y", "z"], {**FEED, **{s: np.array(node in on) for s, node in switches}})

    everything = {node for _, node in switches}
    full = session(dst).run(["y", "z"], FEED)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(run(everything), full))
    fp32 = session(src).run(["y", "z"], FEED)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(run(set()), fp32))
    kept = {"fc", "softmax", "gelu_half"}  # off: as the emulation with these nodes kept FP32, weights included
    emulate_file(src, tmp_path / "kept.onnx", EmulationOptions(keep_nodes=sorted(kept)))
    want = session(tmp_path / "kept.onnx").run(["y", "z"], FEED)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(run(everything - kept), want))


def test_subgraph_values_are_bound_by_scope(tmp_path):
    """Both If branches define 'v' and read the outer 'h'; each rounds in its own scope, outer values once."""
    def branch(scale):
        return helper.make_graph(
            [helper.make_node("Mul", ["h", "k"], ["v"], name="mul"), helper.make_node("Exp", ["v"], ["r"], name="exp")],
            f"b{scale}", [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, [4])],
            [tensor("k", np.full(4, scale, np.float32))])
    nodes = [
        helper.make_node("Sin", ["x"], ["h"], name="sin"),
        helper.make_node("If", ["c"], ["out"], name="if", then_branch=branch(1.1), else_branch=branch(0.7)),
    ]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                               helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                       [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])
    onnx.save(model, str(tmp_path / "if.onnx"))
    emulate_file(tmp_path / "if.onnx", tmp_path / "if_emu.onnx")
    x = rand(4, 3)
    for cond, k in ((True, 1.1), (False, 0.7)):
        got = session(tmp_path / "if_emu.onnx").run(None, {"x": x, "c": np.array(cond)})[0]
        h = bf16(np.sin(bf16(x)))
        v = bf16(h * bf16(np.float32(k)))
        want = bf16(np.exp(v))
        np.testing.assert_allclose(got, want, rtol=1e-2)  # numpy's sin/exp are not ORT's; ulp-close
        assert got.tobytes() == bf16(got).tobytes()


def test_node_list_round_trip_and_cli(tmp_path, emulated, capsys):
    src, _, _ = emulated
    write_node_list(tmp_path / "keep.json", ["softmax"], target_cosine=0.999)
    assert read_node_list(tmp_path / "keep.json") == ["softmax"]
    (tmp_path / "keep.txt").write_text("softmax\n# a comment\nfc\n")
    assert read_node_list(tmp_path / "keep.txt") == ["softmax", "fc"]
    rc = main(["emulate", str(src), str(tmp_path / "cli.onnx"), "--keep-nodes-from", str(tmp_path / "keep.json"),
               "--keep-op", "Erf"])
    assert rc == 0, capsys.readouterr().err
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "cli.onnx")).metadata_props}
    assert sorted(json.loads(props[EMULATION_KEY + ".kept_nodes"])) == ["gelu_erf", "softmax"]
    assert "diagnostic" in capsys.readouterr().out


def test_external_data_streams_through_and_matches(tmp_path, emulated):
    _, inline, _ = emulated
    model = block()
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    (tmp_path / "out").mkdir()
    emulate_file(tmp_path / "ext.onnx", tmp_path / "out" / "ext_emu.onnx", save_as_external_data=True)
    assert (tmp_path / "out" / "ext_emu.onnx.data").exists()
    got = session(tmp_path / "out" / "ext_emu.onnx").run(["y", "z"], FEED)
    want = session(inline).run(["y", "z"], FEED)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want))
