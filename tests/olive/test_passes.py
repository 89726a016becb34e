"""OnnxFloatToBFloat16 through Olive's own machinery, as Olive tests its passes."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from olive.model import ONNXModelHandler
from olive.passes.olive_pass import create_pass_from_dict

from helpers import embedding_mlp, run, save
from olive_bf16_pass.olive.passes import SOURCE_MODEL_ATTRIBUTE, OnnxFloatToBFloat16

IDS = np.array([[3, 1, 4, 1]], np.int64)


def _run_pass(tmp_path, config, external_source=False):
    src = save(embedding_mlp(vocab=256, hidden=64), tmp_path / "model.onnx", external=external_source)
    handler = ONNXModelHandler(model_path=str(tmp_path) if external_source else str(src),
                               onnx_file_name="model.onnx" if external_source else None)
    p = create_pass_from_dict(OnnxFloatToBFloat16, config, disable_search=True)
    return src, p.run(handler, str(tmp_path / "out"))


def test_pass_converts_and_records_its_source(tmp_path):
    settings = {"execution_provider": ["CPUExecutionProvider"], "provider_options": [{}]}
    src, out = _run_pass(tmp_path, {"inference_settings": settings})
    assert isinstance(out, ONNXModelHandler)
    assert out.model_attributes[SOURCE_MODEL_ATTRIBUTE] == str(src.resolve())
    assert out.model_attributes["bf16_conversion"]["converted"] == 3
    assert out.inference_settings == settings
    model = out.load_model()
    assert {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16} == {
        "E_bf16", "W1_bf16", "W2_bf16"
    }
    onnx.checker.check_model(out.model_path, full_check=True)
    np.testing.assert_allclose(run(out.model_path, {"ids": IDS})[0], run(src, {"ids": IDS})[0], atol=0.05)


def test_pass_parameters_reach_the_converter(tmp_path):
    _, out = _run_pass(
        tmp_path,
        {"min_elements": 16, "exclude_initializers": ["W2"], "rounding": "truncate", "cast_after_gather": False},
    )
    model = out.load_model()
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types["W2"] == onnx.TensorProto.FLOAT and types["b1_bf16"] == onnx.TensorProto.BFLOAT16
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    assert gather.input[0] == "E"  # widened before the Gather, as asked
    w1 = onnx.numpy_helper.to_array(embedding_mlp(vocab=256, hidden=64).graph.initializer[1])
    stored = np.frombuffer(next(t for t in model.graph.initializer if t.name == "W1_bf16").raw_data, np.uint16)
    np.testing.assert_array_equal(stored, w1.ravel().view(np.uint32) >> 16)  # truncation


def test_pass_writes_external_data_when_asked(tmp_path):
    _, out = _run_pass(tmp_path, {"save_as_external_data": True, "external_data_name": "weights.bin"},
                       external_source=True)
    assert (tmp_path / "out" / "weights.bin").exists()
    assert out.model_path.endswith("model.onnx")
    np.testing.assert_allclose(run(out.model_path, {"ids": IDS})[0], run(tmp_path / "model.onnx", {"ids": IDS})[0],
                               atol=0.05)


def test_pass_rejects_one_file_per_tensor_clearly(tmp_path):
    with pytest.raises(ValueError, match="all_tensors_to_one_file"):
        _run_pass(tmp_path, {"save_as_external_data": True, "all_tensors_to_one_file": False})


def test_bad_option_values_are_refused_by_the_options(tmp_path):
    with pytest.raises(ValueError, match="rounding must be one of"):
        _run_pass(tmp_path, {"rounding": "stochastic"})


# ----------------------------------------------------------------------------- Vitis AI target

VITIS = {
    "execution_provider": ["VitisAIExecutionProvider"],
    "provider_options": [{"config_file": "vaiml_config.json", "cache_dir": "cache", "cache_key": "bce"}],
}


@pytest.mark.parametrize("by", ["inference_settings", "accelerator"])
def test_pass_refuses_external_data_for_vitis_ai(tmp_path, by):
    from olive.hardware.accelerator import AcceleratorSpec

    config = {"save_as_external_data": True}
    spec = None
    if by == "inference_settings":
        config["inference_settings"] = VITIS
    else:
        spec = AcceleratorSpec(accelerator_type="npu", execution_provider="VitisAIExecutionProvider")
    src = save(embedding_mlp(vocab=256, hidden=64), tmp_path / "model.onnx")
    p = create_pass_from_dict(OnnxFloatToBFloat16, config, disable_search=True, accelerator_spec=spec)
    with pytest.raises(ValueError, match="VitisAIExecutionProvider, which cannot load ONNX external data") as info:
        p.run(ONNXModelHandler(str(src)), str(tmp_path / "out"))
    assert "save_as_external_data: false" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_pass_refuses_a_vitis_ai_output_over_2gb_and_removes_it(tmp_path, monkeypatch):
    """The core writes external data on its own past 2 GB; simulated here by a two-file report."""
    from olive_bf16_pass.olive import passes

    real = passes.convert_file

    def two_files(src, dst, *args, **kwargs):
        report = real(src, dst, *args, **kwargs)
        data = dst.parent / "model.onnx.data"
        data.write_bytes(b"\0" * 16)
        report.destination = [str(dst), str(data)]
        return report

    monkeypatch.setattr(passes, "convert_file", two_files)
    with pytest.raises(ValueError, match="over 2 GB"):
        _run_pass(tmp_path, {"inference_settings": VITIS})
    assert not list((tmp_path / "out").glob("*"))


def test_pass_versions_the_vitis_ai_cache_key(tmp_path):
    import hashlib

    import onnxruntime

    _, out = _run_pass(tmp_path, {"inference_settings": VITIS})
    options = out.inference_settings["provider_options"][0]
    digest = hashlib.sha256(Path(out.model_path).read_bytes()).hexdigest()[:12]
    assert options["cache_key"].startswith(f"bce-m{digest}-ort{onnxruntime.__version__}")
    assert {**options, "cache_key": "bce"} == VITIS["provider_options"][0]  # nothing else changed
    assert VITIS["provider_options"][0]["cache_key"] == "bce"


def test_pass_adds_no_cache_key_where_none_was_given(tmp_path):
    settings = {"execution_provider": ["VitisAIExecutionProvider"], "provider_options": [{"config_file": "c.json"}]}
    _, out = _run_pass(tmp_path, {"inference_settings": settings})
    assert out.inference_settings == settings


# ----------------------------------------------------------------------------- parameters

def test_pass_parameters_are_the_options_own():
    from olive_bf16_pass.options import pass_parameters

    config = OnnxFloatToBFloat16._default_config(None)
    for name, param in pass_parameters().items():
        assert (config[name].type_, config[name].default_value, config[name].description) == (
            param["type_"], param["default_value"], param["description"])
    assert {"inference_settings", "save_as_external_data", "convert_attribute"} <= set(config)


def _recording_convert_file(monkeypatch):
    from olive_bf16_pass.olive import passes

    calls = []
    real = passes.convert_file

    def record(src, dst, options=None, **kwargs):
        calls.append(dict(kwargs))
        return real(src, dst, options, **kwargs)

    monkeypatch.setattr(passes, "convert_file", record)
    return calls


@pytest.mark.parametrize("wanted", [True, False])
def test_convert_attribute_reaches_the_converter(tmp_path, monkeypatch, wanted):
    calls = _recording_convert_file(monkeypatch)
    _, out = _run_pass(tmp_path, {"save_as_external_data": True, "convert_attribute": wanted})
    assert calls[0]["convert_attribute"] is wanted and calls[0]["save_as_external_data"] is True
    assert out.model_attributes["bf16_conversion"]["converted"] == 3


@pytest.mark.parametrize("upgrade", [True, False])
def test_the_pass_upgrades_old_opsets_or_refuses_when_asked(tmp_path, upgrade):
    from onnx import TensorProto, helper

    from helpers import make_model, rand, tensor

    old = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [tensor("W", rand((64, 64)))],
        opset=12,
    )
    src = save(old, tmp_path / "old.onnx")
    p = create_pass_from_dict(
        OnnxFloatToBFloat16, {"min_elements": 16, "upgrade_opset": upgrade}, disable_search=True
    )
    if upgrade:
        out = p.run(ONNXModelHandler(model_path=str(src)), str(tmp_path / "out"))
        assert out.model_attributes["bf16_conversion"]["opset_upgrade"] == [12, 13]
    else:
        with pytest.raises(ValueError, match="opset 12.*upgrade_opset"):
            p.run(ONNXModelHandler(model_path=str(src)), str(tmp_path / "out"))
