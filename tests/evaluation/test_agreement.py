"""The agreement maths, and its refusal of outputs that would read as a perfect 1.0 for any model."""

from __future__ import annotations

import numpy as np
import pytest

from olive_bf16_pass.evaluation import agreement as ag
from olive_bf16_pass.evaluation.errors import EvaluationError


def test_spearman_matches_definition():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(50)
    assert ag.spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert ag.spearman(a, -a) == pytest.approx(-1.0)
    b = np.round(a + rng.standard_normal(50) * 0.5, 1)  # with ties
    import scipy.stats as scipy_stats  # a test dependency: its absence must fail, not skip

    assert ag.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic)


def test_spearman_of_a_constant_is_undefined_not_perfect():
    assert np.isnan(ag.spearman(np.ones(5), np.ones(5)))
    assert np.isnan(ag.spearman(np.arange(5.0), np.ones(5)))


def test_pooling():
    h = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert ag.pool(h, mask, "cls").tolist() == [[0, 1], [6, 7]]
    assert ag.pool(h, mask, "mean").tolist() == [[1, 2], [6, 7]]
    assert ag.pool(h[:, 0], mask, "none").tolist() == [[0, 1], [6, 7]]
    with pytest.raises(EvaluationError, match="unknown pooling 'max'"):
        ag.pool(h, mask, "max")
    with pytest.raises(EvaluationError, match="pooling 'cls' does not take"):
        ag.pool(h[:, 0], mask, "cls")  # no longer read as "already pooled" behind the option's back


# ----------------------------------------------------------------------------- embedding outputs


def test_a_reranker_logit_is_no_embedding():
    logits = np.ones((4, 1), np.float32)
    with pytest.raises(EvaluationError) as info:
        ag.check_embedding_output("logits", logits, "none", 4)
    message = str(info.value)
    assert "'logits' (shape [4, 1], dtype float32)" in message and "hidden size of 1" in message
    assert "RerankerFidelityEvaluator" in message and "output_name" in message
    with pytest.raises(EvaluationError, match=r"looks pooled already: set 'pooling' to 'none'"):
        ag.check_embedding_output("logits", logits, "cls", 4)


@pytest.mark.parametrize(
    ("shape", "dtype", "pooling", "needs"),
    [
        ((4,), np.float32, "cls", r"takes token states \[batch, sequence, hidden\]"),
        ((4, 1, 5, 8), np.float32, "mean", r"takes token states \[batch, sequence, hidden\]"),
        ((4, 5, 8), np.int64, "mean", "not floating point"),
        ((4, 5, 8), np.float32, "none", r"already pooled, \[batch, hidden\]"),
        ((3, 5, 8), np.float32, "cls", "batch of 4 texts"),
    ],
)
def test_embedding_output_of_the_wrong_form_names_itself_and_the_fix(shape, dtype, pooling, needs):
    with pytest.raises(EvaluationError, match=needs) as info:
        ag.check_embedding_output("out", np.zeros(shape, dtype), pooling, 4, "the BF16 model's")
    assert f"the BF16 model's output 'out' (shape {list(shape)}, dtype {np.dtype(dtype)})" in str(info.value)
    assert "output_name" in str(info.value)


def test_embedding_outputs_of_the_right_form_pass():
    ag.check_embedding_output("last_hidden_state", np.zeros((4, 5, 8), np.float32), "cls", 4)
    ag.check_embedding_output("sentence_embedding", np.zeros((4, 8), np.float16), "none", 4)


def test_embedding_agreement_of_identical_and_shuffled():
    x = np.random.default_rng(1).standard_normal((30, 8))
    same = ag.embedding_agreement(x, x.copy(), top_k=10)
    assert same["cosine_min"] == pytest.approx(1.0) and same["topk_overlap"] == 1.0
    other = ag.embedding_agreement(x, np.random.default_rng(2).standard_normal((30, 8)))
    assert other["topk_overlap"] < 0.7
    with pytest.raises(EvaluationError, match="non-finite"):
        ag.embedding_agreement(x, np.where(x > 2, np.nan, x))


def test_too_few_texts_for_top_k_is_refused():
    """With k >= texts - 1 every neighbour set is all the others: overlap 1.0 for unrelated vectors."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((11, 8)), rng.standard_normal((11, 8))
    with pytest.raises(EvaluationError, match="need at least 12 texts .*; the corpus gave 11.*corpus_limit.*top_k"):
        ag.embedding_agreement(a, b, top_k=10)
    assert ag.embedding_agreement(a, b, top_k=9)["topk_overlap"] < 1.0  # 11 texts carry top-9


def test_identical_vectors_for_every_text_are_refused():
    """A constant FP32 embedding (cls pooling on a model that never mixes tokens) makes all neighbours ties."""
    same = np.tile(np.random.default_rng(4).standard_normal(8), (20, 1))
    test = same + np.random.default_rng(5).standard_normal(same.shape) * 1e-3
    with pytest.raises(EvaluationError, match="same vector for all 20 texts.*'mean'"):
        ag.embedding_agreement(same, test)


# ----------------------------------------------------------------------------- reranker outputs


@pytest.mark.parametrize(
    ("shape", "dtype", "needs"),
    [
        ((4, 7, 16), np.float32, r"not a relevance score: a reranker gives \[batch\], \[batch, 1\]"),
        ((4, 1, 1, 1), np.float32, "not a relevance score"),
        ((4, 1), np.int64, "not floating point"),
        ((4, 3), np.float32, "has 3 classes.*score_index"),
    ],
)
def test_scores_of_the_wrong_form_name_the_output_and_the_fix(shape, dtype, needs):
    with pytest.raises(EvaluationError, match=needs) as info:
        ag.check_scores_output("last_hidden_state", np.zeros(shape, dtype), 4)
    assert f"'last_hidden_state' (shape {list(shape)}, dtype {np.dtype(dtype)})" in str(info.value)


def test_score_shapes_a_reranker_has():
    for shape in [(4,), (4, 1), (4, 2)]:
        ag.check_scores_output("logits", np.zeros(shape, np.float32), 4)
    ag.check_scores_output("logits", np.zeros((4, 3), np.float32), 4, score_index=2)
    with pytest.raises(EvaluationError, match="score_index 2 is out of range"):
        ag.check_scores_output("logits", np.zeros((4, 2), np.float32), 4, score_index=2)


def test_two_class_scores_are_the_positive_class_log_odds_not_the_last_logit():
    # the raw class-1 logit ranks c > b > a; the probability of class 1 ranks a > b > c
    logits = np.array([[-3.0, 1.0], [0.0, 2.0], [3.0, 3.0]])
    scores = ag.relevance_scores(logits)
    p1 = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(scores, np.log(p1 / (1 - p1)))  # logit of softmax's p(class 1): l1 - l0
    np.testing.assert_allclose(scores, [4.0, 2.0, 0.0])
    assert list(np.argsort(-scores)) == [0, 1, 2] and list(np.argsort(-logits[:, 1])) == [2, 1, 0]


def test_single_logit_and_named_class_scores():
    np.testing.assert_allclose(ag.relevance_scores(np.array([[0.5], [-1.0]])), [0.5, -1.0])
    np.testing.assert_allclose(ag.relevance_scores(np.array([0.5, -1.0])), [0.5, -1.0])
    three = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    log_odds_0 = three[:, 0] - np.log(np.exp(three[:, 1:]).sum(axis=1))
    np.testing.assert_allclose(ag.relevance_scores(three, score_index=0), log_odds_0)
    np.testing.assert_allclose(ag.relevance_scores(three[:, :2], score_index=0), -ag.relevance_scores(three[:, :2]))


def test_reranker_agreement_refuses_a_constant_reference_and_scores_a_constant_bf16_as_zero():
    ref = np.random.default_rng(6).standard_normal((4, 5))
    with pytest.raises(EvaluationError, match="same score.*output_name.*score_index"):
        ag.reranker_agreement(np.zeros((4, 5)), ref)
    collapsed = ag.reranker_agreement(ref, np.full((4, 5), 0.25))
    assert collapsed["spearman"] == 0.0
    with pytest.raises(EvaluationError, match="at least 2 candidates"):
        ag.reranker_agreement(ref[:, :1], ref[:, :1])
    assert ag.reranker_agreement(ref, ref * 2)["spearman"] == pytest.approx(1.0)
