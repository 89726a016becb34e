import hashlib

import numpy as np
import onnx
import pytest

from helpers import embedding_mlp, run, save
from olive_bf16_pass import ConversionError, ConversionOptions, convert_file
from olive_bf16_pass.io.source import INLINE_LIMIT, external_info, read_model
from olive_bf16_pass.io.wire import LIFTED


def test_single_file_skeleton_leaves_large_tensors_on_disk(tmp_path):
    path = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    source = read_model(path)
    raw = path.read_bytes()
    full = onnx.load(path)
    for tensor in source.model.graph.initializer:
        original = next(t for t in full.graph.initializer if t.name == tensor.name)
        if len(original.raw_data) >= INLINE_LIMIT:
            info = external_info(tensor)
            assert tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data
            assert info["location"] == LIFTED  # no file bears that name: only the reader resolves it
            start, length = int(info["offset"]), int(info["length"])
            assert raw[start : start + length] == original.raw_data
        else:
            assert tensor == original
    assert source.file_bytes == len(raw)
    # everything but the large tensors' bytes is the same model
    assert source.model.graph.node == full.graph.node and source.model.opset_import == full.opset_import


def test_external_data_model_is_read_without_loading_data(tmp_path):
    path = save(embedding_mlp(), tmp_path / "m.onnx", external=True)
    source = read_model(path)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in source.model.graph.initializer)
    assert source.file_bytes == path.stat().st_size + (tmp_path / "m.onnx.data").stat().st_size


def test_writes_are_page_aligned_in_external_data(tmp_path):
    from olive_bf16_pass import convert_file

    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    convert_file(src, out, save_as_external_data=True)
    model = onnx.load(out, load_external_data=False)
    offsets = [int(external_info(t)["offset"]) for t in model.graph.initializer if t.external_data]
    assert offsets and all(o % 4096 == 0 for o in offsets)
    assert {external_info(t)["location"] for t in model.graph.initializer if t.external_data} == {"m.onnx.data"}


def test_input_files_are_never_modified(tmp_path):
    from olive_bf16_pass import convert_file

    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx", external=True)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    convert_file(src, tmp_path / "bf16.onnx")
    convert_file(src, tmp_path / "bf16_ext.onnx", save_as_external_data=True)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.name in digest} == digest


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    (tmp_path / "inner").mkdir()
    model = embedding_mlp()
    path = save(model, tmp_path / "inner" / "m.onnx", external=True)
    loaded = onnx.load(path, load_external_data=False)
    for t in loaded.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../m.onnx.data"
    (tmp_path / "m.onnx.data").write_bytes((tmp_path / "inner" / "m.onnx.data").read_bytes())
    onnx.save(loaded, path)
    with pytest.raises(ConversionError, match="not a plain relative path inside the model's folder"):
        read_model(path)


def test_short_external_data_is_refused(tmp_path):
    path = save(embedding_mlp(), tmp_path / "m.onnx", external=True)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ConversionError, match="shorter .* than the tensor needs"):
        read_model(path)


def test_truncated_single_file_is_refused(tmp_path):
    path = save(embedding_mlp(), tmp_path / "m.onnx")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ConversionError, match="not a valid ONNX model"):
        read_model(path)


def test_rounding_while_streaming_equals_rounding_in_memory(tmp_path):
    from olive_bf16_pass import convert_file, convert_model

    model = embedding_mlp(vocab=3000, hidden=64)  # tensors over one streaming chunk are not needed here
    src = save(model, tmp_path / "m.onnx")
    convert_file(src, tmp_path / "out.onnx")
    assert onnx.load(tmp_path / "out.onnx") == convert_model(model)[0]
    data = np.frombuffer(
        next(t for t in onnx.load(tmp_path / "out.onnx").graph.initializer if t.name == "E_bf16").raw_data, np.uint16
    )
    assert data.size == 3000 * 64


def test_expected_sizes_of_every_kind_of_tensor():
    from olive_bf16_pass.dtypes import expected_nbytes

    def size(data_type, dims=(3, 5)):
        return expected_nbytes(onnx.TensorProto(dims=list(dims), data_type=data_type))

    assert size(onnx.TensorProto.FLOAT) == 60 and size(onnx.TensorProto.BFLOAT16) == 30
    assert size(onnx.TensorProto.INT4) == 8 and size(onnx.TensorProto.UINT4, (4,)) == 2  # packed, rounded up
    assert size(onnx.TensorProto.STRING) is None and size(onnx.TensorProto.UNDEFINED) is None
    assert size(onnx.TensorProto.FLOAT, ()) == 4  # a scalar


def _typed_ints_model() -> onnx.ModelProto:
    """Integer-valued tensors in their packed varint fields, as onnx.helper.make_tensor writes them."""
    from onnx import helper

    rng = np.random.default_rng(0)
    tensors = {
        "i64": (onnx.TensorProto.INT64, rng.integers(-(2**60), 2**60, 400)),  # int64_data, 10-byte varints
        "i32": (onnx.TensorProto.INT32, rng.integers(-(2**31), 2**31 - 1, 400)),  # int32_data
        "u64": (onnx.TensorProto.UINT64, rng.integers(0, 2**63, 400, dtype=np.uint64)),  # uint64_data
        "f16": (onnx.TensorProto.FLOAT16, rng.standard_normal(600).astype(np.float16)),  # int32_data, as bits
        "flags": (onnx.TensorProto.BOOL, rng.integers(0, 2, 2000).astype(bool)),  # int32_data, 1-byte varints
    }
    inits = [helper.make_tensor(name, dtype, [len(values)], values.tolist()) for name, (dtype, values) in tensors.items()]
    w = onnx.numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in tensors]
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
    outputs = [helper.make_tensor_value_info(f"{name}_out", dtype, [len(values)]) for name, (dtype, values) in tensors.items()]
    graph = helper.make_graph(nodes, "ints", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
                              [*outputs, helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])], [*inits, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_integers_in_varint_fields_stay_on_disk_and_come_back_in_their_own_fields(tmp_path):
    """int32_data / int64_data / uint64_data (FLOAT16 and BOOL bits too) are lifted like raw_data, so memory does
    not grow with them, and written back verbatim: a conversion that converts nothing gives the input's bytes."""
    from olive_bf16_pass.io.wire import FIELD_KEY

    src = tmp_path / "ints.onnx"
    onnx.save(_typed_ints_model(), str(src))
    skeleton = read_model(src).model
    lifted = {t.name: {e.key: e.value for e in t.external_data} for t in skeleton.graph.initializer
              if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {name: info.get(FIELD_KEY) for name, info in lifted.items()} == {
        "i64": "int64_data", "i32": "int32_data", "u64": "uint64_data", "f16": "int32_data", "flags": "int32_data",
        "w": None}
    assert all(not (t.int32_data or t.int64_data or t.uint64_data) for t in skeleton.graph.initializer)

    same = tmp_path / "same.onnx"
    convert_file(src, same, ConversionOptions(min_elements=10**6))
    assert same.read_bytes() == src.read_bytes()
    for external in (False, True):
        out = tmp_path / f"out{external}.onnx"
        convert_file(src, out, ConversionOptions(min_elements=16), save_as_external_data=external)
        model = onnx.load(str(out), load_external_data=False)
        fields = {t.name: [f.name for f, _ in t.ListFields() if f.name.endswith("_data")] for t in model.graph.initializer}
        assert fields["i64"] == ["int64_data"] and fields["u64"] == ["uint64_data"] and fields["flags"] == ["int32_data"]
        x = {"x": np.ones((1, 16), np.float32)}
        got, want = run(out, x), run(src, x)
        assert all(np.array_equal(a, b) for a, b in zip(got[:-1], want[:-1]))  # the integers, bit for bit


def test_a_varint_field_with_the_wrong_count_is_refused(tmp_path):
    model = _typed_ints_model()
    tensor = next(t for t in model.graph.initializer if t.name == "i64")
    del tensor.int64_data[-1]  # 399 values for shape [400]
    src = tmp_path / "short.onnx"
    onnx.save(model, str(src))
    with pytest.raises(ConversionError, match=r"'i64'.*int64_data holds 399 values, but shape \[400\]"):
        read_model(src)
