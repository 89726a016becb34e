"""The shipped corpus and the reranker pairs drawn from it."""

from __future__ import annotations

import json

import pytest

from olive_bf16_pass.evaluation import corpus
from olive_bf16_pass.evaluation.errors import EvaluationError


def test_corpus_has_english_and_chinese_real_text():
    rows = [json.loads(line) for line in corpus.CORPUS_PATH.read_text(encoding="utf-8").splitlines()]
    langs = {r["lang"] for r in rows}
    assert langs == {"en", "zh"}
    assert 250 <= len(rows) <= 600
    assert sum(r["lang"] == "zh" for r in rows) >= 100
    assert len({r["text"] for r in rows}) == len(rows)
    assert (corpus.CORPUS_PATH.parent / "README.md").is_file()


def test_corpus_limit_keeps_both_languages():
    texts = corpus.load_corpus(limit=10)
    assert len(texts) == 10
    assert any(any("\u4e00" <= c <= "\u9fff" for c in t) for t in texts)
    assert any(t.isascii() for t in texts)


def test_plain_text_corpus(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("one sentence\n\nanother sentence\n", encoding="utf-8")
    assert corpus.load_corpus(path) == ["one sentence", "another sentence"]


@pytest.mark.parametrize("lines", [["only one"], ["the same", "the same", "the same"]])
def test_a_corpus_with_nothing_to_compare_is_refused(tmp_path, lines):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(EvaluationError, match="fewer than 2 distinct"):
        corpus.load_corpus(path)
    with pytest.raises(EvaluationError, match="fewer than 2 distinct"):
        corpus.load_corpus(limit=1)


def test_reranker_pairs_are_deterministic():
    texts = corpus.load_corpus(limit=40)
    q1, g1 = corpus.reranker_pairs(texts, 5, 6)
    q2, g2 = corpus.reranker_pairs(texts, 5, 6)
    assert (q1, g1) == (q2, g2)
    assert len(q1) == 5 and all(len(g) == 6 and q not in g for q, g in zip(q1, g1))
    with pytest.raises(EvaluationError, match="at least 2 candidates"):
        corpus.reranker_pairs(texts, 5, 1)
