"""Olive evaluators that measure how far a BF16 model drifts from its FP32 source.

Two evaluators, registered in Olive's evaluator registry when this module is imported:

``EmbeddingFidelityEvaluator``
    for sentence-embedding models (BCE embedding, MiniLM). Embeds the shipped corpus
    (corpus.py: English and Chinese) with the BF16 model on the target execution provider and with
    its FP32 source on the CPU EP, then reports::

        fidelity-cosine_mean, fidelity-cosine_min   cosine(FP32, BF16) per sentence
        retrieval-top10_overlap                      mean |topk_fp32 & topk_bf16| / k
        retrieval-top1_agreement                     share of sentences whose nearest neighbour agrees
        latency-p50, latency-p90                     ms per run of the BF16 model on one input, target EP
        latency-source_p50, latency-source_p90       the same for the FP32 source on the CPU EP
        size-bytes, size-source_bytes, size-ratio    on disk, external data included
        placement-ep_op_share                        share of operators the target EP ran (placement.py)
        placement-npu_subgraphs                      NPU subgraphs that ran (NPU EPs only, when known)

    and prints them as a two-column FP32 / BF16 table (table.py) when it is done. ``pooling``
    ``cls`` or ``mean`` takes token states [batch, sequence, hidden]; ``none`` takes vectors the
    model already pooled, [batch, hidden].

``RerankerFidelityEvaluator``
    for cross-encoders (BCE reranker). Scores query/passage pairs built from the corpus and
    reports ``fidelity-spearman`` (rank correlation of all pair scores),
    ``fidelity-top1_agreement`` (share of queries whose best passage agrees),
    ``fidelity-max_abs_diff``, and the same latency and size metrics. The score of a pair is the
    single logit of a [batch] / [batch, 1] head, or the log-odds of the relevant class of a
    [batch, classes] head: class 1 of two, ``score_index`` of more (agreement.relevance_scores).

An output that cannot carry the metric (wrong rank, hidden size 1, integers, too few texts for
top-k, one vector or score for everything) stops the evaluation with a message naming the output
and the option to change (``output_name``, ``pooling``, ``score_index``): its metric would read 1.0
whatever the model does. For latency the two models take turns on the same inputs (the first few
of the corpus, one at a time), so drift reaches both alike.

In a workflow: ``"evaluators": {"fidelity": {"type": "EmbeddingFidelityEvaluator", "pooling": "cls"}},
"evaluator": "fidelity", "evaluate_input_model": false``. The FP32 source is
``model_attributes["bf16_source_model_path"]`` (set by ``OnnxFloatToBFloat16``) unless
``reference_model`` is given, and always runs on ``CPUExecutionProvider``; the tokenizer is
``tokenizer`` or else ``model_attributes["_name_or_path"]``.

Every failure is raised as :class:`EvaluationError`, a ``ValueError``: Olive's engine re-raises
``ValueError`` where it would log and swallow any other exception, so ``olive run`` exits non-zero
instead of exiting 0 with no model. So do a metric that misses its ``thresholds`` and a silent
fallback: ``min_ep_op_share`` (default: a non-CPU EP must run some operators) is checked against
where the model really ran (probe.py, placement.py), not against ``session.get_providers()``,
which lists the Vitis AI EP first even when it ran nothing.

This module is imported at every ``import olive`` (the start-up hook registers the evaluators
when Olive's evaluator module loads, see discovery.py), so at the top it imports only Olive and
attributes.py; numpy, ONNX Runtime sessions, the corpus and the metrics are imported inside the
methods that use them, when an evaluation runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from olive.evaluator.metric_result import MetricResult, SubMetricResult
from olive.evaluator.olive_evaluator import OliveEvaluator
from olive.evaluator.registry import Registry

from olive_bf16_pass.olive.attributes import SOURCE_MODEL_ATTRIBUTE

if TYPE_CHECKING:
    from olive.hardware.accelerator import Device
    from olive.model import OliveModelHandler

    from olive_bf16_pass.olive.sessions import Io

__all__ = ["EmbeddingFidelityEvaluator", "EvaluationError", "RerankerFidelityEvaluator", "missing_provider_message"]
# the last two are re-exported from where they live, imported on first use (see __getattr__)
_LAZY = {
    "EvaluationError": "olive_bf16_pass.agreement",
    "missing_provider_message": "olive_bf16_pass.olive.sessions",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

logger = logging.getLogger(__name__)

LATENCY_INPUTS = 4  # the first corpus inputs the latency runs cycle over

# every other metric is higher-is-better
_LOWER_IS_BETTER = frozenset({
    "fidelity-max_abs_diff", "latency-p50", "latency-p90", "latency-source_p50", "latency-source_p90",
    "size-bytes", "size-source_bytes", "size-ratio",
    "placement-npu_subgraphs",  # fewer pieces: fewer NPU/CPU hand-overs
})


def _sub(value: float, name: str) -> SubMetricResult:
    return SubMetricResult(value=value, priority=-1, higher_is_better=name not in _LOWER_IS_BETTER)


class _FidelityEvaluator(OliveEvaluator):
    """Shared parts: options, sessions, latency, size, thresholds, error handling."""

    _OPTIONS: dict[str, Any] = {  # noqa: RUF012
        "tokenizer": None,
        "reference_model": None,
        "corpus": None,
        "languages": None,
        "corpus_limit": None,
        "batch_size": 8,
        "max_length": None,
        "output_name": None,
        "latency_runs": 20,
        "warmup_runs": 3,
        "thresholds": None,
        "cpu_twin": None,
        "min_ep_op_share": None,  # None: a non-CPU EP must run some operators; a number: at least that share
    }

    def __init__(self, **kwargs):
        options = dict(self._OPTIONS)
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            from olive_bf16_pass.agreement import EvaluationError

            raise EvaluationError(
                f"{type(self).__name__}: unknown option(s) {unknown}; known options: {sorted(options)}"
            )
        options.update(kwargs)
        for k, v in options.items():
            setattr(self, k, v)
        self._probe = None
        super().__init__()

    # Olive calls evaluate(model, metrics, device, execution_providers); `metrics` from the
    # recipe is ignored: this evaluator always reports its own fixed set.
    def evaluate(
        self,
        model: OliveModelHandler,
        metrics: list,
        device: Device = None,
        execution_providers: Optional[Union[str, list[str]]] = None,
    ) -> MetricResult:
        from olive_bf16_pass.agreement import EvaluationError
        from olive_bf16_pass.olive.table import side_by_side

        self._probe = None
        try:
            results = self._evaluate(model, device, execution_providers)
        except EvaluationError:
            raise
        except Exception as e:  # every other failure becomes loud too (see EvaluationError)
            raise EvaluationError(f"{type(self).__name__} failed: {type(e).__name__}: {e}") from e
        finally:
            if self._probe is not None:
                self._probe.close()
        logger.info("%s results:\n%s", type(self).__name__, json.dumps(results, indent=2))
        print(side_by_side(results, self._provider), flush=True)  # the run's answer, whatever the log level
        self._check_thresholds(results)
        return MetricResult.model_validate({k: _sub(v, k) for k, v in results.items()})

    def _evaluate(self, model, device, execution_providers) -> dict[str, float]:
        """Both models on the same inputs, then where the BF16 one ran, agreement, latency, size."""
        import numpy as np

        from olive_bf16_pass.olive import sessions
        from olive_bf16_pass.olive.sessions import REFERENCE_PROVIDER, Io

        source = self._source_path(model)
        tokenizer = self._tokenizer(model)
        texts, pairs = self._inputs()
        target, self._provider, self._probe = sessions.target_session(model, device, execution_providers, self.cpu_twin)
        reference = sessions.reference_session(source)
        runs = [(target, self._output_name(target)), (reference, self._output_name(reference, target))]
        io = Io(target)
        feeds, sizes = sessions.feeds(tokenizer, io, self.max_length, self.batch_size, texts, pairs)
        logger.info(
            "%s: %d inputs through the BF16 model on %s and the FP32 source on %s (output %r)",
            type(self).__name__, len(texts), self._provider, REFERENCE_PROVIDER, runs[0][1],
        )
        test, ref = (
            np.concatenate([self._read(whose, session, name, feed, n) for feed, n in zip(feeds, sizes)])
            for whose, (session, name) in zip(("the BF16 model's", "the FP32 source's"), runs)
        )
        placement = self._probe.metrics(self.min_ep_op_share)  # ends profiling: before the timed runs
        results = self._agreement(ref, test)
        results.update(self._latency(target, reference, tokenizer, io, texts, pairs))
        results.update(self._sizes(model.model_path, source))
        results.update(placement)
        return results

    # -- pieces; each evaluator adds _inputs() -> (texts, pairs or None), _read(whose, session, output,
    # feed, rows) -> its vectors or scores, _agreement(ref, test) -> metrics, _prefer() -> (names, rank)

    def _source_path(self, model) -> str:
        from olive_bf16_pass.agreement import EvaluationError
        from olive_bf16_pass.olive import sessions

        attrs = getattr(model, "model_attributes", None) or {}
        source = self.reference_model or attrs.get(SOURCE_MODEL_ATTRIBUTE)
        if not source:
            raise EvaluationError(
                f"{type(self).__name__} compares a BF16 model with its FP32 source, but the model has no"
                f" model_attributes[{SOURCE_MODEL_ATTRIBUTE!r}]. Evaluate the output of OnnxFloatToBFloat16"
                " (set \"evaluate_input_model\": false), or set the evaluator's 'reference_model'."
            )
        source = sessions.resolve_path_spec(str(source))
        if not Path(source).exists():
            raise EvaluationError(f"the FP32 reference model {source} does not exist (was the Olive cache cleaned?)")
        return source

    def _tokenizer(self, model):
        from olive_bf16_pass.agreement import EvaluationError
        from olive_bf16_pass.olive import sessions

        attrs = getattr(model, "model_attributes", None) or {}
        spec = self.tokenizer or attrs.get("_name_or_path")
        if not spec:
            raise EvaluationError(
                f"{type(self).__name__} needs a tokenizer: set the evaluator's 'tokenizer' (a model folder,"
                " a Hugging Face name or 'module:function'); it defaults to model_attributes['_name_or_path'],"
                " which only chains that start from an HfModel carry."
            )
        return sessions.load_tokenizer(str(spec))

    def _output_name(self, session, like=None) -> str:
        """``output_name``, else the one ``like``'s session is read from, a preferred name, rank, the first."""
        names = [o.name for o in session.get_outputs()]
        if self.output_name:
            if self.output_name not in names:
                from olive_bf16_pass.agreement import EvaluationError

                raise EvaluationError(f"output {self.output_name!r} not in the model's outputs {names}")
            return self.output_name
        if like is not None and self._output_name(like) in names:
            return self._output_name(like)
        prefer_names, prefer_rank = self._prefer()
        ranked = [o.name for o in session.get_outputs() if len(o.shape) == prefer_rank]
        return next((n for n in names if n in prefer_names), ranked[0] if ranked else names[0])

    def _latency(self, target, reference, tokenizer, io: Io, texts, pairs=None) -> dict[str, float]:
        """p50/p90 in ms of one inference of one input; the models take turns, cycling over the first inputs."""
        import numpy as np

        from olive_bf16_pass.olive import sessions

        n = min(LATENCY_INPUTS, len(texts))
        feeds, _ = sessions.feeds(tokenizer, io, self.max_length, 1, texts[:n], None if pairs is None else pairs[:n])
        ref_ms, target_ms = sessions.interleaved_latency(
            [reference, target], feeds, self.latency_runs, self.warmup_runs
        )
        return {
            "latency-p50": float(np.percentile(target_ms, 50)),
            "latency-p90": float(np.percentile(target_ms, 90)),
            "latency-source_p50": float(np.percentile(ref_ms, 50)),
            "latency-source_p90": float(np.percentile(ref_ms, 90)),
        }

    @staticmethod
    def _sizes(model_path, source_path) -> dict[str, float]:
        from olive_bf16_pass.olive import sessions

        size, source = sessions.model_size_on_disk(model_path), sessions.model_size_on_disk(source_path)
        return {"size-bytes": size, "size-source_bytes": source, "size-ratio": size / source if source else 0.0}

    def _check_thresholds(self, results: dict[str, float]) -> None:
        if not self.thresholds:
            return
        from olive_bf16_pass.agreement import EvaluationError

        failures = []
        for name, bound in self.thresholds.items():
            if name not in results:
                raise EvaluationError(f"threshold on unknown metric {name!r}; metrics are {sorted(results)}")
            value = results[name]
            higher = name not in _LOWER_IS_BETTER
            if not (value >= bound if higher else value <= bound):
                op = ">=" if higher else "<="
                failures.append(f"{name} = {value:.6g}, required {op} {bound}")
        if failures:
            raise EvaluationError("the BF16 model misses its thresholds: " + "; ".join(failures))

    def _texts(self) -> list[str]:
        from olive_bf16_pass.olive import sessions
        from olive_bf16_pass.olive.corpus import load_corpus

        corpus = self.corpus and sessions.resolve_path_spec(str(self.corpus))
        return load_corpus(corpus, self.languages, self.corpus_limit)


@Registry.register("EmbeddingFidelityEvaluator")
class EmbeddingFidelityEvaluator(_FidelityEvaluator):
    """FP32-vs-BF16 agreement of a sentence-embedding model; see the module docstring."""

    _OPTIONS = {**_FidelityEvaluator._OPTIONS, "pooling": "cls", "top_k": 10}  # noqa: RUF012

    def _prefer(self):
        if self.pooling == "none":
            return ("sentence_embedding",), 2
        return ("last_hidden_state", "token_embeddings"), 3

    def _inputs(self):
        return self._texts(), None

    def _read(self, whose, session, name, feed, n):
        from olive_bf16_pass import agreement

        out = session.run([name], feed)[0]
        agreement.check_embedding_output(name, out, self.pooling, len(next(iter(feed.values()))), whose)
        return agreement.pool(out, feed.get("attention_mask"), self.pooling)[:n]

    def _agreement(self, ref, test):
        from olive_bf16_pass import agreement

        agree = agreement.embedding_agreement(ref, test, int(self.top_k))
        return {
            "fidelity-cosine_mean": agree["cosine_mean"],
            "fidelity-cosine_min": agree["cosine_min"],
            "retrieval-top10_overlap": agree["topk_overlap"],
            "retrieval-top1_agreement": agree["top1_agreement"],
        }


@Registry.register("RerankerFidelityEvaluator")
class RerankerFidelityEvaluator(_FidelityEvaluator):
    """FP32-vs-BF16 agreement of a cross-encoder reranker; see the module docstring."""

    _OPTIONS = {  # noqa: RUF012
        **_FidelityEvaluator._OPTIONS, "num_queries": 32, "group_size": 8, "seed": 0, "score_index": None
    }

    def _prefer(self):
        return ("logits", "scores"), None

    def _inputs(self):
        from olive_bf16_pass.olive.corpus import reranker_pairs

        queries, groups = reranker_pairs(self._texts(), int(self.num_queries), int(self.group_size), int(self.seed))
        self._shape = (len(queries), len(groups[0]))
        return [q for q, g in zip(queries, groups) for _ in g], [p for g in groups for p in g]

    def _read(self, whose, session, name, feed, n):
        from olive_bf16_pass import agreement

        out = session.run([name], feed)[0]
        agreement.check_scores_output(name, out, len(next(iter(feed.values()))), self.score_index, whose)
        return agreement.relevance_scores(out, self.score_index)[:n]

    def _agreement(self, ref, test):
        from olive_bf16_pass import agreement

        agree = agreement.reranker_agreement(ref.reshape(self._shape), test.reshape(self._shape))
        return {
            "fidelity-spearman": agree["spearman"],
            "fidelity-top1_agreement": agree["top1_agreement"],
            "fidelity-max_abs_diff": agree["max_abs_diff"],
        }
