"""OnnxFloatToBFloat16 through Olive's own machinery, as Olive tests its passes."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from olive.model import ONNXModelHandler
from olive.passes.olive_pass import create_pass_from_dict

from helpers import embedding_mlp, run, save
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.olive.attributes import conversion_record, read_metadata, source_model_path
from olive_bf16_pass.olive.passes import OnnxFloatToBFloat16

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
    assert not out.model_attributes  # left as found: see test_composition.py
    assert source_model_path(out) == str(src.resolve())
    assert conversion_record(out)["converted"] == 3
    assert (Path(out.model_path).parent / "model.bf16_report.json").is_file()
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


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [("rounding", "nearest-even", "Input should be 'nearest_even' or 'truncate'"),
     ("min_elements", -5, "Input should be greater than or equal to 0"),
     ("all_tensors_to_one_file", False, "Input should be True"),
     ("keep_io_types", False, "inputs and outputs always stay float32"),
     ("op_include_list", ["MatMul"], "op_include_list and op_block_list are mutually exclusive")],
)
def test_bad_values_are_refused_when_the_config_is_parsed_with_the_allowed_values(tmp_path, name, value, allowed):
    config = {name: value}
    if name == "op_include_list":
        config["op_block_list"] = ["Gather"]
    with pytest.raises(ValueError, match=name) as info:
        create_pass_from_dict(OnnxFloatToBFloat16, config, disable_search=True)  # before any run
    assert allowed in str(info.value)


def test_olives_fp16_vocabulary_is_understood(tmp_path):
    _, out = _run_pass(tmp_path, {"op_include_list": ["MatMul"], "keep_io_types": True})
    model = out.load_model()
    bf16 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16}
    assert bf16 == {"W1_bf16", "W2_bf16"}  # the Gather table stays FP32: only MatMul inputs may convert


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
        _run_pass(tmp_path, {"inference_settings": VITIS, "vitisai_check": False})  # a dynamic model
    assert not list((tmp_path / "out").glob("*"))


def test_pass_versions_the_vitis_ai_cache_key(tmp_path):
    import hashlib

    import onnxruntime

    _, out = _run_pass(tmp_path, {"inference_settings": VITIS, "vitisai_check": False})  # a dynamic model
    options = out.inference_settings["provider_options"][0]
    digest = hashlib.sha256(Path(out.model_path).read_bytes()).hexdigest()[:12]
    assert options["cache_key"].startswith(f"bce-m{digest}-ort{onnxruntime.__version__}")
    assert {**options, "cache_key": "bce"} == VITIS["provider_options"][0]  # nothing else changed
    assert VITIS["provider_options"][0]["cache_key"] == "bce"


def test_pass_adds_no_cache_key_where_none_was_given(tmp_path):
    settings = {"execution_provider": ["VitisAIExecutionProvider"], "provider_options": [{"config_file": "c.json"}]}
    _, out = _run_pass(tmp_path, {"inference_settings": settings, "vitisai_check": False})  # a dynamic model
    assert out.inference_settings == settings


# ----------------------------------------------------------------------------- parameters

def test_pass_parameters_are_the_options_own():
    from olive_bf16_pass.options import pass_parameters

    config = OnnxFloatToBFloat16._default_config(None)
    for name, param in pass_parameters().items():
        assert (config[name].default_value, config[name].description) == (param["default_value"], param["description"])
        if name not in ("rounding", "min_elements", "storage"):  # these carry their allowed values in the type
            assert config[name].type_ == param["type_"]
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
    assert conversion_record(out)["converted"] == 3


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
        assert conversion_record(out)["opset_upgrade"] == [12, 13]
    else:
        with pytest.raises(ValueError, match="opset 12.*upgrade_opset"):
            p.run(ONNXModelHandler(model_path=str(src)), str(tmp_path / "out"))


@pytest.mark.slow
def test_a_bad_value_stops_a_workflow_before_the_passes_before_ours_run(tmp_path):
    from olive.workflows import run as olive_run

    src = save(embedding_mlp(vocab=256, hidden=64), tmp_path / "model.onnx")
    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(src)},
        "passes": {"shape": {"type": "OnnxPeepholeOptimizer"},
                   "bf16": {"type": "OnnxFloatToBFloat16", "rounding": "nearest-even"}},
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
    }
    with pytest.raises(ValueError, match="Input should be 'nearest_even' or 'truncate'"):
        olive_run(config)
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # the peephole pass never ran


# ----------------------------------------------------------------------------- Olive's cache

def test_the_pass_is_accelerator_agnostic_except_for_vitis_ai():
    from olive.hardware.accelerator import AcceleratorSpec

    cpu = AcceleratorSpec(accelerator_type="cpu", execution_provider="CPUExecutionProvider")
    npu = AcceleratorSpec(accelerator_type="npu", execution_provider="VitisAIExecutionProvider")
    assert OnnxFloatToBFloat16.is_accelerator_agnostic(cpu) is True
    assert OnnxFloatToBFloat16.is_accelerator_agnostic(npu) is False  # its checks differ: no CPU output reused


def test_a_versioned_cache_key_is_part_of_olives_cache_key(monkeypatch):
    """Olive keys a cached pass output by the pass config: the runtime versions must be in it."""
    from olive_bf16_pass.olive import passes

    def config_json():
        return create_pass_from_dict(OnnxFloatToBFloat16, {"inference_settings": VITIS}, disable_search=True).config.to_json()

    monkeypatch.setattr(passes, "runtime_versions", lambda: {"ort": "1.20.0", "vai": "1.5"})
    old = config_json()
    monkeypatch.setattr(passes, "runtime_versions", lambda: {"ort": "1.21.0", "vai": "1.6"})
    new = config_json()
    assert old["vitisai_runtime"] == {"ort": "1.20.0", "vai": "1.5"} and old != new
    plain = create_pass_from_dict(OnnxFloatToBFloat16, {}, disable_search=True).config.to_json()
    assert plain["vitisai_runtime"] is None  # no Vitis AI cache_key: ORT upgrades do not invalidate the cache


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"), MemoryError(), KeyError("x")])
def test_any_failure_of_the_converter_stops_olive_with_one_line(tmp_path, monkeypatch, error):
    """Olive re-raises ValueError and logs the rest, then exits 0 with no model: every failure becomes one."""
    from olive_bf16_pass.olive import passes

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(passes, "convert_file", fail)
    with pytest.raises(ValueError, match=f"OnnxFloatToBFloat16: unexpected {type(error).__name__}.*nothing was written"):
        _run_pass(tmp_path, {})


# ----------------------------------------------------------------------------- target_cosine

def _named_encoder(tmp_path, tokenizer_dir):
    """The tiny text encoder over MiniLM's vocabulary, its nodes named as exporters name them."""
    from helpers import text_encoder, vocab_size

    model = text_encoder(vocab_size(tokenizer_dir))
    for i, node in enumerate(model.graph.node):
        node.name = f"/encoder/{node.op_type.lower()}_{i}"
    return save(model, tmp_path / "model.onnx")


def _emulated_fidelity(src, tokenizer_dir, keep=()):
    """(mean, min) cosine of emulated BF16 compute with ``keep`` FP32, on the shipped corpus as the pass measures."""
    from olive_bf16_pass.emulation import EmulationOptions, emulate_file
    from olive_bf16_pass.sensitivity import Fidelity, run_all, session_for, text_feeds

    feeds = text_feeds(src, str(tokenizer_dir), None, 32, 32, 64)
    emulate_file(src, src.parent / "emulated.onnx", EmulationOptions(keep_nodes=list(keep)))
    fidelity = Fidelity(run_all(session_for(src), feeds, None), feeds)
    return fidelity(run_all(session_for(src.parent / "emulated.onnx", exact=True), feeds, None))


@pytest.mark.slow
def test_olive_run_with_target_cosine_keeps_the_nodes_found_fp32_and_meets_the_target(
    tmp_path, tokenizer_dir, olive_log_records
):
    import json

    from olive.workflows import run as olive_run

    src = _named_encoder(tmp_path, tokenizer_dir)
    emulated = _emulated_fidelity(src, tokenizer_dir)
    target = [e + 0.5 * (1 - e) for e in emulated]  # half of what BF16 compute loses, regained
    records = olive_log_records
    olive_run({
        "input_model": {"type": "ONNXModel", "model_path": str(src)},
        "passes": {"bf16": {"type": "OnnxFloatToBFloat16", "min_elements": 16, "target_cosine": target[0],
                            "target_min_cosine": target[1], "tokenizer": str(tokenizer_dir),
                            "node_block_list": ["/encoder/add_4"]}},
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
    })
    out = tmp_path / "out" / "model.onnx"
    record = json.loads(read_metadata(out)["olive_bf16_pass"])
    found = record["target_search"]
    assert found["met"] and found["nodes"] and "/encoder/add_4" not in found["nodes"], found
    assert found["target_mean"] == target[0] and found["target_min"] == target[1]
    report = json.loads((tmp_path / "out" / "model.bf16_report.json").read_text())
    assert report["target_search"] == found
    assert report["options"]["node_block_list"] == ["/encoder/add_4", *found["nodes"]]  # the user's, then found
    blocked = {"/encoder/add_4", *found["nodes"]}
    weights = {t.name for t in onnx.load(str(src)).graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    read_by_blocked = {i for n in onnx.load(str(src)).graph.node if n.name in blocked for i in n.input} & weights
    assert read_by_blocked - {"bias"}  # a node found reads a weight
    dtypes = {t.name: t.data_type for t in onnx.load(str(out)).graph.initializer}
    for name in weights:  # the weights of blocked nodes stay FP32, the others are BF16
        assert (name in read_by_blocked) == (dtypes.get(name) == onnx.TensorProto.FLOAT), name
        assert (name in read_by_blocked) != (dtypes.get(name + "_bf16") == onnx.TensorProto.BFLOAT16), name
    mean, low = _emulated_fidelity(src, tokenizer_dir, ["/encoder/add_4", *found["nodes"]])
    assert mean >= target[0] and low >= target[1]  # the target holds, measured again
    assert (mean, low) == tuple(found["verified"])
    assert any("kept in FP32: " + ", ".join(found["nodes"]) in r.getMessage() for r in records)


def test_an_unreachable_target_stops_the_pass_with_one_line(tmp_path, tokenizer_dir):
    src = _named_encoder(tmp_path, tokenizer_dir)
    p = create_pass_from_dict(OnnxFloatToBFloat16, {"target_cosine": 1.0, "tokenizer": str(tokenizer_dir)},
                              disable_search=True)
    with pytest.raises(ConversionError, match="OnnxFloatToBFloat16: the fidelity target cannot be met") as info:
        p.run(ONNXModelHandler(model_path=str(src)), str(tmp_path / "out"))
    assert "NOT met" in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.glob("out*/**/*.onnx"))  # stopped before writing


@pytest.mark.parametrize(("config", "message"), [
    ({"target_cosine": 1.5}, "target_cosine must be a cosine above 0 and at most 1"),
    ({"target_min_cosine": 0.99}, "target_min_cosine needs target_cosine"),
    ({"target_cosine": 0.999, "node_include_list": ["a"]}, "target_cosine keeps the nodes it finds FP32"),
    ({"target_cosine": 0.999, "pooling": "max"}, "Input should be 'mean', 'cls' or 'none'"),
])
def test_target_parameters_are_checked_when_the_config_is_parsed(config, message):
    with pytest.raises(ValueError, match=message):
        create_pass_from_dict(OnnxFloatToBFloat16, config, disable_search=True)
