"""storage="float32": the same selection and rounding as storage bfloat16, stored as FP32 with no Cast (the form
AMD documents as the Ryzen AI compiler's input, docs/model_quantization.rst; Quark's simulate_bf16). Bit-exact
with ml_dtypes, streamed in chunks like the BF16 form, and a CPU run sees exactly the BF16 model's weights."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from helpers import embedding_mlp, run, save, text_encoder
from onnx import numpy_helper

from olive_bf16_pass.cli import main
from olive_bf16_pass.convert import convert_file, convert_model
from olive_bf16_pass.io import streamer
from olive_bf16_pass.options import ConversionOptions

F32 = ConversionOptions(storage="float32", min_elements=16)
B16 = ConversionOptions(min_elements=16)


def _weights(path_or_model):
    model = onnx.load(path_or_model) if not isinstance(path_or_model, onnx.ModelProto) else path_or_model
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, model


def _expected(values, rounding="nearest_even"):
    if rounding == "truncate":
        return (values.view(np.uint32) & 0xFFFF0000).view(np.float32)
    return values.astype(ml_dtypes.bfloat16).astype(np.float32)


@pytest.mark.parametrize("external", [False, True], ids=["single_file", "external_data"])
@pytest.mark.parametrize("chunk", [None, 4096], ids=["chunk16MB", "chunk4KB"])
def test_bit_exact_with_ml_dtypes_and_no_cast(tmp_path, monkeypatch, external, chunk):
    if chunk:  # many chunks per tensor: the streamed path's offsets at 4 bytes an element
        monkeypatch.setattr(streamer, "CHUNK_BYTES", chunk)
    src = save(embedding_mlp(vocab=1024, hidden=64), tmp_path / "in.onnx", external=external)
    out = tmp_path / "out.onnx"
    report = convert_file(src, out, F32, save_as_external_data=external)
    before, source_model = _weights(onnx.load(src))
    after, model = _weights(out)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in source_model.graph.node]  # no Cast added
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)
    assert sorted(r.name for r in report.converted) == ["E", "W1", "W2", "b1", "beta", "gamma"]
    for name, values in before.items():
        assert np.array_equal(after[name].view(np.uint32), _expected(values).view(np.uint32)), name
        assert not (after[name].view(np.uint32) & 0xFFFF).any()  # BF16-exact: the low half is zero
    assert report.storage == "float32" and all(r.widened == "none" for r in report.converted)
    assert all(r.bytes_after == r.bytes_before for r in report.converted)
    assert abs(report.file_bytes_after - report.file_bytes_before) < 1024


def test_same_weights_as_the_bf16_form_so_cpu_outputs_are_identical(tmp_path):
    src = save(text_encoder(300), tmp_path / "in.onnx")
    convert_file(src, tmp_path / "f32.onnx", F32)
    b16 = convert_file(src, tmp_path / "b16.onnx", B16)
    assert b16.storage == "bfloat16"
    ids = np.random.default_rng(0).integers(0, 300, (2, 16))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    a, = run(str(tmp_path / "f32.onnx"), feeds)
    b, = run(str(tmp_path / "b16.onnx"), feeds)
    assert np.array_equal(a, b)  # the Cast widens BF16 to exactly these FP32 values
    assert (tmp_path / "f32.onnx").stat().st_size > 1.8 * (tmp_path / "b16.onnx").stat().st_size


def test_rounding_options_apply_in_float32_storage(tmp_path):
    values = np.array([1.0, 1.00390625, 1.01171875, 3.4e38, -3.4e38, np.inf, np.nan] * 300, np.float32)
    model = embedding_mlp()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(values[:2048].reshape(64, 32), "E"))
    for rounding in ("nearest_even", "truncate"):
        out, _ = convert_model(model, ConversionOptions(storage="float32", rounding=rounding, min_elements=16))
        got = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == "E")).reshape(-1)
        want = _expected(values[:2048], rounding)
        if rounding == "nearest_even":  # saturate (the default): 3.4e38 rounds past BF16's max, clamped to it
            big = np.abs(values[:2048]) == np.float32(3.4e38)
            want[big] = np.sign(values[:2048][big]) * np.float32(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(got), nan)
        assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32)), rounding
        assert not any(n.op_type == "Cast" for n in out.graph.node)


def test_idempotent(tmp_path):
    src = save(embedding_mlp(), tmp_path / "in.onnx")
    convert_file(src, tmp_path / "once.onnx", F32)
    convert_file(tmp_path / "once.onnx", tmp_path / "twice.onnx", F32)
    assert (tmp_path / "once.onnx").read_bytes() == (tmp_path / "twice.onnx").read_bytes()


def test_cli_storage_flag_and_summary(capsys, tmp_path):
    src = save(embedding_mlp(vocab=1024, hidden=64), tmp_path / "in.onnx")
    assert main(["convert", str(src), str(tmp_path / "out.onnx"), "--storage", "float32", "--report",
                 str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "rounded 3 tensors to bfloat16 values, left 3 as they were"
    assert out[1].startswith("storage: float32")
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["storage"] == "float32" and report["options"]["storage"] == "float32"
    assert main(["convert", str(src), str(tmp_path / "o2.onnx")]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("storage: bfloat16")
    assert main(["convert", str(src), str(tmp_path / "o3.onnx"), "--storage", "float16"]) == 2


def test_plan_and_inspect_say_nothing_is_saved():
    from olive_bf16_pass.plan import make_plan
    from olive_bf16_pass.traversal import Skeleton

    plan = make_plan(Skeleton.of(embedding_mlp(vocab=1024, hidden=64)), ConversionOptions(storage="float32"))
    assert plan.chosen and plan.saved_bytes == 0
    with pytest.raises(ValueError, match="storage must be one of bfloat16, float32"):
        ConversionOptions(storage="bf16")
