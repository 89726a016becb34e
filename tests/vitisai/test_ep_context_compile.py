"""The EP-context compile and the deploy folder, up to the boundary: no Vitis AI EP here.

The session and provider options are checked against AMD's documented keys:
- amd/ryzen-ai-documentation docs/modelrun.rst, "ONNX Runtime EP Context Cache": session options
  ep.context_enable (1 dumps the context), ep.context_file_path, ep.context_embed_mode (1 embeds it);
- docs/modelrun.rst, provider options: config_file, cache_dir, cache_key (BF16), enable_cache_file_io_in_mem,
  encryption_key; docs/app_development.rst: the app passes the same config_file used to precompile.
The compile child is replaced by small scripts (one that writes an EPContext model, one that hangs, one that
writes a plain model) to test the watchdog and the checks on what comes back; the missing-EP path runs for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest
from helpers import save, text_encoder

from olive_bf16_pass.vitisai import compile as vcompile
from olive_bf16_pass.vitisai import deploy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "recipes" / "vaiml_config.json"
AMD_SESSION_KEYS = {"ep.context_enable", "ep.context_file_path", "ep.context_embed_mode"}  # modelrun.rst
AMD_PROVIDER_KEYS = {"config_file", "cache_dir", "cache_key", "enable_cache_file_io_in_mem", "encryption_key"}
NO_VITISAI = pytest.mark.skipif("VitisAIExecutionProvider" in ort.get_available_providers(),
                                reason="this machine has the Vitis AI EP")

FAKE_EP = """
import json, sys
import onnx
from onnx import helper, TensorProto
job = json.loads(sys.stdin.read())
print("compiling", job["model"], flush=True)
kind = sys.argv[1]
if kind == "hang":
    import time; time.sleep(600)
if kind == "fail":
    print("[Vitis AI EP] vaiml_partition: unsupported op XYZ", flush=True); sys.exit(1)
op = "EPContext" if kind == "ok" else "Identity"
domain = "com.microsoft" if kind == "ok" else ""
node = helper.make_node(op, ["input_ids"], ["out"], domain=domain)
graph = helper.make_graph([node], "ctx", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 512])],
                          [helper.make_tensor_value_info("out", TensorProto.INT64, [1, 512])])
onnx.save(helper.make_model(graph), job["entries"]["ep.context_file_path"])
"""


@pytest.fixture
def model(tmp_path):
    return save(text_encoder(300, seq=512, batch=1), tmp_path / "bce.onnx")


def _fake(tmp_path, kind):
    script = tmp_path / "fake_ep.py"
    script.write_text(FAKE_EP)
    return [sys.executable, str(script), kind]


def test_session_options_are_amds_documented_keys(tmp_path):
    entries = vcompile.session_config_entries(tmp_path / "m_ctx.onnx")
    assert set(entries) == AMD_SESSION_KEYS
    assert entries["ep.context_enable"] == "1" and entries["ep.context_embed_mode"] == "1"
    assert vcompile.session_config_entries("x", embed=False)["ep.context_embed_mode"] == "0"
    so = ort.SessionOptions()  # ONNX Runtime takes them as session config entries
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
        assert so.get_session_config_entry(key) == value


def test_provider_options_are_amds_documented_keys():
    options = vcompile.provider_options("vaiml_config.json", "cache", "bce-m0123-ort1.20")
    assert set(options) <= AMD_PROVIDER_KEYS and {"config_file", "cache_dir", "cache_key"} == set(options)
    assert not {"target", "xclbin", "opt_level"} & set(options)  # INT8-only options (modelrun.rst)


def test_cache_key_carries_model_and_versions(model):
    key = deploy.cache_key_for(model, "bce", {"ort": "1.20.1", "vai": "1.20.1.dev1", "voe": "1.6.0"})
    assert key.startswith("bce-m") and key.endswith("-ort1.20.1-vai1.20.1.dev1-voe1.6.0")
    assert deploy.cache_key_for(model, None, {"ort": "1.20.1"}).startswith("bce-m")  # the model's stem


@NO_VITISAI
def test_missing_ep_fails_at_once_for_real(model, tmp_path):
    with pytest.raises(vcompile.VitisAIUnavailable, match="VitisAIExecutionProvider is not available"):
        deploy.compile_to_folder(model, tmp_path / "deploy", CONFIG)
    assert not (tmp_path / "deploy").exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "olive_bf16_pass", "compile", str(model), str(tmp_path / "out"),
                           "--target", "vitisai"], capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("olive-bf16: error: VitisAIExecutionProvider is not available")
    assert "Ryzen AI Software" in lines[0] and "Nothing was compiled" in lines[0]
    assert not (tmp_path / "out").exists() and time.monotonic() - started < 60
    child = subprocess.run([sys.executable, "-m", "olive_bf16_pass.vitisai.compile"], input="{}", text=True,
                           capture_output=True, env=env, check=False)  # the real compile child refuses too
    assert child.returncode == 3 and "VitisAIExecutionProvider is not available" in child.stderr


def test_deploy_folder_from_a_compile(model, tmp_path):
    out = tmp_path / "deploy"
    done = deploy.compile_to_folder(model, out, CONFIG, "bce", timeout_s=120, command=_fake(tmp_path, "ok"))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bce_ctx.onnx", "compile.log", "manifest.json",
                                                     "vaiml_config.json"]
    assert (out / "vaiml_config.json").read_bytes() == CONFIG.read_bytes()  # the same config the app passes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == done.manifest
    assert manifest["source"]["sha256"] == deploy.sha256(model)
    assert {o["path"] for o in manifest["outputs"]} == {"bce_ctx.onnx", "vaiml_config.json"}
    assert all(o["sha256"] == deploy.sha256(out / o["path"]) for o in manifest["outputs"])
    assert manifest["execution_provider"] == "VitisAIExecutionProvider"
    assert set(manifest["provider_options"]) <= AMD_PROVIDER_KEYS
    assert manifest["provider_options"]["config_file"] == "vaiml_config.json"
    assert manifest["provider_options"]["cache_dir"] == "cache"
    assert manifest["provider_options"]["cache_key"] == manifest["cache_key"]
    assert manifest["cache_key"].startswith("bce-m") and f"-ort{ort.__version__}" in manifest["cache_key"]
    assert set(manifest["session_options"]) == AMD_SESSION_KEYS
    assert manifest["session_options"]["ep.context_file_path"] == "bce_ctx.onnx"
    assert {"onnxruntime", "onnxruntime-vitisai", "voe", "npu_driver"} <= set(manifest["versions"])
    assert manifest["versions"]["onnxruntime"] == ort.__version__
    readme = (out / "README.md").read_text()
    assert '"bce_ctx.onnx"' in readme and '"config_file": "vaiml_config.json"' in readme
    assert 'providers=["VitisAIExecutionProvider"]' in readme and manifest["cache_key"] in readme


def test_a_hanging_compile_is_stopped(model, tmp_path):
    started = time.monotonic()
    with pytest.raises(vcompile.CompileFailed, match=r"ran past its limit of 2 s and was stopped .*#312"):
        deploy.compile_to_folder(model, tmp_path / "d", CONFIG, timeout_s=2, command=_fake(tmp_path, "hang"))
    assert time.monotonic() - started < 30
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_no_ep_context_node_is_no_compile(model, tmp_path):
    with pytest.raises(vcompile.CompileFailed, match="holds no EPContext node: the EP compiled nothing"):
        deploy.compile_to_folder(model, tmp_path / "d", CONFIG, command=_fake(tmp_path, "plain"))
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_a_failed_compile_says_the_logs_last_line(model, tmp_path):
    with pytest.raises(vcompile.CompileFailed, match=r"failed \(exit 1\): \[Vitis AI EP\] vaiml_partition: "
                                                     r"unsupported op XYZ"):
        deploy.compile_to_folder(model, tmp_path / "d", CONFIG, command=_fake(tmp_path, "fail"))
