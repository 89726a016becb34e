"""Where a model ran: ORT's profiler for real on the CPU EP, the Vitis AI EP's published formats."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest

from helpers import embedding_mlp
from olive_bf16_pass.evaluation import placement as pl
from olive_bf16_pass.evaluation import probe as pr
from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.providers import CPU
from olive_bf16_pass.providers import VITISAI as VITIS

# Published EP output, copied as printed. One-line forms: amd/RyzenAI-SW
# CNN-examples/quark_quantization/models/resnet50_XINT8_Quant.log, Demos/ASR/Whisper/README.md
# (BF16/VAIML; the README says 93.4% of the decoder ran on the NPU), and
# amd/ryzen-ai-documentation docs/getstartex.rst (older IPU form, with a percentage).
LOG_NPU = (
    "[Vitis AI EP] No. of Operators :   NPU   393 VITIS_EP_CPU     2 \n"
    "[Vitis AI EP] No. of Subgraphs :   NPU     1 Actually running on NPU      1\n"
)
LOG_VAIML_PARTIAL = (
    "   #decoder operations\n"
    "   [Vitis AI EP] No. of Operators :   CPU    24  VAIML   341\n"
    "   [Vitis AI EP] No. of Subgraphs : VAIML     2\n"
)
LOG_IPU = (
    "[Vitis AI EP] No. of Operators :   CPU     2    IPU   398  99.50%\n"
    "[Vitis AI EP] No. of Subgraphs :   CPU     1    IPU     1 Actually running on IPU     1\n"
)
# Ryzen AI >= 1.6 logs the same through ORT's logger at INFO, one count a line
# (amd/ryzen-ai-documentation docs/inst.rst, "Test the Installation").
LOG_ORT_INFO = """\
[I:onnxruntime:, stat.cpp:198 stat.cpp] [Vitis AI EP] No. of Operators :
[I:onnxruntime:, stat.cpp:198 stat.cpp]    NPU   398
[I:onnxruntime:, stat.cpp:198 stat.cpp] VITIS_EP_CPU     2
[I:onnxruntime:, stat.cpp:198 stat.cpp] [Vitis AI EP] No. of Subgraphs :
[I:onnxruntime:, stat.cpp:198 stat.cpp]    NPU     1
[I:onnxruntime:, stat.cpp:198 stat.cpp] Actually running on NPU      1
[I:onnxruntime:, vitisai_compile_model.cpp:1488 vitisai_compile_model.cpp] AVG CPU Usage 4.93969%
[I:onnxruntime:, vitisai_compile_model.cpp:1489 vitisai_compile_model.cpp] Peak Working Set size 565.277 MB
"""
# Operator Assignment Report: amd/ryzen-ai-documentation docs/modelrun.rst (its "..." elided).
REPORT = {
    "deviceStat": [
        {"name": "all", "nodeNum": 400, "supportedOpType": ["::Add", "::Conv", "::DequantizeLinear"]},
        {"name": "CPU", "nodeNum": 2, "supportedOpType": ["::DequantizeLinear", "::QuantizeLinear"]},
        {"name": "NPU", "nodeNum": 398, "supportedOpType": ["::Add", "::Conv"]},
    ]
}


# ----------------------------------------------------------------------------- ONNX Runtime profiler


def _profiled_run(model, tmp_path, optimization=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    options.graph_optimization_level = optimization
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])
    for _ in range(2):  # two runs: each node still counts once
        session.run(None, {"ids": np.array([[1, 2, 3]], np.int64)})
    return session.end_profiling()


def test_profiler_counts_every_node_once_on_the_cpu_ep(tmp_path):
    model = embedding_mlp()
    path = _profiled_run(model, tmp_path)
    graph_ops = Counter(n.op_type for n in model.graph.node)

    on_cpu = pl.read_profile(path, CPU)
    assert on_cpu.ops_by_device == {CPU: len(model.graph.node)}
    assert on_cpu.ep_op_share == 1.0 and on_cpu.source == "profiler"
    assert on_cpu.npu_subgraphs is None and on_cpu.fallback_ops == {}

    npu = pl.read_profile(path, VITIS)  # the same run, had the Vitis AI EP been requested
    assert npu.ep_op_share == 0.0 and npu.npu_subgraphs == 0
    assert npu.fallback_ops == dict(graph_ops)
    assert "7 of 7 operators did not run on VitisAIExecutionProvider" in npu.describe()
    assert "MatMul x3" in npu.describe()


def test_profile_with_a_fused_npu_node_and_fences():
    def event(name, op, provider, index):
        return {"cat": "Node", "name": name, "args": {"op_name": op, "provider": provider, "node_index": index}}

    events = [
        event("VitisAI_0_kernel_time", "VitisAI_0", VITIS, "0"),
        event("VitisAI_0_fence_before", "VitisAI_0", VITIS, "0"),
        event("cast_kernel_time", "Cast", CPU, "1"),
        event("cast_kernel_time", "Cast", CPU, "1"),  # a second run
        event("softmax_kernel_time", "Softmax", CPU, "2"),
        {"cat": "Session", "name": "model_run"},
    ]
    p = pl.parse_profile(events, VITIS)
    assert p.ops_by_device == {VITIS: 1, CPU: 2}
    assert p.ep_op_share == pytest.approx(1 / 3) and p.npu_subgraphs == 1
    assert p.fallback_ops == {"Cast": 1, "Softmax": 1}


@pytest.mark.parametrize("garbage", [{"traceEvents": []}, [], [{"cat": "Session"}], "text"])
def test_profile_without_node_events_is_a_clear_error(garbage):
    with pytest.raises(pl.PlacementFormatError):
        pl.parse_profile(garbage, CPU)


def test_unreadable_profile_is_a_clear_error(tmp_path):
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(pl.PlacementFormatError, match="cannot read"):
        pl.read_profile(tmp_path / "p.json", CPU)


# ----------------------------------------------------------------------------- the Vitis AI EP's log


@pytest.mark.parametrize(
    ("text", "devices", "share", "subgraphs"),
    [
        (LOG_NPU, {"NPU": 393, "VITIS_EP_CPU": 2}, 393 / 395, 1),
        (LOG_VAIML_PARTIAL, {"CPU": 24, "VAIML": 341}, 0.934, 2),
        (LOG_IPU, {"CPU": 2, "IPU": 398}, 0.995, 1),
        (LOG_ORT_INFO, {"NPU": 398, "VITIS_EP_CPU": 2}, 0.995, 1),
    ],
)
def test_log_in_the_published_formats(text, devices, share, subgraphs):
    p = pl.parse_vitisai_log(text)
    assert p.ops_by_device == devices and p.source == "vitisai_log"
    assert p.ep_op_share == pytest.approx(share, abs=5e-4)
    assert p.npu_subgraphs == subgraphs


def test_log_total_fallback_and_fewer_subgraphs_running_than_compiled():
    # the RyzenAI-SW quark logs have "NPU 87 Actually running on NPU 5": the running count is the one
    text = (
        "[Vitis AI EP] No. of Operators :   CPU   340\n"
        "[Vitis AI EP] No. of Subgraphs :   NPU    87 Actually running on NPU      5\n"
    )
    p = pl.parse_vitisai_log(text)
    assert p.ep_op_share == 0.0 and p.npu_subgraphs == 5
    assert "340 of 340 operators did not run" in p.describe()


def test_log_keeps_the_last_summary():
    p = pl.parse_vitisai_log(LOG_NPU + "other output\n" + LOG_VAIML_PARTIAL)
    assert p.ops_by_device == {"CPU": 24, "VAIML": 341}


@pytest.mark.parametrize(
    "text", ["", "Test Passed\n", "\x00\xff[Vitis AI EP] garbage", "[Vitis AI EP] No. of Operators :"]
)
def test_log_without_figures_is_none(text):
    assert pl.parse_vitisai_log(text) is None


# ----------------------------------------------------------------------------- the operator-assignment report


def test_report_in_the_published_format(tmp_path):
    path = tmp_path / "vitisai_ep_report.json"
    path.write_text(json.dumps(REPORT))
    p = pl.read_vitisai_report(path)
    assert p.ops_by_device == {"CPU": 2, "NPU": 398} and p.source == "vitisai_report"
    assert p.ep_op_share == pytest.approx(0.995)
    assert p.fallback_ops == {"DequantizeLinear": 0, "QuantizeLinear": 0}
    assert "DequantizeLinear, QuantizeLinear" in p.describe()


def test_report_total_fallback():
    report = {"deviceStat": [
        {"name": "all", "nodeNum": 5},
        {"name": "CPU", "nodeNum": 5, "supportedOpType": ["::MatMul"]},
        {"name": "NPU", "nodeNum": 0, "supportedOpType": []},
    ]}
    p = pl.parse_vitisai_report(report)
    assert p.ep_op_share == 0.0 and p.fallback_ops == {"MatMul": 0}


@pytest.mark.parametrize(
    "report",
    [
        [],
        {},
        {"deviceStat": []},
        {"deviceStat": [{"name": "NPU", "nodeNum": "398"}]},
        {"deviceStat": [{"name": "all", "nodeNum": 4}]},
    ],
)
def test_report_in_another_shape_is_a_clear_error(report):
    with pytest.raises(pl.PlacementFormatError, match="deviceStat"):
        pl.parse_vitisai_report(report)


def test_report_is_looked_for_in_the_cache_key_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(pl.REPORT_ENV, raising=False)
    (tmp_path / "bce").mkdir()
    report = tmp_path / "bce" / "vitisai_ep_report.json"
    assert pl.vitisai_report_path({"cache_dir": str(tmp_path), "cache_key": "bce"}) is None
    report.write_text("{}")
    assert pl.vitisai_report_path({"cache_dir": str(tmp_path), "cache_key": "bce"}) == report
    assert pl.vitisai_report_path({"cache_dir": str(tmp_path)}) == report  # no key: any subfolder
    assert pl.vitisai_report_path({}) is None
    monkeypatch.setenv(pl.REPORT_ENV, "mine.json")
    assert pl.vitisai_report_path({"cache_dir": str(tmp_path), "cache_key": "bce"}) is None


def test_report_switch_is_set_only_while_needed(monkeypatch):
    monkeypatch.delenv(pl.REPORT_ENV, raising=False)
    with pr.report_enabled():
        assert os.environ[pl.REPORT_ENV] == "vitisai_ep_report.json"
    assert pl.REPORT_ENV not in os.environ


def test_native_output_is_captured_and_filtered(capfd):
    with pr.captured_native_output(lambda line: "keep" in line) as out:
        os.write(2, b"[Vitis AI EP] No. of Operators :   NPU   10\nkeep me\n")
        os.write(1, b"drop me\n")
    assert "NPU   10" in out[0] and "drop me" in out[0]
    err = capfd.readouterr().err
    assert "keep me" in err and "NPU   10" not in err


# ----------------------------------------------------------------------------- one session, and the decision


def test_vitisai_session_creation_is_logged_at_info_and_captured(capfd, monkeypatch):
    monkeypatch.delenv(pl.REPORT_ENV, raising=False)
    probe = pr.PlacementProbe(VITIS, {"cache_dir": "c", "cache_key": "k"})
    settings = probe.settings({"execution_provider": [VITIS], "session_options": {"intra_op_num_threads": 1}})
    assert settings["session_options"] == {"intra_op_num_threads": 1, "enable_profiling": True, "log_severity_level": 1}
    with probe.creating():
        assert os.environ[pl.REPORT_ENV] == "vitisai_ep_report.json"
        os.write(2, LOG_ORT_INFO.encode() + b"[W:onnxruntime:, x.cc:1 f] a warning\n")
    assert pl.parse_vitisai_log(probe.log).ops_by_device == {"NPU": 398, "VITIS_EP_CPU": 2}
    err = capfd.readouterr().err
    assert "a warning" in err and "stat.cpp" not in err  # INFO lines we asked for are not echoed
    assert pl.REPORT_ENV not in os.environ


class _FakeSession:
    def __init__(self, path):
        self.path = path

    def end_profiling(self):
        path, self.path = self.path, ""
        return path


def _profile_file(tmp_path, nodes):
    events = [{"cat": "Node", "name": f"{n}_kernel_time", "args": {"op_name": op, "provider": p, "node_index": str(i)}}
              for i, (n, op, p) in enumerate(nodes)]
    path = tmp_path / "onnxruntime_profile_x.json"
    path.write_text(json.dumps(events))
    return path


def test_probe_prefers_the_ep_figures_and_takes_op_types_from_the_profile(tmp_path, monkeypatch):
    monkeypatch.delenv(pl.REPORT_ENV, raising=False)
    path = _profile_file(tmp_path, [("fused", "VitisAI_0", VITIS), ("sm", "Softmax", CPU), ("sm2", "Softmax", CPU)])
    probe = pr.PlacementProbe(VITIS, {"cache_dir": str(tmp_path), "cache_key": "none"})
    probe.log = LOG_VAIML_PARTIAL
    probe.attach(_FakeSession(str(path)))
    p = probe.measure()
    assert p.source == "vitisai_log" and p.ops_by_device == {"CPU": 24, "VAIML": 341}
    assert p.fallback_ops == {"Softmax": 2}
    assert not path.exists()  # the probe's own profile is removed


def test_probe_trusts_a_profile_with_nothing_on_the_ep(tmp_path):
    path = _profile_file(tmp_path, [("mm", "MatMul", CPU), ("add", "Add", CPU)])
    probe = pr.PlacementProbe(VITIS)
    probe.log = LOG_NPU  # the compile log claims the NPU; no node ran there
    probe.attach(_FakeSession(str(path)))
    p = probe.measure()
    assert p.source == "profiler" and p.ep_op_share == 0.0
    with pytest.raises(EvaluationError) as info:
        pl.check_placement(p, None)
    message = str(info.value)
    assert "VitisAIExecutionProvider ran 0.0%" in message
    assert "Add x1" in message and "MatMul x1" in message and "vitisai_ep_report.json" in message


@pytest.mark.parametrize(
    ("share_on", "min_share", "fails"),
    [(0, None, True), (1, None, False), (9, 0.9, False), (8, 0.9, True)],
)
def test_threshold_decision(share_on, min_share, fails):
    p = pl.Placement(VITIS, {"NPU": share_on, "CPU": 10 - share_on}, share_on, "vitisai_log", 1, {"Gelu": 0})
    message = pl.fallback_failure(p, min_share)
    assert (message is not None) == fails
    if fails:
        assert "Gelu" in message and VITIS in message and "min_ep_op_share" in message


def test_cpu_ep_is_not_checked_by_default():
    p = pl.Placement(CPU, {CPU: 0}, 0, "profiler")
    assert pl.fallback_failure(p, None) is None
    assert pl.check_placement(pl.Placement(CPU, {CPU: 4}, 4, "profiler"), 1.0) == {"placement-ep_op_share": 1.0}


def test_probe_metrics_without_figures_fail_only_when_a_share_is_required():
    probe = pr.PlacementProbe(VITIS)  # no session attached, no log: nothing says where the model ran
    assert probe.metrics(None) == {}
    with pytest.raises(EvaluationError, match="min_ep_op_share is set but no placement figures"):
        probe.metrics(0.5)
