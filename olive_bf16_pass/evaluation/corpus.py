"""The texts the fidelity evaluators feed both models: the shipped corpus and reranker pairs from it.

``olive_bf16_pass/data/corpus.jsonl`` holds English and Chinese sentences (``{"text", "lang"}`` a
line; see data/README.md). A user's corpus may be the same JSON lines or plain text, one
sentence a line.

Prefixes (a model card's ``query: `` / ``passage: ``, or BGE's query instruction) are put on here
(:func:`prefixed`, :func:`prefixed_pairs`), from the evaluators' ``query_prefix`` / ``passage_prefix``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from olive_bf16_pass.evaluation.errors import EvaluationError

__all__ = ["CORPUS_PATH", "load_corpus", "prefixed", "prefixed_pairs", "reranker_pairs"]

CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "corpus.jsonl"


def load_corpus(
    path: str | Path | None = None, languages: list[str] | None = None, limit: int | None = None
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
    if len(set(texts)) < 2:  # one text, or one text repeated: nothing to compare it with
        raise EvaluationError(
            f"the corpus {path} has fewer than 2 distinct usable sentences (languages={languages}, limit={limit})"
        )
    return texts


def _interleave(groups: list[list[str]]) -> list[str]:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


def reranker_pairs(texts: list[str], n_queries: int, group_size: int, seed: int = 0):
    """Query/candidate groups from a corpus: the sentences that follow the query (same document,
    related text) and seeded random others. Returns (queries, candidates per query)."""
    n = len(texts)
    if group_size < 2:
        raise EvaluationError(f"group_size {group_size}: ranking needs at least 2 candidates per query")
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


def prefixed(texts: list[str], query_prefix: str | None = None, passage_prefix: str | None = None):
    """The texts an embedding evaluation feeds, and how many of them are queries (None: all alike).

    Where the two prefixes differ (e5's ``query: `` / ``passage: ``, BGE's query instruction and no
    passage prefix), every text is embedded twice, first as a query then as a passage, and retrieval
    is scored queries against passages (agreement.embedding_agreement's ``queries``); otherwise each
    text once, with the one prefix (if any), and the corpus is compared with itself.
    """
    q, p = query_prefix or "", passage_prefix or ""
    if q == p:
        return [q + t for t in texts], None
    return [q + t for t in texts] + [p + t for t in texts], len(texts)


def prefixed_pairs(queries: list[str], passages: list[str], query_prefix: str | None = None,
                   passage_prefix: str | None = None) -> tuple[list[str], list[str]]:
    """Reranker pairs with the query prefix on each query and the passage prefix on each passage."""
    q, p = query_prefix or "", passage_prefix or ""
    return [q + t for t in queries], [p + t for t in passages]
