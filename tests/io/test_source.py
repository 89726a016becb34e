import hashlib

import numpy as np
import onnx
import pytest

from helpers import embedding_mlp, save
from olive_bf16_pass import ConversionError
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
    from olive_bf16_pass.traversal import expected_nbytes

    def size(data_type, dims=(3, 5)):
        return expected_nbytes(onnx.TensorProto(dims=list(dims), data_type=data_type))

    assert size(onnx.TensorProto.FLOAT) == 60 and size(onnx.TensorProto.BFLOAT16) == 30
    assert size(onnx.TensorProto.INT4) == 8 and size(onnx.TensorProto.UINT4, (4,)) == 2  # packed, rounded up
    assert size(onnx.TensorProto.STRING) is None and size(onnx.TensorProto.UNDEFINED) is None
    assert size(onnx.TensorProto.FLOAT, ()) == 4  # a scalar
