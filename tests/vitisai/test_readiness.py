"""The Vitis AI readiness check (olive-bf16 check --target vitisai): each blocker and warning on a tiny model
built here, read as a skeleton (a 2 GB+ model is never loaded), and the verdict the CLI, inspect and the pass share.

Sources of the rules: AMD's BF16 samples (opset 17, static 1 x 512 int64 inputs, one file: RyzenAI-SW gte /
DistilBERT / BGE, BCEmbedding Docs/RyzenAI); RyzenAI-SW #224/#309 (dynamic shapes), #320 (2 GB, external data);
amd/ryzen-ai-documentation docs/ops_support.rst (Ryzen AI 1.5.0 table) and docs/app_development.rst (APU types).
"""

from __future__ import annotations

import json
import os
import resource
import sys

import numpy as np
import onnx
import pytest
from helpers import embedding_mlp, make_model, rand, save, tensor, text_encoder
from onnx import TensorProto, helper

from olive_bf16_pass.cli import main
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.vitisai import npu
from olive_bf16_pass.vitisai.operators import BF16_OPS, TABLE_SOURCE
from olive_bf16_pass.vitisai.readiness import AS_IS, check_model

VOCAB = 300


def _kinds(findings):
    return [f.kind for f in findings]


@pytest.fixture
def static(tmp_path):
    return save(text_encoder(VOCAB, seq=512, batch=1), tmp_path / "static.onnx")


@pytest.fixture
def dynamic(tmp_path):
    return save(text_encoder(VOCAB), tmp_path / "dynamic.onnx")


def test_static_export_is_ready(static):
    verdict = check_model(static, detect_npu=None)
    assert verdict.ready and verdict.blockers == []
    assert verdict.lines()[0].startswith("ready for VitisAIExecutionProvider")
    # the default storage writes BF16 + Cast, which no AMD sample shows: said, not blocked
    assert _kinds(verdict.warnings) == ["bf16_layout"]
    assert "storage=float32" in verdict.warnings[0].line
    assert check_model(static, ConversionOptions(storage="float32"), detect_npu=None).warnings == []


def test_dynamic_dims_are_named_with_the_way_out(dynamic):
    verdict = check_model(dynamic, AS_IS, detect_npu=None)
    assert not verdict.ready and _kinds(verdict.blockers) == ["dynamic_shape"]
    line = verdict.blockers[0].line
    assert "input_ids [batch, sequence]" in line and "attention_mask [batch, sequence]" in line
    assert 'DynamicToFixedShape ("dim_param": ["batch", "sequence"], "dim_value": [1, 512])' in line
    assert "1 x 512" in line


def test_old_opset_is_a_blocker(tmp_path):
    model = embedding_mlp()
    model.opset_import[0].version = 14
    verdict = check_model(save(model, tmp_path / "m.onnx"), AS_IS, detect_npu=None)
    assert "opset" in _kinds(verdict.blockers)
    assert "opset 14" in next(f.line for f in verdict.blockers if f.kind == "opset")


def test_ops_outside_amds_table_warn_and_cite_the_table(tmp_path):
    # embedding_mlp runs Relu and LayerNormalization: both blank in the table's BF16 column
    verdict = check_model(save(embedding_mlp(), tmp_path / "m.onnx"), AS_IS, detect_npu=None)
    op = next(f for f in verdict.warnings if f.kind == "operator")
    assert "Relu x1" in op.line and "LayerNormalization x1" in op.line and TABLE_SOURCE in op.line
    assert "LayerNormalization run in AMD's own BF16 samples" in op.line
    assert "operator" not in _kinds(verdict.blockers)  # a warning only: the table is incomplete


def test_operator_table_matches_amds_rows():
    # amd/ryzen-ai-documentation docs/ops_support.rst (commit 0e172c1, Ryzen AI 1.5.0): Y in the BF16 column
    assert {"MatMul", "Gemm", "Add", "Gather", "Cast", "Erf", "Tanh", "ReduceMean", "Where"} <= BF16_OPS
    assert not {"LayerNormalization", "Softmax", "Gelu", "Relu", "DequantizeLinear"} & BF16_OPS


def test_non_sample_input_types_warn(tmp_path):
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["f", "W"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [tensor("W", rand((64, 64)))])
    verdict = check_model(save(model, tmp_path / "m.onnx"), AS_IS, detect_npu=None)
    assert verdict.ready and "ids (int32)" in next(f.line for f in verdict.warnings if f.kind == "input_type")


def test_float16_and_int8_weights_mixed_in_are_blockers(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Cast", ["W16"], ["w16f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["h", "w16f"], ["h2"]),
        helper.make_node("DequantizeLinear", ["Q", "scale", "zero"], ["wq"]),
        helper.make_node("MatMul", ["h2", "wq"], ["y"]),
    ]
    inits = [tensor("W", rand((64, 64))), tensor("W16", rand((64, 64)).astype(np.float16)),
             tensor("Q", np.ones((64, 64), np.int8)), tensor("scale", np.float32(0.1)), tensor("zero", np.int8(0))]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    verdict = check_model(save(model, tmp_path / "m.onnx"), detect_npu=None)
    kinds = _kinds(verdict.blockers)
    assert "float16_weights" in kinds and "quantized_weights" in kinds
    assert "DequantizeLinear x1" in next(f.line for f in verdict.blockers if f.kind == "quantized_weights")


def test_external_data_is_a_blocker_with_the_way_out(tmp_path):
    path = save(text_encoder(VOCAB, seq=512, batch=1), tmp_path / "ext.onnx", external=True)
    verdict = check_model(path, detect_npu=None)
    line = next(f.line for f in verdict.blockers if f.kind == "external_data")
    assert "RyzenAI-SW #320" in line and "olive-bf16 convert MODEL OUT without --external-data" in line


def _sparse_big_model(folder, nbytes):
    """A model whose one FP32 weight (``nbytes``) sits in a sparse external file: large, yet costs no disk."""
    n = nbytes // 4
    weight = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.data"), ("offset", "0"), ("length", str(n * 4))):
        weight.external_data.add(key=key, value=value)
    nodes = [helper.make_node("Gather", ["W", "ids"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with open(folder / "big.data", "wb") as f:
        f.truncate(n * 4)
    onnx.save(model, folder / "big.onnx")
    return folder / "big.onnx"


@pytest.mark.skipif(sys.platform == "win32", reason="sparse files")
def test_a_model_over_2_gb_is_judged_without_loading_it(tmp_path):
    path = _sparse_big_model(tmp_path, (5 << 29))  # 2.5 GB of FP32, on disk as a hole
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    as_is = check_model(path, AS_IS, detect_npu=None)
    converted = check_model(path, detect_npu=None)  # storage bfloat16: 1.25 GB after conversion
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, grown_mb  # the skeleton only, never the 2.5 GB
    assert {"external_data", "too_large"} <= set(_kinds(as_is.blockers))
    assert "2.50 GB" in next(f.line for f in as_is.blockers if f.kind == "too_large")
    assert "too_large" not in _kinds(converted.blockers) and "external_data" in _kinds(converted.blockers)
    assert "olive-bf16 convert MODEL OUT" in next(f.line for f in converted.blockers if f.kind == "external_data")


def test_npu_generation_from_amds_pci_table(static):
    # docs/app_development.rst, APU Types: 1022:1502 rev 00 PHX/HPT; 1022:17F0 rev 00/10/11 STX, rev 20 KRK
    assert npu.npu_from_ids([(0x1022, 0x1502, 0x00)]) == "PHX/HPT"
    assert npu.npu_from_ids([(0x8086, 0x1234, 0), (0x1022, 0x17F0, 0x10)]) == "STX"
    assert npu.npu_from_ids([(0x1022, 0x17F0, 0x20)]) == "KRK"
    assert npu.npu_from_ids([(0x1022, 0x17F0, 0x30)]) == "STX/KRK or later"
    assert npu.npu_from_ids([(0x10DE, 0x2330, 0)]) is None
    phx = check_model(static, detect_npu=lambda: "PHX/HPT")
    assert _kinds(phx.blockers) == ["npu"] and "Phoenix / Hawk Point" in phx.blockers[0].line
    assert check_model(static, detect_npu=lambda: "STX").ready
    assert check_model(static, detect_npu=lambda: None).npu is None


def test_windows_pnputil_ids_parse():
    text = "Instance ID: PCI\\VEN_1022&DEV_17F0&SUBSYS_0000&REV_10\\4&2\n  PCI\\VEN_1022&DEV_17F0&REV_10\n"
    ids = {(int(v, 16), int(d, 16), int(r, 16)) for v, d, r in npu._WINDOWS_ID.findall(text)}
    assert ids == {(0x1022, 0x17F0, 0x10)}


def test_detect_npu_never_fails_here():
    assert npu.detect_npu() in (None, "PHX/HPT", "STX", "KRK", "STX/KRK or later")


def test_cli_check_exit_codes_and_lines(capsys, static, dynamic):
    assert main(["check", str(static), "--target", "vitisai"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ready for VitisAIExecutionProvider") and out[1].startswith("warning: ")
    assert "--storage float32" in out[1]
    assert main(["check", str(dynamic), "--target", "vitisai", "--storage", "float32"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("not ready for VitisAIExecutionProvider (1 blocker)")
    assert out[1].startswith("blocker: dynamic input dims")
    assert main(["check", str(dynamic), "--target", "vitisai", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ready"] is False and data["blockers"][0]["kind"] == "dynamic_shape"
    assert main(["check", str(static)]) == 2  # --target is required


def test_inspect_shows_the_verdict(capsys, dynamic):
    assert main(["inspect", str(dynamic)]) == 0
    out = capsys.readouterr().out
    assert "Ryzen AI NPU (Vitis AI EP): not ready (dynamic_shape)" in out
    assert main(["inspect", str(dynamic), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vitisai"]["ready"] is False


def test_check_needs_no_onnxruntime(static):
    import subprocess

    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from olive_bf16_pass.cli import main; sys.exit(main(['check', sys.argv[1], '--target', 'vitisai']))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_root()), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(static)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ready for VitisAIExecutionProvider")


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
