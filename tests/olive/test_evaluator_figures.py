"""The three fidelity figures in the Olive evaluators (issue 22 item 2): weight-only BF16, emulated BF16
compute and, on a device, the device's own output, with the miscompile flag; query / passage prefixes.

No NPU here: the "device" is a session substituted for the one Olive makes, running the emulated model
(a device that computes as the emulation says) with noise added to its outputs: a few percent of their
spread stands for a sound NPU's own approximations (about 10x the emulation's gap, as NetEase's BCE
sample on a Ryzen AI NPU), ten times more for a miscompile.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from olive_bf16_pass.evaluation import figures, inputs, sessions
from olive_bf16_pass.evaluation.metrics import MISCOMPILE_RATIO
from olive_bf16_pass.olive import evaluators as ev
from olive_bf16_pass.olive import gate
from olive_bf16_pass.providers import VITISAI

EMULATED = ("fidelity-emulated-cosine_mean", "fidelity-emulated-cosine_min", "retrieval-emulated-top10_overlap",
            "retrieval-emulated-top1_agreement")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OLIVE_CACHE_DIR", str(tmp_path / "olive_cache"))  # where the emulated model is made


def _evaluate(handler, evaluator, device="cpu", eps=("CPUExecutionProvider",)):
    return {k: v.value for k, v in evaluator.evaluate(handler, [], device, list(eps)).root.items()}


def _embedder(tokenizer_dir, **options):
    options = {"pooling": "mean", "corpus_limit": 40, "latency_runs": 1, "warmup_runs": 0, **options}
    return ev.EmbeddingFidelityEvaluator(tokenizer=str(tokenizer_dir), **options)


# ----------------------------------------------------------------------------- the CPU run


def test_cpu_run_reports_weight_only_and_emulated_against_fp32(encoder_pair, tokenizer_dir, onnx_handler, tmp_path,
                                                              capsys):
    fp32, bf16 = encoder_pair
    r = _evaluate(onnx_handler(bf16, fp32), _embedder(tokenizer_dir))
    assert set(EMULATED) <= set(r)
    assert not any("weight_only" in k or "device_vs_emulated" in k for k in r) and MISCOMPILE_RATIO not in r
    # rounding every activation loses more than rounding the weights alone, and is not the same figure
    assert 0.999 < r["fidelity-emulated-cosine_mean"] < r["fidelity-cosine_mean"] < 1.0
    assert r["fidelity-emulated-cosine_min"] <= r["fidelity-emulated-cosine_mean"]
    made = list((tmp_path / "olive_cache").rglob("emulated_bf16_compute.onnx"))
    assert len(made) == 1  # in Olive's cache of the run (OLIVE_CACHE_DIR)
    table = capsys.readouterr().out
    assert "emulated BF16 compute (CPU)" in table.splitlines()[0]
    row = next(line for line in table.splitlines() if line.startswith("fidelity-cosine_mean"))
    assert row.split()[1:] == ["1", f"{r['fidelity-cosine_mean']:.7g}", f"{r['fidelity-emulated-cosine_mean']:.7g}"]

    stamp = made[0].stat().st_mtime_ns  # the second evaluation reuses the emulated model
    again = _evaluate(onnx_handler(bf16, fp32), _embedder(tokenizer_dir))
    assert made[0].stat().st_mtime_ns == stamp
    assert again["fidelity-emulated-cosine_mean"] == r["fidelity-emulated-cosine_mean"]


def test_emulate_false_skips_the_emulated_runs(encoder_pair, tokenizer_dir, onnx_handler, tmp_path, capsys):
    fp32, bf16 = encoder_pair
    r = _evaluate(onnx_handler(bf16, fp32), _embedder(tokenizer_dir, emulate=False))
    assert not any("emulated" in k for k in r) and r["fidelity-cosine_mean"] > 0.999
    assert not list(tmp_path.rglob("emulated_bf16_compute.onnx"))
    assert "emulated" not in capsys.readouterr().out


def test_reranker_gets_the_emulated_spearman(reranker_pair, tokenizer_dir, onnx_handler):
    fp32, bf16 = reranker_pair
    evaluator = ev.RerankerFidelityEvaluator(tokenizer=str(tokenizer_dir), num_queries=12, group_size=6, latency_runs=1)
    r = _evaluate(onnx_handler(bf16, fp32), evaluator)
    assert {"fidelity-emulated-spearman", "fidelity-emulated-top1_agreement", "fidelity-emulated-max_abs_diff"} <= set(r)
    assert 0.5 < r["fidelity-emulated-spearman"] <= 1.0
    # the emulation rounds the logits themselves to BF16: further from FP32 than BF16 weights alone
    assert r["fidelity-emulated-max_abs_diff"] > r["fidelity-max_abs_diff"]


# ----------------------------------------------------------------------------- a device run (substituted)


class _Probe:
    def metrics(self, share):
        return {"placement-ep_op_share": 1.0, "placement-npu_subgraphs": 1}

    def close(self):
        pass


class _Device:
    """An ONNX Runtime session whose float outputs get seeded noise of ``scale`` times their spread."""

    def __init__(self, path, scale):
        self._session, self._scale, self._rng = ort.InferenceSession(str(path)), scale, np.random.default_rng(0)

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, names, feed):
        outs = self._session.run(names, feed)
        return [o + (self._rng.standard_normal(o.shape) * self._scale * o.std()).astype(o.dtype) for o in outs]


@pytest.fixture
def on_device(monkeypatch, encoder_pair):
    """on_device(scale): the model under test 'runs on the Vitis AI EP', as the emulated model plus noise."""
    fp32, _ = encoder_pair

    def install(scale):
        device = _Device(figures.emulated_model_file(fp32), scale)
        monkeypatch.setattr(sessions, "target_session", lambda *a, **k: (device, VITISAI, _Probe()))

    return install


def test_a_sound_device_passes_with_all_three_figures(encoder_pair, tokenizer_dir, onnx_handler, on_device, capsys):
    fp32, bf16 = encoder_pair
    on_device(0.03)  # its own kernels' approximations: about 10x the emulation's gap
    r = _evaluate(onnx_handler(bf16, fp32), _embedder(tokenizer_dir), "npu", [VITISAI])
    # the plain names are the device's; the weight-only BF16 model ran on the CPU beside it
    assert r["fidelity-cosine_mean"] < r["fidelity-emulated-cosine_mean"] < r["fidelity-weight_only-cosine_mean"] < 1
    assert r["fidelity-device_vs_emulated-cosine_mean"] < 1.0
    assert 1.0 < r[MISCOMPILE_RATIO] < 100.0
    table = capsys.readouterr().out
    head = table.splitlines()[0]
    assert all(words in head for words in (f"BF16 ({VITISAI})", "BF16 weights only (CPU)", "device vs emulated"))
    assert any(line.startswith(MISCOMPILE_RATIO) for line in table.splitlines())


def test_a_miscompile_is_an_error_with_the_figures(encoder_pair, tokenizer_dir, onnx_handler, on_device):
    fp32, bf16 = encoder_pair
    on_device(0.3)  # cosine about 0.99 against FP32: a loose FP32 threshold alone would pass it
    handler = onnx_handler(bf16, fp32)
    with pytest.raises(ev.EvaluationError) as info:
        _evaluate(handler, _embedder(tokenizer_dir, thresholds={"fidelity-cosine_mean": 0.98}), "npu", [VITISAI])
    message = str(info.value)
    assert "fidelity-miscompile_ratio = " in message and "required <= 100 (miscompile_factor)" in message
    assert "likely miscompile" in message and "device 0.9" in message and "emulated BF16 compute (CPU) 0.99999" in message
    assert "BF16 weights only (CPU) 0.99999" in message
    # the factor is an option; emulate false makes no device figure to flag
    r = _evaluate(handler, _embedder(tokenizer_dir, miscompile_factor=1e6), "npu", [VITISAI])
    assert r[MISCOMPILE_RATIO] > 100
    r = _evaluate(handler, _embedder(tokenizer_dir, emulate=False), "npu", [VITISAI])
    assert MISCOMPILE_RATIO not in r and not any("emulated" in k for k in r)


def test_the_gate_flags_a_miscompile_in_cached_metrics(tmp_path):
    """Inside `olive run` the gate checks the metrics Olive hands back, cached ones included."""
    metrics = {"fidelity-cosine_mean": 0.99, "fidelity-weight_only-cosine_mean": 0.999995,
               "fidelity-emulated-cosine_mean": 0.99999, "fidelity-device_vs_emulated-cosine_mean": 0.99,
               MISCOMPILE_RATIO: 1000.0, "size-bytes": 1.0, "size-source_bytes": 2.0, "size-ratio": 0.5,
               "latency-p50": 1.0, "latency-p90": 1.0, "latency-source_p50": 1.0, "latency-source_p90": 1.0}

    def run_config(**options):
        evaluator = SimpleNamespace(type="EmbeddingFidelityEvaluator", type_args=options, metrics=[])
        return SimpleNamespace(passes={}, engine=SimpleNamespace(evaluator=evaluator, output_dir=str(tmp_path)))

    candidate = SimpleNamespace(model_config={}, model_path=str(tmp_path / "model.onnx"), model_id="m",
                                metrics_value={k: {"value": v} for k, v in metrics.items()})
    output = SimpleNamespace(has_output_model=lambda: True, get_best_candidate=lambda: candidate)
    with pytest.raises(ev.EvaluationError, match=r"fidelity-miscompile_ratio = 1000, required <= 100.*device 0\.990000"):
        gate.check_output(run_config(), output)
    gate.check_output(run_config(miscompile_factor=5000), output)  # a looser factor passes


# ----------------------------------------------------------------------------- prefixes


class _Fed:
    """Records the input ids of every fidelity run (one output asked for) of a session."""

    def __init__(self, session, seen):
        self._session, self._seen = session, seen

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, names, feed):
        if names is not None:
            self._seen.extend(feed["input_ids"])
        return self._session.run(names, feed)


def _texts_fed(monkeypatch, tokenizer_dir, evaluate) -> list[str]:
    seen = []
    target = sessions.target_session
    monkeypatch.setattr(sessions, "target_session",
                        lambda *a, **k: (lambda s, *rest: (_Fed(s, seen), *rest))(*target(*a, **k)))
    result = evaluate()
    tokenizer = inputs.load_tokenizer(str(tokenizer_dir))
    return result, [tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") for ids in seen]  # 'query :'


def test_query_and_passage_prefixes_make_queries_against_passages(encoder_pair, tokenizer_dir, onnx_handler,
                                                                  monkeypatch):
    fp32, bf16 = encoder_pair
    evaluator = _embedder(tokenizer_dir, query_prefix="query: ", passage_prefix="passage: ", corpus_limit=20)
    r, texts = _texts_fed(monkeypatch, tokenizer_dir, lambda: _evaluate(onnx_handler(bf16, fp32), evaluator))
    assert len(texts) == 40
    assert all(t.startswith("query:") for t in texts[:20]) and all(t.startswith("passage:") for t in texts[20:])
    assert [t.split(":", 1)[1] for t in texts[:20]] == [t.split(":", 1)[1] for t in texts[20:]]
    assert r["retrieval-top10_overlap"] > 0.5


def test_one_prefix_for_both_sides_is_the_corpus_against_itself(encoder_pair, tokenizer_dir, onnx_handler,
                                                               monkeypatch):
    fp32, bf16 = encoder_pair
    evaluator = _embedder(tokenizer_dir, query_prefix="query: ", passage_prefix="query: ", corpus_limit=20,
                          emulate=False)
    _, texts = _texts_fed(monkeypatch, tokenizer_dir, lambda: _evaluate(onnx_handler(bf16, fp32), evaluator))
    assert len(texts) == 20 and all(t.startswith("query:") for t in texts)


def test_reranker_prefixes_go_on_queries_and_passages(reranker_pair, tokenizer_dir, onnx_handler, monkeypatch):
    fp32, bf16 = reranker_pair
    evaluator = ev.RerankerFidelityEvaluator(tokenizer=str(tokenizer_dir), num_queries=4, group_size=4, latency_runs=1,
                                             query_prefix="question: ", passage_prefix="answer: ", emulate=False)
    _, texts = _texts_fed(monkeypatch, tokenizer_dir, lambda: _evaluate(onnx_handler(bf16, fp32), evaluator))
    assert len(texts) == 16
    assert all(t.startswith("question:") and "answer:" in t for t in texts)
