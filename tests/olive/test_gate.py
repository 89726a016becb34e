"""The fidelity gate in Olive runs: thresholds on cached runs, a kept model, undone conversions,
Olive's evaluator conventions (input model, goals, input names, reference paths)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from olive_bf16_pass.olive import evaluators as ev
from olive_bf16_pass.olive import gate


def _workflow(input_path, tmp_path, tokenizer, **evaluator):
    """Our pass and evaluator, Olive's default cache (no clean_cache): a second run reuses everything."""
    options = {"pooling": "mean", "corpus_limit": 16, "latency_runs": 2, **evaluator}
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(input_path)},
        "systems": {"local_system": {"type": "LocalSystem", "config": {
            "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}}},
        "passes": {"bf16": {"type": "OnnxFloatToBFloat16"}},
        "evaluators": {"fidelity": {"type": "EmbeddingFidelityEvaluator", "tokenizer": str(tokenizer), **options}},
        "evaluator": "fidelity",  # evaluate_input_model left at Olive's default, true
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "out"),
    }


@pytest.fixture
def embed(onnx_handler):
    def run(model_path, source, tokenizer, **options):
        options = {"corpus_limit": 16, "latency_runs": 1, **options}
        evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer), **options)
        return evaluator.evaluate(onnx_handler(model_path, source), [], "cpu", ["CPUExecutionProvider"])

    return run


def _run(config):
    from olive.workflows import run as olive_run

    return olive_run(config)


def test_a_stricter_threshold_is_checked_against_cached_metrics(tmp_path, encoder_pair, tokenizer_dir, monkeypatch):
    fp32, _ = encoder_pair
    _run(_workflow(fp32, tmp_path, tokenizer_dir, thresholds={"fidelity-cosine_mean": 0.99}))
    # the FP32 input model is the baseline, not fidelity 1.0 against itself
    baseline = json.loads((tmp_path / "out" / "input_model_metrics.json").read_text())
    assert "latency-p50" in baseline and "size-bytes" in baseline
    assert not any(k.startswith(("fidelity-", "retrieval-")) for k in baseline)

    calls = []
    monkeypatch.setattr(ev.EmbeddingFidelityEvaluator, "_evaluate", lambda *a: calls.append(a))
    strict = _workflow(fp32, tmp_path, tokenizer_dir, thresholds={"fidelity-cosine_mean": 0.99999999})
    with pytest.raises(ev.EvaluationError, match=r"fidelity-cosine_mean = 0\.99999\d+, required >= 0\.99999999"):
        _run(strict)
    assert calls == []  # the metrics came from Olive's cache: checked all the same
    # an Olive goal on one of our metrics is checked against the cached metrics too (size: about half the source)
    goal = _workflow(fp32, tmp_path, tokenizer_dir, metrics=[{
        "name": "size", "type": "size_on_disk",
        "sub_types": [{"name": "bytes", "priority": 1, "goal": {"type": "percent-min-improvement", "value": 60}}],
    }])
    with pytest.raises(ev.EvaluationError, match=r"size-bytes = .*goal percent-min-improvement 60"):
        _run(goal)
    _run(_workflow(fp32, tmp_path, tokenizer_dir, thresholds={"fidelity-cosine_mean": 0.99}))  # loose again: passes
    assert calls == []


def test_a_missed_threshold_names_the_model_and_keeps_it(tmp_path, encoder_pair, tokenizer_dir):
    fp32, _ = encoder_pair
    with pytest.raises(ev.EvaluationError) as info:
        _run(_workflow(fp32, tmp_path, tokenizer_dir, thresholds={"fidelity-cosine_min": 0.99999999}))
    kept = tmp_path / "out" / "model.onnx"
    message = str(info.value)
    assert f"The model is kept at {kept}" in message and "metrics.json" in message
    assert kept.exists() and (tmp_path / "out" / "metrics.json").exists()
    assert onnx.load(kept).graph.initializer  # the BF16 model itself, loadable


def test_a_missed_threshold_outside_olive_run_names_the_model(encoder_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = encoder_pair
    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer_dir), pooling="mean", corpus_limit=16,
                                              latency_runs=1, thresholds={"fidelity-cosine_min": 0.99999999})
    with pytest.raises(ev.EvaluationError, match=f"kept at {bf16}.*clean_cache"):
        evaluator.evaluate(onnx_handler(bf16, fp32), [], "cpu", ["CPUExecutionProvider"])


def test_olive_goals_and_priorities_on_a_direct_evaluation(encoder_pair, tokenizer_dir, onnx_handler):
    from olive.evaluator.olive_evaluator import OliveEvaluatorConfig

    fp32, bf16 = encoder_pair

    def metrics(value):
        return OliveEvaluatorConfig.model_validate({"type": "EmbeddingFidelityEvaluator", "metrics": [{
            "name": "fidelity", "type": "custom",
            "sub_types": [{"name": "cosine_min", "priority": 1, "higher_is_better": True,
                           "goal": {"type": "threshold", "value": value}}],
        }]}).metrics

    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer_dir), pooling="mean", corpus_limit=16,
                                              latency_runs=1)
    result = evaluator.evaluate(onnx_handler(bf16, fp32), metrics(0.99), "cpu", ["CPUExecutionProvider"])
    assert result.root["fidelity-cosine_min"].priority == 1 and result.root["size-bytes"].priority == -1
    with pytest.raises(ev.EvaluationError, match="fidelity-cosine_min .*goal threshold"):
        evaluator.evaluate(onnx_handler(bf16, fp32), metrics(0.99999999), "cpu", ["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- a later pass undid BF16


def _convert(fp32, folder):
    from olive.model import ONNXModelHandler
    from olive.passes.olive_pass import create_pass_from_dict

    from olive_bf16_pass.olive.passes import OnnxFloatToBFloat16

    p = create_pass_from_dict(OnnxFloatToBFloat16, {}, disable_search=True)
    return p.run(ONNXModelHandler(str(fp32)), str(folder))


def _fold_casts(path, out_path):
    """What ORT's optimizer / onnxscript's folding do after our pass: BF16 weights back to FP32 (the Casts
    that widened them are left as FLOAT -> FLOAT no-ops). The pass's record (metadata_props) stays."""
    model = onnx.load(path)
    for i, init in enumerate(model.graph.initializer):
        if init.data_type == TensorProto.BFLOAT16:
            bits = np.frombuffer(init.raw_data, np.uint16).astype(np.uint32) << 16
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(bits.view(np.float32).reshape(tuple(init.dims)), init.name))
    onnx.save(model, out_path)
    assert not [i for i in onnx.load(out_path).graph.initializer if i.data_type == TensorProto.BFLOAT16]
    return out_path


def test_an_undone_conversion_is_reported_with_the_sizes(tmp_path, encoder_pair, tokenizer_dir, onnx_handler):
    from olive.model import ONNXModelHandler

    fp32, _ = encoder_pair
    converted = _convert(fp32, tmp_path / "bf16")
    folded_dir = tmp_path / "folded"
    folded_dir.mkdir()
    folded = _fold_casts(converted.model_path, folded_dir / "model.onnx")
    handler = ONNXModelHandler(str(folded))
    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer_dir), pooling="mean", corpus_limit=16)
    with pytest.raises(ev.EvaluationError, match=r"a later pass undid the BF16 conversion: \d+ BF16 tensors became 0,"
                                                 r" [\d.]+ [kM]B became [\d.]+ [kM]B.*last.*model is at"):
        evaluator.evaluate(handler, [], "cpu", ["CPUExecutionProvider"])
    # and after an Olive run (the gate), with or without our evaluator, from the model Olive hands back
    candidate = SimpleNamespace(model_path=str(folded_dir), model_id="abc", metrics_value=None,
                                model_config={"onnx_file_name": "model.onnx"})
    output = SimpleNamespace(has_output_model=lambda: True, get_best_candidate=lambda: candidate)
    run_config = SimpleNamespace(passes={"bf16": [SimpleNamespace(type="OnnxFloatToBFloat16", evaluator=None)]},
                                 engine=SimpleNamespace(evaluator=None, output_dir=str(tmp_path / "out")))
    with pytest.raises(ev.EvaluationError, match=f"undid the BF16 conversion.*kept at {folded}"):
        gate.check_output(run_config, output)
    candidate.model_path = str(converted.model_path)  # the pass's own output: nothing to say
    candidate.model_config = {"onnx_file_name": converted.onnx_file_name}
    gate.check_output(run_config, output)


# ----------------------------------------------------------------------------- conventions


def _renamed(path, out_path, names):
    model = onnx.load(path)
    for value in model.graph.input:
        value.name = names.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
    onnx.save(model, out_path)
    return out_path


def test_input_names_map_the_models_inputs(tmp_path, encoder_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = encoder_pair
    names = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "segments"}
    a, b = _renamed(fp32, tmp_path / "a.onnx", names), _renamed(bf16, tmp_path / "b.onnx", names)
    options = {"tokenizer": str(tokenizer_dir), "pooling": "mean", "corpus_limit": 16, "latency_runs": 1}
    with pytest.raises(ev.EvaluationError, match="input 'ids' that the tokenizer does not produce.*input_names"):
        ev.EmbeddingFidelityEvaluator(**options).evaluate(onnx_handler(b, a), [], "cpu", "CPUExecutionProvider")
    mapping = {"ids": "input_ids", "mask": "attention_mask", "segments": "token_type_ids"}
    for input_names in (mapping, ["ids", "mask", "segments"]):  # a mapping, or Olive's io_config order
        r = ev.EmbeddingFidelityEvaluator(input_names=input_names, **options).evaluate(
            onnx_handler(b, a), [], "cpu", "CPUExecutionProvider")
        assert r.root["fidelity-cosine_mean"].value > 0.99
    with pytest.raises(ev.EvaluationError, match=r"maps \['idz'\], which the model does not have"):
        ev.EmbeddingFidelityEvaluator(input_names={"idz": "input_ids"}, **options).evaluate(
            onnx_handler(b, a), [], "cpu", "CPUExecutionProvider")


def test_a_reference_in_olives_cache_is_named_as_such(tmp_path, encoder_pair, tokenizer_dir, embed, monkeypatch,
                                                      caplog):
    fp32, bf16 = encoder_pair
    monkeypatch.setenv("OLIVE_CACHE_DIR", str(fp32.parent))  # as if an earlier pass had made the FP32 model
    with caplog.at_level("WARNING"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean")
    assert "a model in Olive's cache" in caplog.text and "'reference_model'" in caplog.text
    stable = shutil.copy(fp32, tmp_path / "stable.onnx")
    caplog.clear()
    with caplog.at_level("WARNING"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean", reference_model=str(stable))
    assert "Olive's cache" not in caplog.text
    gone = tmp_path / "gone.onnx"
    with pytest.raises(ev.EvaluationError, match="does not exist.*'reference_model' to a copy outside the cache"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean", reference_model=str(gone))
