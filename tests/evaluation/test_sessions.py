"""Timing and provider messages of the evaluators' ONNX Runtime sessions."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import embedding_mlp, save
from olive_bf16_pass.evaluation import sessions
from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.providers import CPU, VITISAI


class _Recorder:
    """A session that records which input each run got, into a log shared with the others."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, outputs, feed):
        self.log.append((self.name, int(feed["input_ids"][0, 0])))
        return [np.zeros((1, 1), np.float32)]


def test_latency_runs_alternate_between_the_models_on_the_same_inputs():
    log = []
    fp32, bf16 = _Recorder("fp32", log), _Recorder("bf16", log)
    feeds = [{"input_ids": np.array([[i]], np.int64)} for i in (10, 11, 12)]
    times = sessions.interleaved_latency([fp32, bf16], feeds, runs=5, warmup=2)
    assert [len(t) for t in times] == [5, 5] and all(ms >= 0 for t in times for ms in t)
    assert [name for name, _ in log] == ["fp32", "bf16"] * 7  # warm-up too: no model runs twice in a row
    timed = log[4:]
    assert [i for _, i in timed[0::2]] == [i for _, i in timed[1::2]] == [10, 11, 12, 10, 11]  # cycling


def test_latency_without_inputs_is_an_error():
    with pytest.raises(EvaluationError, match="no input"):
        sessions.interleaved_latency([], [], runs=3)


def test_missing_provider_message_names_what_to_do():
    message = sessions.missing_provider_message(["VitisAIExecutionProvider"], ["CPUExecutionProvider"], "twin.json")
    assert message.startswith("VitisAIExecutionProvider is not available")
    assert "Ryzen AI" in message and "olive run --config twin.json" in message


# ----------------------------------------------------------------------------- the session under test


def _ort_create(model_path):
    """What the Olive evaluator's prepare_session does, in plain ONNX Runtime."""
    import onnxruntime as ort

    def create(settings):
        options = ort.SessionOptions()
        options.enable_profiling = settings["session_options"]["enable_profiling"]
        return ort.InferenceSession(str(model_path), options, providers=settings["execution_provider"])

    return create


def test_target_session_is_profiled_from_creation_to_measure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the profile lands in the cwd
    model_path = save(embedding_mlp(), tmp_path / "m.onnx")
    session, provider, probe = sessions.target_session({"execution_provider": [CPU]}, _ort_create(model_path))
    assert provider == CPU
    session.run(None, {"ids": np.array([[1, 2]], np.int64)})
    assert probe.metrics(None) == {"placement-ep_op_share": 1.0}
    assert not list(tmp_path.glob("*.json"))  # measured, then removed


def test_target_session_stops_on_a_missing_or_refused_provider(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_path = save(embedding_mlp(), tmp_path / "m.onnx")
    with pytest.raises(EvaluationError, match=f"{VITISAI} is not available.*olive run --config twin.json"):
        sessions.target_session({"execution_provider": [VITISAI]}, _ort_create(model_path), "twin.json")

    class Refused(Exception):
        pass

    def refuse(settings):
        raise Refused("no such EP here")

    with pytest.raises(EvaluationError, match=rf"did not run the BF16 model on \['{CPU}'\]: no such EP here"):
        sessions.target_session({"execution_provider": [CPU]}, refuse, rejected=(Refused,))
    with pytest.raises(Refused):  # anything else is the caller's to report
        sessions.target_session({"execution_provider": [CPU]}, refuse)
