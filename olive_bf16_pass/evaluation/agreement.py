"""How far a BF16 model's outputs agree with its FP32 source's, and whether an output can say.

Pure numpy, no Olive and no ONNX Runtime: the fidelity evaluators (``olive_bf16_pass.olive``)
run the models and hand the arrays here. Every metric is 1.0 for identical inputs, so an output
that cannot carry the metric must be refused, not measured: a reranker's ``logits [batch, 1]``
"embedded" normalizes to +-1 and gives cosine 1.0 for any model, token states ranked as scores
give Spearman 1.0, a corpus of two texts has top-1 agreement 1.0 by construction. The ``check_*``
functions and the agreement functions raise :class:`EvaluationError` for those, naming the output
and the option that fixes it.

Shapes the metrics accept:

- embeddings: ``[batch, sequence, hidden]`` token states with pooling ``cls`` or ``mean``, or
  ``[batch, hidden]`` vectors that the model already pooled with pooling ``none``; hidden > 1; float.
- reranker scores: ``[batch]`` or ``[batch, 1]`` (one relevance logit), ``[batch, 2]`` (a two-class
  head: the positive class, index 1), or ``[batch, classes]`` with ``score_index`` naming the class; float.
"""

from __future__ import annotations

import numpy as np

from olive_bf16_pass.evaluation.errors import EvaluationError

__all__ = [
    "POOLINGS",
    "check_embedding_output",
    "check_scores_output",
    "describe",
    "embedding_agreement",
    "pool",
    "relevance_scores",
    "reranker_agreement",
    "spearman",
]

POOLINGS = ("cls", "mean", "none")


def describe(name: str, array: np.ndarray) -> str:
    """How a message names an output: its name, shape and dtype."""
    return f"{name!r} (shape {list(np.shape(array))}, dtype {np.asarray(array).dtype})"


# --------------------------------------------------------------------------- can the output carry the metric


def check_embedding_output(name: str, array: np.ndarray, pooling: str, rows: int, whose: str = "the model's") -> None:
    """Refuse an output that cannot be a sentence embedding under ``pooling`` (see the module docstring)."""
    if pooling not in POOLINGS:
        raise EvaluationError(f"unknown pooling {pooling!r}: use 'cls', 'mean' or 'none'")
    array = np.asarray(array)
    what = f"{whose} output {describe(name, array)}"
    fix = "Set the evaluator's 'output_name' to the model's token-state or embedding output"
    if not np.issubdtype(array.dtype, np.floating):
        raise EvaluationError(f"{what} is not floating point; cosine similarity needs float vectors. {fix}.")
    if pooling == "none" and array.ndim != 2:
        raise EvaluationError(
            f"{what}: pooling 'none' takes vectors the model already pooled, [batch, hidden]. {fix}, or set"
            " 'pooling' to 'cls' or 'mean' for token states [batch, sequence, hidden]."
        )
    if pooling != "none" and array.ndim != 3:
        hint = "This output looks pooled already: set 'pooling' to 'none', or s" if array.ndim == 2 else "S"
        raise EvaluationError(
            f"{what}: pooling {pooling!r} takes token states [batch, sequence, hidden]. {hint}{fix[1:]}."
        )
    if array.shape[0] != rows:
        raise EvaluationError(f"{what}: its first dimension should be the batch of {rows} texts. {fix}.")
    if array.shape[-1] < 2:
        raise EvaluationError(
            f"{what} has a hidden size of {array.shape[-1]}: a one-number vector normalizes to +-1, so every"
            f" cosine would be 1.0 whatever the model does. Is it a reranker's score? Use"
            f" RerankerFidelityEvaluator, or {fix[0].lower() + fix[1:]}."
        )


def check_scores_output(
    name: str, array: np.ndarray, rows: int, score_index: int | None = None, whose: str = "the model's"
) -> None:
    """Refuse an output that cannot be one relevance score per query/passage pair."""
    array = np.asarray(array)
    what = f"{whose} output {describe(name, array)}"
    fix = "Set the evaluator's 'output_name' to the model's score output (usually 'logits')"
    if not np.issubdtype(array.dtype, np.floating):
        raise EvaluationError(f"{what} is not floating point; a relevance score is a float. {fix}.")
    if array.ndim not in (1, 2) or array.shape[0] != rows:
        raise EvaluationError(
            f"{what} is not a relevance score: a reranker gives [batch], [batch, 1] or [batch, classes]"
            f" for a batch of {rows} pairs. {fix}."
        )
    classes = 1 if array.ndim == 1 else array.shape[1]
    if score_index is None:
        if classes > 2:
            raise EvaluationError(
                f"{what} has {classes} classes; which one means 'relevant' is not for the evaluator to guess."
                " Set the evaluator's 'score_index' to that class."
            )
    elif not 0 <= int(score_index) < classes:
        raise EvaluationError(f"score_index {score_index} is out of range for {what} ({classes} classes)")


# --------------------------------------------------------------------------- reductions


def pool(hidden: np.ndarray, attention_mask: np.ndarray | None, pooling: str) -> np.ndarray:
    """Sentence vectors from token vectors: 'cls' (first token), 'mean' (masked), or 'none' (as is)."""
    hidden = np.asarray(hidden, dtype=np.float64)
    if pooling not in POOLINGS:
        raise EvaluationError(f"unknown pooling {pooling!r}: use 'cls', 'mean' or 'none'")
    if hidden.ndim != (2 if pooling == "none" else 3):
        raise EvaluationError(f"pooling {pooling!r} does not take an array of shape {list(hidden.shape)}")
    if pooling == "none":
        return hidden
    if pooling == "cls":
        return hidden[:, 0, :]
    if attention_mask is None:
        return hidden.mean(axis=1)
    m = attention_mask.astype(np.float64)[..., None]
    return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def relevance_scores(logits: np.ndarray, score_index: int | None = None) -> np.ndarray:
    """One score per pair. A single logit as it is; of several classes, the log-odds of the relevant
    one (``score_index``, by default 1 of 2), ``l_k - logsumexp(l_j, j != k)``: for two classes
    ``l1 - l0``, the logit of softmax's ``p(class 1)``. It ranks as that probability does (not as the
    raw ``l1``, which moves with ``l0``) and is on the scale of a single-logit head's score."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1:
        return logits
    if logits.shape[1] == 1:
        return logits[:, 0]
    k = 1 if score_index is None else int(score_index)
    others = np.delete(logits, k, axis=1)
    top = others.max(axis=1)
    return logits[:, k] - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


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
    """Spearman's rank correlation; NaN where either side is constant (undefined, as in scipy)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom else float("nan")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


# --------------------------------------------------------------------------- agreement


def embedding_agreement(
    ref: np.ndarray, test: np.ndarray, top_k: int = 10, queries: int | None = None
) -> dict[str, float]:
    """Cosine per row, and agreement of top-k neighbour sets (self excluded) between two embeddings.

    With ``queries`` (q): the first q rows embed texts as queries, the next q the same texts as
    passages (each with its own prefix, corpus.prefixed); a query's neighbours are passages, its own
    text's passage excluded (it would be first by construction). The cosine is over all rows.
    """
    ref, test = np.asarray(ref, dtype=np.float64), np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape or ref.ndim != 2:
        raise EvaluationError(f"FP32 and BF16 embeddings should be [texts, hidden] alike: {ref.shape} vs {test.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(test).all()):
        bad = int((~np.isfinite(test)).any(axis=1).sum())
        raise EvaluationError(f"non-finite values in the embeddings ({bad} BF16 rows with NaN/Inf)")
    if queries is not None and len(ref) != 2 * int(queries):
        raise EvaluationError(f"{len(ref)} rows are not {queries} queries and as many passages")
    n, k = (len(ref) if queries is None else int(queries)), int(top_k)
    if k < 1 or n < k + 2:  # with k >= n - 1 every neighbour set is everything: overlap 1.0 by construction
        raise EvaluationError(
            f"top-{k} neighbours need at least {k + 2} texts to mean anything; the corpus gave {n}."
            " Raise the evaluator's 'corpus_limit' or lower its 'top_k'."
        )
    r, t = _normalize(ref), _normalize(test)
    if np.abs(r - r[0]).max() <= 1e-6:
        raise EvaluationError(
            f"the FP32 model gives the same vector for all {n} texts, so their neighbours are all ties and"
            " would agree by construction. With pooling 'cls' on a model whose first token is always the"
            " same and never sees the rest, try 'mean'; else check the evaluator's 'output_name'."
        )
    cos = (r * t).sum(axis=1)
    if queries is None:
        sr, st = r @ r.T, t @ t.T
    else:  # queries against passages; the diagonal is a query's own text
        sr, st = r[:n] @ r[n:].T, t[:n] @ t[n:].T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(st, -np.inf)
    top_r = np.argsort(-sr, axis=1, kind="stable")[:, :k]
    top_t = np.argsort(-st, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_r, top_t)])
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "topk_overlap": float(overlap),
        "top1_agreement": float(np.mean(top_r[:, 0] == top_t[:, 0])),
        "k": k,
    }


def reranker_agreement(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """ref/test: scores shaped (queries, candidates)."""
    ref, test = np.asarray(ref, dtype=np.float64), np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape or ref.ndim != 2:
        raise EvaluationError(
            f"FP32 and BF16 scores should be [queries, candidates] alike: {ref.shape} vs {test.shape}"
        )
    if ref.shape[1] < 2:
        raise EvaluationError(f"ranking needs at least 2 candidates per query, got {ref.shape[1]}: raise 'group_size'")
    if not (np.isfinite(ref).all() and np.isfinite(test).all()):
        raise EvaluationError("non-finite reranker scores (NaN/Inf) from the BF16 or the FP32 model")
    if np.ptp(ref) == 0:
        raise EvaluationError(
            f"the FP32 model gives every pair the same score ({ref.flat[0]:.6g}): there is no ranking to agree"
            " with. Check the evaluator's 'output_name' and 'score_index'."
        )
    rho = spearman(ref, test)
    return {
        "spearman": 0.0 if np.isnan(rho) else rho,  # a BF16 model scoring all pairs alike agrees with no ranking
        "top1_agreement": float(np.mean(ref.argmax(axis=1) == test.argmax(axis=1))),
        "max_abs_diff": float(np.abs(ref - test).max()),
    }
