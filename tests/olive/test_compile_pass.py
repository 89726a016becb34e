"""VitisAIContextCompile (the Olive pass) and the Vitis AI readiness check inside OnnxFloatToBFloat16, up to the
boundary: no Vitis AI EP here, so the missing-EP path runs for real and the compile child is a stand-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from helpers import save, text_encoder
from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.passes.olive_pass import create_pass_from_dict

from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.olive.compile_pass import VitisAIContextCompile
from olive_bf16_pass.olive.passes import OnnxFloatToBFloat16

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "recipes" / "vaiml_config.json")
NPU = AcceleratorSpec(accelerator_type="npu", execution_provider="VitisAIExecutionProvider")
VITIS = {"execution_provider": ["VitisAIExecutionProvider"],
         "provider_options": [{"config_file": CONFIG, "cache_dir": "cache", "cache_key": "bce"}]}
NO_VITISAI = pytest.mark.skipif("VitisAIExecutionProvider" in ort.get_available_providers(),
                                reason="this machine has the Vitis AI EP")
FAKE_EP = """
import json, sys
import onnx
from onnx import helper, TensorProto
job = json.loads(sys.stdin.read())
node = helper.make_node("EPContext", ["input_ids"], ["out"], domain="com.microsoft")
graph = helper.make_graph([node], "ctx", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 512])],
                          [helper.make_tensor_value_info("out", TensorProto.INT64, [1, 512])])
onnx.save(helper.make_model(graph), job["entries"]["ep.context_file_path"])
"""


def _compile_pass(**config):
    return create_pass_from_dict(VitisAIContextCompile, {"config_file": CONFIG, **config}, disable_search=True,
                                 accelerator_spec=NPU)


def test_the_pass_is_discovered():
    from olive.package_config import OlivePackageConfig

    from olive_bf16_pass.olive.discovery import PLUGIN_PASSES, merged_package_config

    assert PLUGIN_PASSES["VitisAIContextCompile"]["module_path"].endswith("compile_pass.VitisAIContextCompile")
    package = OlivePackageConfig.parse_file_or_obj(OlivePackageConfig.get_default_config_path())
    assert package.import_pass_module("VitisAIContextCompile") is VitisAIContextCompile
    assert "VitisAIContextCompile" in merged_package_config()["passes"]


@NO_VITISAI
def test_without_the_ep_the_pass_fails_at_once_with_one_line(tmp_path):
    src = save(text_encoder(300, seq=512, batch=1), tmp_path / "bce.onnx")
    with pytest.raises(ConversionError) as info:
        _compile_pass().run(ONNXModelHandler(str(src)), str(tmp_path / "out"))
    message = str(info.value)
    assert message.startswith("VitisAIContextCompile: VitisAIExecutionProvider is not available")
    assert "Ryzen AI Software" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # no CPU model written and called compiled


def test_the_pass_writes_the_deploy_folder_and_loads_it_as_an_app_would(tmp_path, monkeypatch):
    from olive_bf16_pass.vitisai import compile as vcompile
    from olive_bf16_pass.vitisai import deploy

    script = tmp_path / "fake_ep.py"
    script.write_text(FAKE_EP)
    real = deploy.run_compile
    monkeypatch.setattr(vcompile, "require_vitisai", lambda: None)  # the stand-in EP "is there"
    monkeypatch.setattr(deploy, "require_vitisai", lambda: None)
    monkeypatch.setattr(deploy, "run_compile", lambda *a, **k: real(*a[:6], command=[sys.executable, str(script)]))
    src = save(text_encoder(300, seq=512, batch=1), tmp_path / "bce.onnx")
    record = {"source_model_path": "/x/fp32.onnx", "bf16_tensors": 3}
    model = ONNXModelHandler(str(src), model_attributes={"_name_or_path": "tok", "olive_bf16_pass": record})
    out = _compile_pass(cache_key="bce", timeout_s=60).run(model, str(tmp_path / "out"))
    ctx = Path(out.model_path)  # Olive resolves the folder + onnx_file_name to the file
    folder = ctx.parent
    assert ctx.name == "bce_ctx.onnx" and ctx.is_file() and folder == tmp_path / "out"
    assert {"manifest.json", "README.md", "vaiml_config.json"} <= {p.name for p in folder.iterdir()}
    options = out.inference_settings["provider_options"][0]
    assert out.inference_settings["execution_provider"] == ["VitisAIExecutionProvider"]
    assert Path(options["config_file"]) == folder / "vaiml_config.json"  # the same file the compile used
    assert options["cache_key"] == json.loads((folder / "manifest.json").read_text())["cache_key"]
    assert options["cache_key"].startswith("bce-m")
    attrs = out.model_attributes
    assert attrs["olive_bf16_pass"]["source_model_path"] == "/x/fp32.onnx"  # the evaluator's FP32 reference
    assert attrs["olive_bf16_pass"]["bf16_tensors"] is None  # compiled in: no "a later pass undid" alarm


def test_the_pass_checks_before_compiling(tmp_path, monkeypatch):
    from olive_bf16_pass.vitisai import compile as vcompile

    monkeypatch.setattr(vcompile, "require_vitisai", lambda: None)
    src = save(text_encoder(300), tmp_path / "dynamic.onnx")
    with pytest.raises(ConversionError, match=r"VitisAIContextCompile: not ready for VitisAIExecutionProvider .*"
                                              r"blocker: dynamic input dims.*check: false skips"):
        _compile_pass().run(ONNXModelHandler(str(src)), str(tmp_path / "out"))


@pytest.mark.parametrize("by", ["accelerator", "inference_settings"])
def test_bf16_pass_stops_a_model_the_ep_cannot_take_before_evaluation(tmp_path, by):
    src = save(text_encoder(300), tmp_path / "dynamic.onnx")
    config, spec = ({}, NPU) if by == "accelerator" else ({"inference_settings": VITIS}, None)
    p = create_pass_from_dict(OnnxFloatToBFloat16, config, disable_search=True, accelerator_spec=spec)
    with pytest.raises(ConversionError) as info:
        p.run(ONNXModelHandler(str(src)), str(tmp_path / "out"))
    message = str(info.value)
    assert "OnnxFloatToBFloat16: not ready for VitisAIExecutionProvider (1 blocker" in message
    assert "blocker: dynamic input dims: input_ids [batch, sequence]" in message and "DynamicToFixedShape" in message
    assert "vitisai_check: false skips this check" in message and "\n" not in message
    assert not list((tmp_path / "out").glob("*.onnx"))  # removed: nothing for Olive to evaluate
    off = create_pass_from_dict(OnnxFloatToBFloat16, {**config, "vitisai_check": False}, disable_search=True,
                                accelerator_spec=spec)
    assert off.run(ONNXModelHandler(str(src)), str(tmp_path / "out2")) is not None


def test_bf16_pass_lets_a_static_export_through_with_warnings(tmp_path, caplog):
    src = save(text_encoder(300, seq=512, batch=1), tmp_path / "static.onnx")
    p = create_pass_from_dict(OnnxFloatToBFloat16, {"storage": "float32"}, disable_search=True, accelerator_spec=NPU)
    out = p.run(ONNXModelHandler(str(src)), str(tmp_path / "out"))
    folder = Path(out.model_path)
    folder = folder if folder.is_dir() else folder.parent
    report = json.loads(next(folder.glob("*.bf16_report.json")).read_text())
    assert report["storage"] == "float32"


@pytest.mark.parametrize("stem", ["bce_ryzenai", "bce_reranker_ryzenai"])
def test_ryzenai_recipes_end_with_the_compile_and_have_fp32_twins(stem):
    recipe = json.loads((ROOT / "recipes" / f"{stem}.json").read_text())
    twin = json.loads((ROOT / "recipes" / f"{stem}_fp32.json").read_text())
    assert list(recipe["passes"]) == ["conversion", "bf16", "compile"]
    compile_step = recipe["passes"]["compile"]
    assert compile_step["type"] == "VitisAIContextCompile" and compile_step["timeout_s"] > 0
    assert compile_step["config_file"] == recipe["passes"]["bf16"]["inference_settings"]["provider_options"][0][
        "config_file"]
    assert recipe["evaluators"]["fidelity"]["fp32_twin"] == f"recipes/{stem}_fp32.json"
    assert twin["passes"]["bf16"]["storage"] == "float32" and "storage" not in recipe["passes"]["bf16"]
    assert twin["input_model"] == recipe["input_model"] and twin["passes"]["conversion"] == recipe["passes"][
        "conversion"]
    assert twin["output_dir"] != recipe["output_dir"]
    assert twin["passes"]["compile"]["cache_key"] != compile_step["cache_key"]


def test_the_evaluators_failure_names_the_fp32_twin():
    import olive_bf16_pass.olive.evaluators  # noqa: F401  (loads fidelity_base in its order)
    from olive_bf16_pass.evaluation.sessions import fp32_twin_line

    line = fp32_twin_line("recipes/bce_ryzenai_fp32.json", "VitisAIExecutionProvider ran 0.0% ... ONNX Runtime "
                                                           "fell back silently")
    assert line.endswith("olive run --config recipes/bce_ryzenai_fp32.json")
    assert fp32_twin_line("recipes/x.json", "ONNX Runtime did not run the BF16 model on ['VitisAI...']: boom")
    assert fp32_twin_line("recipes/x.json", "cosine 0.5 below the threshold") is None
    assert fp32_twin_line(None, "fell back") is None
