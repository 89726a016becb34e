"""The three figures' metric names, the miscompile check read back from them, and the table (Olive-free)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from olive_bf16_pass import fidelity_figures
from olive_bf16_pass.evaluation import agreement, corpus, figures, metrics, thresholds
from olive_bf16_pass.evaluation.table import side_by_side


def _near(a, scale, seed):
    return a + np.random.default_rng(seed).standard_normal(a.shape) * scale * np.abs(a).mean()


REF = np.random.default_rng(0).standard_normal((24, 16))
WEIGHTS, EMULATED = _near(REF, 1e-3, 1), _near(REF, 1e-2, 2)


def test_names_carry_the_variant_between_group_and_metric():
    assert metrics.variant_name("fidelity-cosine_mean", "emulated") == "fidelity-emulated-cosine_mean"
    assert metrics.variant_name("retrieval-top10_overlap", "device_vs_emulated") == (
        "retrieval-device_vs_emulated-top10_overlap")
    assert metrics.split("fidelity-weight_only-spearman") == ("fidelity-spearman", "weight_only")
    assert metrics.split("fidelity-cosine_mean") == ("fidelity-cosine_mean", None)
    assert metrics.split("latency-source_p50") == ("latency-source_p50", None)
    assert metrics.split(metrics.MISCOMPILE_RATIO) == (metrics.MISCOMPILE_RATIO, None)


def test_cpu_figures_keep_the_plain_names_for_the_bf16_model():
    out = figures.fidelity_metrics({"reference": REF, "target": WEIGHTS, "emulated": EMULATED}, "embedding")
    plain = agreement.embedding_agreement(REF, WEIGHTS)
    assert out["fidelity-cosine_mean"] == plain["cosine_mean"]  # what the recipes' thresholds name
    assert out["fidelity-emulated-cosine_min"] == agreement.embedding_agreement(REF, EMULATED)["cosine_min"]
    assert not any("weight_only" in k or "device" in k for k in out) and metrics.MISCOMPILE_RATIO not in out
    alone = figures.fidelity_metrics({"reference": REF, "target": WEIGHTS}, "embedding")  # emulate: false
    assert alone == {k: v for k, v in out.items() if "emulated" not in k}


@pytest.mark.parametrize("scale", [3e-2, 0.1, 0.5, 2.0])
def test_the_ratio_flags_exactly_what_three_figures_flags(scale):
    """The gate re-checks cached metrics with the ratio; it must agree with the fresh flag."""
    device = _near(EMULATED, scale, 3)
    fresh = fidelity_figures.three_figures(REF, WEIGHTS, EMULATED, device)["miscompile"]
    out = figures.fidelity_metrics(
        {"reference": REF, "target": device, "weight_only": WEIGHTS, "emulated": EMULATED}, "embedding")
    assert out["fidelity-cosine_mean"] == agreement.embedding_agreement(REF, device)["cosine_mean"]  # the device's
    assert out["fidelity-weight_only-cosine_mean"] == agreement.embedding_agreement(REF, WEIGHTS)["cosine_mean"]
    assert out["fidelity-device_vs_emulated-cosine_mean"] == pytest.approx(1 - fresh["device_gap"])
    assert out[metrics.MISCOMPILE_RATIO] == pytest.approx(fresh["device_gap"] / max(fresh["emulated_gap"], 1e-5))
    assert bool(metrics.miscompile_misses(out, metrics.MISCOMPILE_FACTOR)) == fresh["flagged"]
    assert fidelity_figures.MISCOMPILE_FACTOR == metrics.MISCOMPILE_FACTOR == 100.0
    assert fidelity_figures.MISCOMPILE_FLOOR == metrics.MISCOMPILE_FLOOR


def test_both_sides_of_the_flag_are_exercised():
    sound = figures.fidelity_metrics({"reference": REF, "target": _near(EMULATED, 3e-2, 3), "weight_only": WEIGHTS,
                                      "emulated": EMULATED}, "embedding")
    broken = figures.fidelity_metrics({"reference": REF, "target": _near(EMULATED, 0.5, 4), "weight_only": WEIGHTS,
                                       "emulated": EMULATED}, "embedding")
    assert metrics.miscompile_misses(sound, 100) == []
    line = metrics.miscompile_misses(broken, 100)[0]
    assert "likely miscompile" in line and f"device {broken['fidelity-cosine_mean']:.6f}" in line
    assert metrics.miscompile_misses(broken, broken[metrics.MISCOMPILE_RATIO] * 2) == []


def test_reranker_figures_and_their_directions():
    scores = np.random.default_rng(5).standard_normal((6, 8))
    out = figures.fidelity_metrics({"reference": scores, "target": scores + 1e-4, "weight_only": scores,
                                    "emulated": _near(scores, 1e-2, 6)}, "reranker")
    assert {"fidelity-spearman", "fidelity-emulated-spearman", "fidelity-weight_only-max_abs_diff",
            "fidelity-device_vs_emulated-top1_agreement", metrics.MISCOMPILE_RATIO} <= set(out)
    assert not thresholds.higher_is_better("fidelity-emulated-max_abs_diff")
    assert not thresholds.higher_is_better(metrics.MISCOMPILE_RATIO)
    assert thresholds.higher_is_better("fidelity-emulated-spearman")
    with pytest.raises(ValueError, match="kind"):
        figures.fidelity_metrics({"reference": scores, "target": scores}, "classifier")


def test_thresholds_and_relative_goals_work_on_the_figures():
    results = {"fidelity-emulated-cosine_min": 0.9990}
    assert thresholds.misses(thresholds.bounds({"fidelity-emulated-cosine_min": 0.999}, [], results), results) == []
    goal = thresholds.Goal("fidelity-emulated-cosine_min", "max-degradation", 0.0005)  # from 1.0, as the plain one
    assert thresholds.misses(thresholds.bounds(None, [goal], results), results) == [
        "fidelity-emulated-cosine_min = 0.999, required >= 0.9995 (goal max-degradation 0.0005)"]


def test_queries_against_passages():
    q, p = REF[:12], REF[12:]  # 12 texts as queries, the same 12 as passages
    both = np.concatenate([q, p])
    same = agreement.embedding_agreement(both, both.copy(), top_k=5, queries=12)
    assert same["topk_overlap"] == 1.0 and same["cosine_min"] == pytest.approx(1.0)
    # only the query side changes: a passages-against-passages (symmetric) score would not see it
    moved = np.concatenate([_near(q, 0.5, 9), p])
    assert agreement.embedding_agreement(both, moved, top_k=5, queries=12)["topk_overlap"] < 1.0
    with pytest.raises(agreement.EvaluationError, match="not 11 queries"):
        agreement.embedding_agreement(both, both, top_k=5, queries=11)
    with pytest.raises(agreement.EvaluationError, match="top-10 neighbours need at least 12 texts"):
        agreement.embedding_agreement(both[:20], both[:20], top_k=10, queries=10)


def test_prefixes():
    assert corpus.prefixed(["a", "b"]) == (["a", "b"], None)
    assert corpus.prefixed(["a", "b"], "query: ", "query: ") == (["query: a", "query: b"], None)
    assert corpus.prefixed(["a", "b"], "query: ", "passage: ") == (["query: a", "query: b", "passage: a", "passage: b"], 2)
    assert corpus.prefixed(["a"], "Represent: ", None) == (["Represent: a", "a"], 1)
    assert corpus.prefixed_pairs(["q"], ["p"], "query: ", "passage: ") == (["query: q"], ["passage: p"])


BASE = {"size-source_bytes": 2**21, "size-bytes": 2**20, "size-ratio": 0.5, "latency-source_p50": 10.0,
        "latency-p50": 9.0, "latency-source_p90": 11.0, "latency-p90": 10.0, "fidelity-cosine_mean": 0.999991}


def test_the_table_has_a_column_per_figure_measured():
    old = side_by_side(BASE, "CPUExecutionProvider")  # metrics cached before the figures existed
    assert "emulated" not in old and old.splitlines()[0].split()[-1] == "ratio"
    table = side_by_side({**BASE, "fidelity-emulated-cosine_mean": 0.9999123}, "CPUExecutionProvider")
    head, *rows = table.splitlines()
    assert "emulated BF16 compute (CPU)" in head and "device vs emulated" not in head
    row = next(r for r in rows if r.startswith("fidelity-cosine_mean"))
    assert row.split()[1:] == ["1", "0.999991", "0.9999123"]
    assert not any(r.startswith("fidelity-emulated") for r in rows)  # a column, not a row
    device = side_by_side({**BASE, "fidelity-emulated-cosine_mean": 0.9999123, "fidelity-weight_only-cosine_mean": 0.999995,
                           "fidelity-device_vs_emulated-cosine_mean": 0.9995, metrics.MISCOMPILE_RATIO: 5.7},
                          "VitisAIExecutionProvider")
    head, *rows = device.splitlines()
    assert head.index("BF16 (VitisAIExecutionProvider)") < head.index("emulated") < head.index("weights only") < (
        head.index("device vs emulated"))
    assert next(r for r in rows if r.startswith("fidelity-cosine_mean")).split()[1:] == [
        "1", "0.999991", "0.9999123", "0.999995", "0.9995"]
    assert next(r for r in rows if r.startswith(metrics.MISCOMPILE_RATIO)).split()[1:] == ["5.7"]


def test_the_emulated_model_is_made_once_per_source_in_the_cache(tmp_path, monkeypatch):
    import onnx

    from helpers import embedding_mlp

    monkeypatch.setenv("OLIVE_CACHE_DIR", str(tmp_path / "cache"))
    onnx.save(embedding_mlp(), str(tmp_path / "a.onnx"))
    onnx.save(embedding_mlp(seed=1), str(tmp_path / "b.onnx"))
    a, b = figures.emulated_model_file(tmp_path / "a.onnx"), figures.emulated_model_file(tmp_path / "b.onnx")
    assert a.parent != b.parent and a.is_relative_to(tmp_path / "cache") and b.is_file()
    stamp = a.stat().st_mtime_ns
    assert figures.emulated_model_file(tmp_path / "a.onnx") == a and a.stat().st_mtime_ns == stamp
    os.utime(tmp_path / "a.onnx")  # a changed source gets a new emulated model
    assert figures.emulated_model_file(tmp_path / "a.onnx") != a


def test_metric_names_need_the_standard_library_only():
    """The gate reads them from cached metrics at the end of every run: no numpy for that."""
    probe = ("import json, sys; import olive_bf16_pass.evaluation.metrics, olive_bf16_pass.evaluation.thresholds;"
             " print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'olive'))))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_a_model_the_emulation_refuses_names_the_option_that_skips_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OLIVE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(agreement.EvaluationError, match=r"emulated BF16-compute model of .*broken.onnx.*\"emulate\": false"):
        figures.emulated_model_file(tmp_path / "broken.onnx")
