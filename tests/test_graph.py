import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import bf16_tolerance, embedding_mlp, if_subgraph_model, make_model, rand, run, tensor
from olive_bf16_pass import ConversionError, ConversionOptions, convert_model
from olive_bf16_pass import graph
from olive_bf16_pass.opset import main_opset
from olive_bf16_pass.traversal import scopes


def _casts(graph):
    return [n for n in graph.node if n.op_type == "Cast"]


def _init(graph, name):
    return next(t for t in graph.initializer if t.name == name)


def test_each_converted_tensor_gets_one_shared_cast():
    out, _ = convert_model(embedding_mlp(), ConversionOptions(cast_after_gather=False))
    g = out.graph
    for name in ("E", "W1", "W2"):
        assert _init(g, f"{name}_bf16").data_type == TensorProto.BFLOAT16
        producers = [n for n in g.node if name in n.output]
        assert len(producers) == 1 and producers[0].op_type == "Cast"
        assert producers[0].input == [f"{name}_bf16"]
        assert helper.get_attribute_value(producers[0].attribute[0]) == TensorProto.FLOAT
    assert len(_casts(g)) == 3  # W1 has two consumers and one Cast
    assert [n.input[1] for n in g.node if n.op_type == "MatMul"].count("W1") == 2
    assert _init(g, "b1").data_type == TensorProto.FLOAT  # small, kept


def test_gather_table_is_widened_after_the_gather():
    out, report = convert_model(embedding_mlp())
    g = out.graph
    gather = next(n for n in g.node if n.op_type == "Gather")
    assert gather.input[0] == "E_bf16"
    after = next(n for n in g.node if n.op_type == "Cast" and n.input[0] == gather.output[0])
    assert after.output[0] == "emb"  # consumers and value_info keep reading the FP32 name
    assert not any("E" in n.output for n in g.node)
    assert {r.name: r.widened for r in report.converted}["E"] == "after_gather"


def test_graph_stays_topologically_sorted_and_valid():
    out, _ = convert_model(embedding_mlp())
    onnx.checker.check_model(out, full_check=True)
    seen = {i.name for i in out.graph.input} | {t.name for t in out.graph.initializer}
    for node in out.graph.node:
        assert all(i in seen for i in node.input if i), node
        seen.update(node.output)


def test_converted_model_runs_on_cpu_and_matches_fp32():
    model = embedding_mlp()
    ids = np.array([[1, 5, 63], [0, 2, 7]], np.int64)
    (ref,) = run(model, {"ids": ids})
    (got,) = run(convert_model(model)[0], {"ids": ids})
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=0.05, rtol=0)
    assert not np.array_equal(got, ref)  # the weights really changed


def test_bf16_data_is_the_rounded_fp32_data():
    model = embedding_mlp()
    out, _ = convert_model(model)
    w = onnx.numpy_helper.to_array(_init(model.graph, "W2"))
    stored = np.frombuffer(_init(out.graph, "W2_bf16").raw_data, np.uint16).reshape(w.shape)
    import ml_dtypes

    np.testing.assert_array_equal(stored, w.astype(ml_dtypes.bfloat16).view(np.uint16))


def test_float_data_tensors_convert_too():
    model = embedding_mlp()
    w = onnx.numpy_helper.to_array(_init(model.graph, "W2"))
    t = _init(model.graph, "W2")
    t.ClearField("raw_data")
    t.float_data.extend(w.ravel().tolist())
    out, _ = convert_model(model)
    converted = _init(out.graph, "W2_bf16")
    assert not converted.float_data and len(converted.raw_data) == w.size * 2


def test_subgraphs_get_their_casts_where_the_value_is_visible():
    model = if_subgraph_model()
    out, report = convert_model(model, ConversionOptions(min_elements=64))
    assert {r.name for r in report.converted} == {"W", "V", "C"}
    graphs = {s.body.name: s.body for s in scopes(out)}
    main, then_g, else_g = graphs["test"], graphs["then"], graphs["else"]
    assert any(n.op_type == "Cast" and n.output == ["W"] for n in main.node)  # outer value, read inside
    assert _init(then_g, "V_bf16").data_type == TensorProto.BFLOAT16
    assert then_g.node[0].op_type == "Cast" and then_g.node[0].output == ["V"]
    const = else_g.node[0]
    assert const.op_type == "Constant" and const.attribute[0].t.data_type == TensorProto.BFLOAT16
    assert else_g.node[1].op_type == "Cast" and else_g.node[1].input == const.output
    onnx.checker.check_model(out, full_check=True)
    for sign in (1.0, -1.0):
        x = np.abs(rand((1, 64), 3)) * sign
        (ref,), (got,) = run(model, {"x": x}), run(out, {"x": x})
        np.testing.assert_allclose(got, ref, atol=0.05 * max(1, np.abs(ref).max()))


def test_graph_input_initializer_converts_only_when_asked():
    model = embedding_mlp()
    model.graph.input.append(helper.make_tensor_value_info("W2", TensorProto.FLOAT, [32, 32]))
    out, _ = convert_model(model)
    assert _init(out.graph, "W2").data_type == TensorProto.FLOAT
    out, _ = convert_model(model, ConversionOptions(convert_graph_input_initializers=True))
    overridable = next(i for i in out.graph.input if i.name == "W2_bf16")
    assert overridable.type.tensor_type.elem_type == TensorProto.BFLOAT16
    onnx.checker.check_model(out, full_check=True)
    ids = np.array([[1, 2]], np.int64)
    np.testing.assert_allclose(run(out, {"ids": ids})[0], run(model, {"ids": ids})[0], atol=0.05)


def test_new_names_never_collide():
    model = embedding_mlp()
    model.graph.initializer.append(tensor("W2_bf16", np.zeros(3, np.float32)))  # taken, unused
    out, report = convert_model(model)
    stored = {r.name: r.stored_name for r in report.converted}
    assert stored["W2"] == "W2_bf16_1"
    names = [n.name for n in out.graph.node]
    assert len(names) == len(set(names))
    onnx.checker.check_model(out, full_check=True)


def test_converting_twice_equals_converting_once():
    once, first = convert_model(embedding_mlp())
    twice, second = convert_model(once)
    assert twice == once
    assert second.converted == [] and {s.reason for s in second.skipped} >= {"already bfloat16"}


def test_the_callers_model_is_not_modified():
    model = embedding_mlp()
    before = model.SerializeToString()
    convert_model(model)
    assert model.SerializeToString() == before


def test_metadata_doc_strings_opsets_and_value_info_are_kept():
    model = embedding_mlp()
    onnx.helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.graph.doc_string = "graph doc"
    out, _ = convert_model(model)
    assert out.metadata_props == model.metadata_props
    assert (out.doc_string, out.producer_name, out.ir_version) == (model.doc_string, "tests", model.ir_version)
    assert out.graph.doc_string == "graph doc"
    assert list(out.opset_import) == list(model.opset_import)
    assert list(out.graph.value_info) == list(model.graph.value_info)
    inferred = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    assert {v.name: v.type for v in inferred.graph.value_info}["emb"] == model.graph.value_info[0].type


def _old_opset_model(opset):
    return make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [tensor("W", rand((64, 64)))],
        opset=opset,
    )


@pytest.mark.parametrize("opset", [11, 12])
def test_models_below_opset_13_are_upgraded_and_say_so(opset):
    model = _old_opset_model(opset)
    out, report = convert_model(model, ConversionOptions(min_elements=16))
    assert main_opset(out) == 13 and report.opset_upgrade == [opset, 13]
    x = rand((1, 64), 5)
    ref = run(model, {"x": x})[0]
    assert np.allclose(run(out, {"x": x})[0], ref, atol=bf16_tolerance(ref))
    assert len(report.converted) == 1


@pytest.mark.parametrize("opset", [11, 12])
def test_old_opsets_are_refused_clearly_when_asked(opset):
    with pytest.raises(ConversionError, match=f"opset {opset}.*opset 13 or later.*convert_version.*upgrade_opset"):
        convert_model(_old_opset_model(opset), ConversionOptions(upgrade_opset=False))


def test_thousands_of_small_tensors_convert_as_each_would_alone(tmp_path):
    """More tensors than one rounding batch, of varied sizes (empty and special values included), each
    read by a chain of Adds in order: every tensor's bits and figures must be its own, and the Casts,
    added in one go, must each land before their reader (the checker and ONNX Runtime see the order)."""
    from olive_bf16_pass import convert_file
    from olive_bf16_pass.rounding import RoundingStats, float32_to_bfloat16_bits

    rng = np.random.default_rng(3)
    count = graph._BATCH + 700
    specials = np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.39e38, 0.0, 1e-41], np.float32)
    arrays, nodes, prev = {}, [], "x"
    for i in range(count):
        a = (rng.standard_normal(4) * 10.0 ** int(rng.integers(-3, 4))).astype(np.float32)
        if i % 5 == 0:
            a[int(rng.integers(0, 4))] = rng.choice(specials)
        arrays[f"w{i}"] = a
        nodes.append(helper.make_node("Add", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4]) for name in ("x", prev)]
    model = make_model(nodes, io[:1], io[1:], [tensor(k, v) for k, v in arrays.items()])
    src = tmp_path / "many.onnx"
    onnx.save(model, src)
    report = convert_file(src, tmp_path / "out.onnx", ConversionOptions(min_elements=1))
    assert len(report.converted) == count
    out = onnx.load(tmp_path / "out.onnx")
    stored = {t.name: t for t in out.graph.initializer}
    position = {o: i for i, n in enumerate(out.graph.node) for o in n.output}
    for record in report.converted:
        alone = RoundingStats()
        expected = float32_to_bfloat16_bits(arrays[record.name], stats=alone)
        got = np.frombuffer(stored[record.stored_name].raw_data, np.uint16)
        np.testing.assert_array_equal(got, expected, err_msg=record.name)
        assert (record.nan_count, record.inf_count, record.saturated_count) == (
            alone.nan_count, alone.inf_count, alone.saturated_count)
        assert record.max_abs_error == alone.max_abs_error and record.max_rel_error == alone.max_rel_error
        reader = int(record.name[1:])
        assert position[record.name] < position[f"h{reader}"]  # its Cast comes before the Add that reads it
