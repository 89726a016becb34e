"""Olive evaluators that measure how far a BF16 model drifts from its FP32 source.

Two evaluators, registered in Olive's evaluator registry when this module is imported:

``EmbeddingFidelityEvaluator``
    for sentence-embedding models (BCE embedding, MiniLM). Embeds the shipped corpus
    (evaluation/corpus.py: English and Chinese) with the BF16 model on the target execution provider and with
    its FP32 source on the CPU EP, then reports::

        fidelity-cosine_mean, fidelity-cosine_min   cosine(FP32, BF16) per sentence
        retrieval-top10_overlap                      mean |topk_fp32 & topk_bf16| / k
        retrieval-top1_agreement                     share of sentences whose nearest neighbour agrees
        latency-p50, latency-p90                     ms per run of the BF16 model on one input, target EP
        latency-source_p50, latency-source_p90       the same for the FP32 source on the CPU EP
        size-bytes, size-source_bytes, size-ratio    on disk, external data included
        placement-ep_op_share                        share of operators the target EP ran (evaluation/placement.py)
        placement-npu_subgraphs                      NPU subgraphs that ran (NPU EPs only, when known)

    and prints them side by side, FP32 / BF16 / emulated (evaluation/table.py), when it is done. ``pooling``
    ``cls`` or ``mean`` takes token states [batch, sequence, hidden]; ``none`` takes vectors the
    model already pooled, [batch, hidden]. ``query_prefix`` / ``passage_prefix`` (a model card's
    ``"query: "`` / ``"passage: "``, BGE's query instruction): where they differ each text is embedded
    as a query and as a passage, and retrieval is scored queries against passages (evaluation/corpus.py).

``RerankerFidelityEvaluator``
    for cross-encoders (BCE reranker). Scores query/passage pairs built from the corpus and
    reports ``fidelity-spearman`` (rank correlation of all pair scores),
    ``fidelity-top1_agreement`` (share of queries whose best passage agrees),
    ``fidelity-max_abs_diff``, and the same latency and size metrics. The score of a pair is the
    single logit of a [batch] / [batch, 1] head, or the log-odds of the relevant class of a
    [batch, classes] head: class 1 of two, ``score_index`` of more (evaluation/agreement.py's relevance_scores).

The three figures (issue 22; evaluation/metrics.py names them). The metrics above compare the model
under test with FP32. With ``emulate`` (default true) the emulated BF16-compute model of the FP32
source (emulation.py: every tensor between nodes rounded to BF16, FP32 inside each node: what an
NPU-class device should get) runs too, on the CPU EP and the same inputs, made once per source in
Olive's cache: ``fidelity-emulated-cosine_mean``, ``fidelity-emulated-cosine_min``,
``retrieval-emulated-top10_overlap``, ``retrieval-emulated-top1_agreement`` (``fidelity-emulated-spearman``,
``-top1_agreement``, ``-max_abs_diff`` for a reranker). Where the target EP is not the CPU (a Vitis AI
run: the plain metrics are the NPU's), the BF16 model runs on the CPU as well, reported as
``fidelity-weight_only-...``, and the device against the emulation as ``fidelity-device_vs_emulated-...``,
with ``fidelity-miscompile_ratio``: the device's gap from the emulation over the emulation's gap from
FP32. Above ``miscompile_factor`` (default 100; fidelity_figures.py says how it was chosen) the run
fails as a likely miscompile, with the figures, as a missed threshold does. ``emulate: false``
skips the emulated runs (faster; only the plain metrics).

An output that cannot carry the metric (wrong rank, hidden size 1, integers, too few texts for
top-k, one vector or score for everything) stops the evaluation with a message naming the output
and the option to change (``output_name``, ``pooling``, ``score_index``): its metric would read 1.0
whatever the model does. For latency the two models take turns on the same inputs (the first few
of the corpus, one at a time), so drift reaches both alike.

In a workflow: ``"evaluators": {"fidelity": {"type": "EmbeddingFidelityEvaluator", "pooling": "cls"}},
"evaluator": "fidelity"``. The FP32 source is the one ``OnnxFloatToBFloat16`` recorded
(attributes.source_model_path) unless ``reference_model`` names a stable copy, and always runs on
``CPUExecutionProvider``; the FP32 model itself (``"evaluate_input_model": true``) is reported as
the baseline (latency, size, placement), never compared with itself. The tokenizer is ``tokenizer``
or else ``model_attributes["_name_or_path"]``; ``input_names`` maps the model's input names to the
tokenizer's outputs (``{"ids": "input_ids", "mask": "attention_mask"}``) where they differ.

Every failure is raised as :class:`EvaluationError`, a ``ValueError``: Olive's engine re-raises
``ValueError`` where it would log and swallow any other exception, so ``olive run`` exits non-zero
instead of exiting 0 with no model. So do a metric that misses its ``thresholds`` (or an Olive
``goal`` on one of these metrics; evaluation/thresholds.py), checked on every run, cached or fresh,
with the model kept in the output folder (gate.py); a later pass that undid the BF16 conversion;
and a silent fallback: ``min_ep_op_share`` (default: a non-CPU EP must run some operators) is checked against
where the model really ran (evaluation/probe.py, placement.py), not against ``session.get_providers()``,
which lists the Vitis AI EP first even when it ran nothing.

The work itself is Olive-free, in ``olive_bf16_pass.evaluation``; fidelity_base.py adapts it to
Olive's evaluator interface (options, the session Olive makes, metric results), this module adds
what each kind of model reads and reports, and registers them.

This module is imported at every ``import olive`` (the start-up hook registers the evaluators
when Olive's evaluator module loads, see discovery.py), so at the top it imports only Olive,
fidelity_base.py, attributes.py and evaluation/errors.py (no imports of their own); numpy, ONNX Runtime sessions,
the corpus and the metrics are imported inside the methods that use them, when an evaluation runs.
"""

from __future__ import annotations

from olive.evaluator.registry import Registry

from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.olive.fidelity_base import LATENCY_INPUTS, FidelityEvaluator

__all__ = ["EmbeddingFidelityEvaluator", "EvaluationError", "RerankerFidelityEvaluator", "missing_provider_message"]
# missing_provider_message's module needs numpy, so it is imported on first use (see __getattr__)
_LAZY = {"missing_provider_message": "olive_bf16_pass.evaluation.sessions"}
_ = LATENCY_INPUTS  # re-exported


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@Registry.register("EmbeddingFidelityEvaluator")
class EmbeddingFidelityEvaluator(FidelityEvaluator):
    """FP32-vs-BF16 agreement of a sentence-embedding model; see the module docstring."""

    _OPTIONS = {**FidelityEvaluator._OPTIONS, "pooling": "cls", "top_k": 10}  # noqa: RUF012

    def _prefer(self):
        if self.pooling == "none":
            return ("sentence_embedding",), 2
        return ("last_hidden_state", "token_embeddings"), 3

    _KIND = "embedding"

    def _inputs(self):
        from olive_bf16_pass.evaluation.corpus import prefixed

        texts, self._queries = prefixed(self._texts(), self.query_prefix, self.passage_prefix)
        return texts, None

    def _read(self, whose, session, name, feed, n):
        from olive_bf16_pass.evaluation import agreement

        out = session.run([name], feed)[0]
        agreement.check_embedding_output(name, out, self.pooling, len(next(iter(feed.values()))), whose)
        return agreement.pool(out, feed.get("attention_mask"), self.pooling)[:n]

    def _arrange(self, array):
        return array

    def _agreement_options(self):
        return {"top_k": int(self.top_k), "queries": self._queries}


@Registry.register("RerankerFidelityEvaluator")
class RerankerFidelityEvaluator(FidelityEvaluator):
    """FP32-vs-BF16 agreement of a cross-encoder reranker; see the module docstring."""

    _OPTIONS = {  # noqa: RUF012
        **FidelityEvaluator._OPTIONS, "num_queries": 32, "group_size": 8, "seed": 0, "score_index": None
    }

    def _prefer(self):
        return ("logits", "scores"), None

    _KIND = "reranker"

    def _inputs(self):
        from olive_bf16_pass.evaluation.corpus import prefixed_pairs, reranker_pairs

        queries, groups = reranker_pairs(self._texts(), int(self.num_queries), int(self.group_size), int(self.seed))
        self._shape = (len(queries), len(groups[0]))
        return prefixed_pairs([q for q, g in zip(queries, groups) for _ in g], [p for g in groups for p in g],
                              self.query_prefix, self.passage_prefix)

    def _read(self, whose, session, name, feed, n):
        from olive_bf16_pass.evaluation import agreement

        out = session.run([name], feed)[0]
        agreement.check_scores_output(name, out, len(next(iter(feed.values()))), self.score_index, whose)
        return agreement.relevance_scores(out, self.score_index)[:n]

    def _arrange(self, array):
        return array.reshape(self._shape)

    def _agreement_options(self):
        return {}
