"""convert_file end to end: outputs that load, check and run, in every storage layout."""

import numpy as np
import onnx
import pytest

from onnx import TensorProto, helper

from helpers import embedding_mlp, if_subgraph_model, make_model, rand, run, save, tensor
from olive_bf16_pass import ConversionError, ConversionOptions, convert_file
from olive_bf16_pass.io import writer

IDS = np.array([[1, 5, 63, 0], [2, 2, 9, 40]], np.int64)


@pytest.mark.parametrize("source_external", [False, True])
@pytest.mark.parametrize("output_external", [False, True])
def test_outputs_check_and_run_in_every_layout(tmp_path, source_external, output_external):
    model = embedding_mlp()
    src = save(model, tmp_path / "src.onnx", external=source_external)
    dst = tmp_path / "out" / "bf16.onnx"
    dst.parent.mkdir()
    report = convert_file(src, dst, save_as_external_data=output_external, size_threshold=0)
    onnx.checker.check_model(str(dst), full_check=True)
    assert (tmp_path / "out" / "bf16.onnx.data").exists() == output_external
    (ref,), (got,) = run(model, {"ids": IDS}), run(dst, {"ids": IDS})
    np.testing.assert_allclose(got, ref, atol=0.05)
    assert sorted(report.destination) == sorted(str(p) for p in (tmp_path / "out").iterdir())


def test_report_has_sizes_reasons_and_per_tensor_errors(tmp_path):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    report = convert_file(src, tmp_path / "o.onnx")
    assert {r.name for r in report.converted} == {"E", "W1", "W2"}
    assert {s.name for s in report.skipped} == {"b1", "gamma", "beta"}
    for record in report.converted:
        assert record.bytes_after * 2 == record.bytes_before
        assert 0 < record.max_rel_error <= 2**-8 and record.max_abs_error > 0
    assert report.file_bytes_before == src.stat().st_size
    assert report.file_bytes_after == (tmp_path / "o.onnx").stat().st_size
    assert 0.5 < report.ratio < 0.52
    assert report.weight_bytes_before - report.weight_bytes_after == sum(r.bytes_after for r in report.converted)
    summary = report.summary()
    assert "converted 3 tensors" in summary and "ratio" in summary and "worst rounding error" in summary
    as_dict = report.to_dict()
    assert as_dict["converted"][0]["max_rel_error"] > 0 and as_dict["ratio"] == report.ratio


def test_nan_and_inf_weights_are_converted_faithfully_and_counted(tmp_path):
    model = embedding_mlp()
    w = onnx.numpy_helper.to_array(model.graph.initializer[1]).copy()
    w[0, :3] = [np.nan, np.inf, -np.inf]
    w[1, 0] = np.finfo(np.float32).min
    model.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(w, "W1"))
    src = save(model, tmp_path / "m.onnx")
    report = convert_file(src, tmp_path / "o.onnx")
    record = next(r for r in report.converted if r.name == "W1")
    assert (record.nan_count, record.inf_count, record.saturated_count) == (1, 2, 1)
    stored = next(t for t in onnx.load(tmp_path / "o.onnx").graph.initializer if t.name == "W1_bf16")
    back = (np.frombuffer(stored.raw_data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf and np.isfinite(back[32])
    assert "1 NaN, 2 Inf, 1 saturated" in report.summary()


def test_subgraph_model_through_files(tmp_path):
    model = if_subgraph_model()
    src = save(model, tmp_path / "m.onnx", external=True)
    convert_file(src, tmp_path / "o.onnx", ConversionOptions(min_elements=64))
    onnx.checker.check_model(str(tmp_path / "o.onnx"), full_check=True)
    x = rand((1, 64), 5)
    np.testing.assert_allclose(run(tmp_path / "o.onnx", {"x": x})[0], run(model, {"x": x})[0], atol=0.1)


def test_output_over_the_protobuf_limit_goes_to_external_data(tmp_path, monkeypatch, caplog):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    monkeypatch.setattr(writer, "PROTOBUF_LIMIT", 10_000)  # stands in for 2 GB
    report = convert_file(src, tmp_path / "o.onnx")
    assert (tmp_path / "o.onnx.data").exists() and len(report.destination) == 2
    assert "exceed 2 GB" in caplog.text
    onnx.checker.check_model(str(tmp_path / "o.onnx"), full_check=True)
    np.testing.assert_allclose(run(tmp_path / "o.onnx", {"ids": IDS})[0], run(src, {"ids": IDS})[0], atol=0.05)


def test_a_model_over_2gb_converts_from_external_data(tmp_path):
    """A real 2.1 GB FP32 tensor (a sparse file of zeros, so it costs no disk) streams through."""
    from onnx import TensorProto, helper

    rows, cols = 2048, 262_400  # 2,149,580,800 bytes of float32
    data = tmp_path / "big.onnx.data"
    with open(data, "wb") as f:
        f.truncate(rows * cols * 4)
    table = TensorProto(name="T", data_type=TensorProto.FLOAT, dims=[rows, cols])
    table.data_location = TensorProto.EXTERNAL
    for k, v in (("location", data.name), ("offset", "0"), ("length", str(rows * cols * 4))):
        table.external_data.add(key=k, value=v)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["T", "i"], ["y"])],
        "big",
        [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [table],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), tmp_path / "big.onnx")
    report = convert_file(tmp_path / "big.onnx", tmp_path / "o.onnx")
    assert report.file_bytes_after == pytest.approx(rows * cols * 2, rel=1e-3)
    onnx.checker.check_model(str(tmp_path / "o.onnx"), full_check=True)
    (row,) = run(tmp_path / "o.onnx", {"i": np.array([7], np.int64)})
    assert row.shape == (1, cols) and not row.any()


def test_output_equal_to_input_needs_in_place(tmp_path):
    src = save(embedding_mlp(), tmp_path / "m.onnx")
    before = src.read_bytes()
    with pytest.raises(ConversionError, match="the output is the input.*in_place"):
        convert_file(src, src)
    assert src.read_bytes() == before
    report = convert_file(src, src, in_place=True)
    onnx.checker.check_model(str(src), full_check=True)
    assert len(src.read_bytes()) < len(before) and list(tmp_path.iterdir()) == [src]
    assert (report.file_bytes_before, report.file_bytes_after) == (len(before), len(src.read_bytes()))


def test_small_shape_tensors_stay_inline_even_with_size_threshold_0(tmp_path):
    """ONNX Runtime refuses a model whose Slice starts/ends are external: they stay in the .onnx."""
    from onnx import TensorProto, helper

    from helpers import make_model, tensor

    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Shape", ["m"], ["s"]),
        helper.make_node("Slice", ["s", "starts", "ends"], ["s2"]),
        helper.make_node("Concat", ["s2", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    ints = {"starts": [0], "ends": [1], "minus1": [-1]}
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
        [tensor("W", rand((64, 64)))] + [tensor(k, np.array(v, np.int64)) for k, v in ints.items()],
    )
    src = save(model, tmp_path / "m.onnx")
    convert_file(src, tmp_path / "o.onnx", save_as_external_data=True, size_threshold=0)
    stored = onnx.load(tmp_path / "o.onnx", load_external_data=False).graph.initializer
    assert {t.name for t in stored if t.data_location == TensorProto.EXTERNAL} == {"W_bf16"}
    x = rand((2, 64), 1)
    np.testing.assert_allclose(run(tmp_path / "o.onnx", {"x": x})[0], run(model, {"x": x})[0], atol=0.1)


def test_a_model_mixing_fp32_and_fp16_weights_converts_twice_as_once(tmp_path):
    """The second run sees BF16 and FP16 weights and no FP32 ones: nothing to do, not a refusal."""
    h = (rand((64, 64), 4) * 0.1).astype(np.float16)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "W"], ["a"]),
            helper.make_node("Cast", ["H"], ["H32"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["a", "H32"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [tensor("W", rand((64, 64), 3, 0.1)), tensor("H", h)],
    )
    src = save(model, tmp_path / "m.onnx")
    once = convert_file(src, tmp_path / "once.onnx", ConversionOptions(min_elements=16))
    assert [r.name for r in once.converted] == ["W"]
    twice = convert_file(tmp_path / "once.onnx", tmp_path / "twice.onnx", ConversionOptions(min_elements=16))
    assert twice.converted == []
    assert onnx.load(tmp_path / "twice.onnx") == onnx.load(tmp_path / "once.onnx")
    with pytest.raises(ConversionError, match="float16 and none are float32"):  # an FP16-only model still is refused
        fp16_only = make_model(
            [helper.make_node("Cast", ["H"], ["H32"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["x", "H32"], ["y"])],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
            [tensor("H", h)],
        )
        convert_file(save(fp16_only, tmp_path / "h.onnx"), tmp_path / "h_out.onnx", ConversionOptions(min_elements=16))


def test_fp16_weights_beside_fp32_ones_too_small_to_convert_are_not_called_fp16_only(tmp_path):
    """The FP16-only refusal looks at every FP32 weight, kept ones too: a model whose FP32 weights are all
    under min_elements has FP32 weights, and is converted (to itself), not told that it has none."""
    h = (rand((64, 64), 4) * 0.1).astype(np.float16)
    model = make_model(
        [helper.make_node("Cast", ["H"], ["H32"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["x", "H32"], ["a"]),
         helper.make_node("Add", ["a", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [tensor("H", h), tensor("b", rand((64,), 5))],
    )
    report = convert_file(save(model, tmp_path / "m.onnx"), tmp_path / "out.onnx", ConversionOptions(min_elements=1024))
    assert report.converted == [] and {r.name for r in report.skipped} == {"H", "b"}


def test_a_conversion_loads_no_openssl(tmp_path):
    """hashlib's OpenSSL is 3.5 MB of a conversion's memory: temporaries are named without it (a fresh
    interpreter, so that nothing imported by the test session hides it)."""
    import subprocess
    import sys

    save(embedding_mlp(vocab=64, hidden=32), tmp_path / "m.onnx")
    probe = ("import sys; from olive_bf16_pass import convert_file, ConversionOptions; "
             "convert_file(sys.argv[1], sys.argv[2], ConversionOptions(min_elements=16)); "
             "print(sorted(m for m in ('_hashlib', 'secrets', 'onnx.helper') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "m.onnx"), str(tmp_path / "o.onnx")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o.onnx").exists() and result.stdout.split() == ["[]"]
