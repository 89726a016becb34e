"""The fidelity evaluators' shared part: options, what is compared with what, sessions, latency, size.

``evaluate`` decides first what the model is:

- a BF16 model (the pass's record names its FP32 source, or ``reference_model`` names another
  file): both run on the same inputs and every metric is reported (evaluators.py);
- the FP32 model itself (``"evaluate_input_model": true``, or a reference that is the model's own
  file): no self-comparison, whose fidelity would read 1.0 whatever BF16 does; it is reported as
  the BASELINE, its latency, size and placement only, and says so in one line;
- a BF16 model with nothing to compare it with: an :class:`EvaluationError` that says what to set.

With ``emulate`` (default) the emulated BF16 compute of the FP32 source runs too, on the CPU EP, and
on a device (a Vitis AI run) the BF16 model on the CPU: three figures against FP32, and the device
against the emulation, a likely miscompile above ``miscompile_factor`` (evaluation/figures.py, metrics.py).

A BF16 model that a later pass folded back towards FP32 (fewer BF16 tensors than the pass
recorded) is an error naming the sizes (attributes.undone_message). Thresholds and Olive goals
(evaluation/thresholds.py) are checked here when the evaluator runs on its own, and after the
engine returns inside ``olive run`` (gate.py), where cached metrics are checked exactly as fresh
ones and the model is kept in the output folder.

Imported at every ``import olive`` (through evaluators.py): at the top only Olive, attributes.py
and evaluation/errors.py; the rest inside the methods, when an evaluation runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olive.evaluator.metric_result import MetricResult, SubMetricResult
from olive.evaluator.olive_evaluator import OliveEvaluator

from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.olive.attributes import RECORD_KEY, source_model_path

if TYPE_CHECKING:
    from olive.hardware.accelerator import Device
    from olive.model import OliveModelHandler

    from olive_bf16_pass.evaluation.inputs import Io

__all__ = ["FidelityEvaluator"]

logger = logging.getLogger(__name__)

LATENCY_INPUTS = 4  # the first corpus inputs the latency runs cycle over
BASELINE_METRICS = ("latency-p50", "latency-p90", "size-bytes", "placement-ep_op_share", "placement-npu_subgraphs")


class FidelityEvaluator(OliveEvaluator):
    """Shared parts: options, sessions, latency, size, thresholds, error handling."""

    olive_bf16_checked_by_gate = True  # gate.CHECKED_BY_GATE: its thresholds are checked after every run

    _OPTIONS: dict[str, Any] = {  # noqa: RUF012
        "tokenizer": None,
        "reference_model": None,
        "corpus": None,
        "languages": None,
        "corpus_limit": None,
        "batch_size": 8,
        "max_length": None,
        "output_name": None,
        "input_names": None,  # {model input: tokenizer output}, or the model's names for input_ids, attention_mask, ...
        "latency_runs": 20,
        "warmup_runs": 3,
        "thresholds": None,
        "cpu_twin": None,
        "fp32_twin": None,  # a recipe with storage float32, named when the EP fails to compile or falls back
        "min_ep_op_share": None,  # None: a non-CPU EP must run some operators; a number: at least that share
        "emulate": True,  # also the emulated BF16 compute (and, on a device, the BF16 model on the CPU)
        "miscompile_factor": None,  # None: fidelity_figures.MISCOMPILE_FACTOR
        "query_prefix": None,  # before each query (each text, where the two prefixes are the same)
        "passage_prefix": None,
    }

    def __init__(self, **kwargs):
        options = dict(self._OPTIONS)
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise EvaluationError(
                f"{type(self).__name__}: unknown option(s) {unknown}; known options: {sorted(options)}"
            )
        options.update(kwargs)
        if options["miscompile_factor"] is None:
            from olive_bf16_pass.evaluation.metrics import MISCOMPILE_FACTOR

            options["miscompile_factor"] = MISCOMPILE_FACTOR
        for k, v in options.items():
            setattr(self, k, v)
        self._probe = None
        super().__init__()

    def evaluate(
        self,
        model: OliveModelHandler,
        metrics: list,
        device: Device | None = None,
        execution_providers: str | list[str] | None = None,
    ) -> MetricResult:
        """Olive's entry point; ``metrics`` (Olive Metric configs) give priorities and goals."""
        from olive_bf16_pass.evaluation.table import side_by_side
        from olive_bf16_pass.evaluation.thresholds import higher_is_better
        from olive_bf16_pass.olive import gate

        self._probe = None
        name = type(self).__name__
        try:
            source = self._source_path(model)
            if source is None:
                print(f"{name}: {self._model_file(model)} is the FP32 model itself, evaluated as the BASELINE"
                      " (latency, size, placement); fidelity is measured on the BF16 output.", flush=True)
                results = self._baseline(model, device, execution_providers)
            else:
                undone = gate.undone_line(model)
                if undone:
                    raise EvaluationError(f"{name}: {undone} The model is at {self._model_file(model)}.")
                results = self._evaluate(model, source, device, execution_providers)
        except EvaluationError as e:
            from olive_bf16_pass.evaluation.sessions import fp32_twin_line

            twin = fp32_twin_line(self.fp32_twin, str(e))
            if twin:
                raise EvaluationError(f"{e} {twin}") from e
            raise
        except Exception as e:  # every other failure becomes loud too (see EvaluationError)
            raise EvaluationError(f"{name} failed: {type(e).__name__}: {e}") from e
        finally:
            if self._probe is not None:
                self._probe.close()
        logger.info("%s results:\n%s", name, json.dumps(results, indent=2))
        if source is not None:
            if not gate.deferred():  # inside `olive run` the gate prints it, for cached metrics too
                print(side_by_side(results, self._provider), flush=True)  # the run's answer, whatever the log level
            gate.check_evaluation(self, model, metrics, results)
        priorities = gate.priorities(metrics)
        return MetricResult.model_validate({
            k: SubMetricResult(value=v, priority=priorities.get(k, -1), higher_is_better=higher_is_better(k))
            for k, v in results.items()
        })

    def _evaluate(self, model, source: str, device, execution_providers) -> dict[str, float]:
        """The models on the same inputs, then the figures, where the BF16 one ran, latency, size."""
        from olive_bf16_pass.evaluation import figures, inputs, sessions
        from olive_bf16_pass.evaluation.sessions import REFERENCE_PROVIDER

        tokenizer = self._tokenizer(model)
        texts, pairs = self._inputs()
        target, self._provider, self._probe = self._target_session(model, device, execution_providers)
        reference = sessions.reference_session(source)
        io = self._io(target)
        feeds, sizes = inputs.feeds(tokenizer, io, self.max_length, self.batch_size, texts, pairs)
        logger.info(
            "%s: %d inputs through the BF16 model on %s and the FP32 source %s on %s (output %r)%s",
            type(self).__name__, len(texts), self._provider, source, REFERENCE_PROVIDER, self._output_name(target),
            ", and the emulated BF16 compute of the source on the CPU" if self.emulate else "",
        )
        outputs = {"target": self._outputs("the BF16 model's", target, target, feeds, sizes),
                   "reference": self._outputs("the FP32 source's", reference, target, feeds, sizes)}
        placement = self._probe.metrics(self.min_ep_op_share)  # ends profiling: before the timed runs
        if self.emulate:
            more = {"emulated": ("the emulated BF16 compute's", figures.emulated_model_file(source))}
            if self._provider != REFERENCE_PROVIDER:  # the device's figure: weight-only BF16 on the CPU beside it
                more["weight_only"] = (f"the BF16 model's (on {REFERENCE_PROVIDER})", self._model_file(model))
            for key, (whose, path) in more.items():
                outputs[key] = self._outputs(whose, sessions.reference_session(path), target, feeds, sizes)
        results = figures.fidelity_metrics(
            {k: self._arrange(v) for k, v in outputs.items()}, self._KIND, factor=float(self.miscompile_factor),
            **self._agreement_options(),
        )
        results.update(self._latency([reference, target], tokenizer, io, texts, pairs))
        results.update(sessions.size_figures(model.model_path, source))
        results.update(placement)
        return results

    def _outputs(self, whose: str, session, like, feeds, sizes):
        """What the evaluator reads from ``session`` (the output ``like``'s session is read from), all feeds."""
        import numpy as np

        name = self._output_name(session, like)
        return np.concatenate([self._read(whose, session, name, feed, n) for feed, n in zip(feeds, sizes)])

    def _baseline(self, model, device, execution_providers) -> dict[str, float]:
        """The FP32 model alone, on the target EP: latency, size, placement (no self-comparison)."""
        from olive_bf16_pass.evaluation import inputs, sessions

        tokenizer = self._tokenizer(model)
        texts, pairs = self._inputs()
        target, self._provider, self._probe = self._target_session(model, device, execution_providers)
        io = self._io(target)
        feeds, _ = inputs.feeds(tokenizer, io, self.max_length, 1, texts[:1], None if pairs is None else pairs[:1])
        target.run(None, feeds[0])
        results = dict(self._probe.metrics(self.min_ep_op_share))  # ends profiling: before the timed runs
        results.update(self._latency([target], tokenizer, io, texts, pairs))
        results["size-bytes"] = sessions.model_size_on_disk(model.model_path)
        return {k: v for k, v in results.items() if k in BASELINE_METRICS}

    # -- pieces; each evaluator adds _KIND ('embedding' | 'reranker'), _inputs() -> (texts, pairs or None),
    # _read(whose, session, output, feed, rows) -> its vectors or scores, _arrange(array) -> what the
    # agreement takes, _agreement_options() -> top_k / queries, _prefer() -> (names, rank)

    def _target_session(self, model, device, execution_providers):
        """(session, provider, probe) of the model, the session made by Olive so that the recipe's
        inference settings apply; Olive's OliveEvaluationError there is ORT refusing the EP."""
        from olive.exception import OliveEvaluationError

        from olive_bf16_pass.evaluation import sessions

        settings = model.merge_inference_settings(None, execution_providers)

        def create(inference_settings: dict):
            return model.prepare_session(inference_settings=inference_settings, device=device or "cpu")

        return sessions.target_session(settings, create, self.cpu_twin, (OliveEvaluationError,))

    @staticmethod
    def _model_file(model) -> str:
        return _onnx_file(model.model_path)

    def _source_path(self, model) -> str | None:
        """The FP32 model to compare with, or None where the model is that FP32 model (the baseline)."""
        from olive_bf16_pass.evaluation import inputs, sessions
        from olive_bf16_pass.olive.attributes import bf16_tensors

        source = self.reference_model or source_model_path(model)
        if not source:
            try:
                has_bf16 = bf16_tensors(self._model_file(model))[0] > 0
            except (OSError, ValueError):
                has_bf16 = True  # cannot tell: ask for the reference rather than guess
            if not has_bf16:
                return None
            raise EvaluationError(
                f"{type(self).__name__} compares a BF16 model with its FP32 source, but {self._model_file(model)}"
                f" carries no record of OnnxFloatToBFloat16 (metadata {RECORD_KEY!r}) to name it. Evaluate the"
                " output of OnnxFloatToBFloat16, or set the evaluator's 'reference_model' to the FP32 model."
            )
        source = inputs.resolve_path_spec(str(source))
        if not Path(source).exists():
            raise EvaluationError(
                f"the FP32 reference model {source} does not exist (was the Olive cache cleaned?); set the"
                " evaluator's 'reference_model' to a copy outside the cache"
            )
        if sessions.same_file(_onnx_file(source), self._model_file(model)):
            return None
        if sessions.in_olive_cache(source):
            logger.warning(
                "%s: the FP32 reference %s is a model in Olive's cache (a pass before OnnxFloatToBFloat16 made"
                " it); \"clean_cache\": true deletes it. Set 'reference_model' to a stable copy to compare later.",
                type(self).__name__, source,
            )
        return source

    def _tokenizer(self, model):
        from olive_bf16_pass.evaluation import inputs

        attrs = getattr(model, "model_attributes", None) or {}
        return inputs.load_tokenizer(self.tokenizer or attrs.get("_name_or_path"), type(self).__name__)

    def _io(self, session) -> Io:
        from olive_bf16_pass.evaluation.inputs import Io

        return Io(session, self.input_names)

    def _output_name(self, session, like=None) -> str:
        """``output_name``, else the one ``like``'s session is read from, a preferred name, rank, the first."""
        names = [o.name for o in session.get_outputs()]
        if self.output_name:
            if self.output_name not in names:
                raise EvaluationError(f"output {self.output_name!r} not in the model's outputs {names}")
            return self.output_name
        if like is not None and self._output_name(like) in names:
            return self._output_name(like)
        prefer_names, prefer_rank = self._prefer()
        ranked = [o.name for o in session.get_outputs() if len(o.shape) == prefer_rank]
        return next((n for n in names if n in prefer_names), ranked[0] if ranked else names[0])

    def _latency(self, sessions_, tokenizer, io: Io, texts, pairs=None) -> dict[str, float]:
        """p50/p90 in ms of one inference of one input; [reference, target] take turns over the first inputs."""
        from olive_bf16_pass.evaluation import inputs, sessions

        n = min(LATENCY_INPUTS, len(texts))
        feeds, _ = inputs.feeds(tokenizer, io, self.max_length, 1, texts[:n], None if pairs is None else pairs[:n])
        return sessions.latency_figures(sessions.interleaved_latency(sessions_, feeds, self.latency_runs, self.warmup_runs))

    def _texts(self) -> list[str]:
        from olive_bf16_pass.evaluation import inputs
        from olive_bf16_pass.evaluation.corpus import load_corpus

        corpus = self.corpus and inputs.resolve_path_spec(str(self.corpus))
        return load_corpus(corpus, self.languages, self.corpus_limit)


def _onnx_file(path) -> str:
    """The .onnx file of a path Olive gives (a file, or the folder it keeps one in)."""
    from olive_bf16_pass.evaluation import sessions

    try:
        return str(sessions.onnx_file(path))
    except EvaluationError:
        return str(path)

