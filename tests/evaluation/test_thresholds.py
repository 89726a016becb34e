"""Thresholds and Olive-style goals turned into bounds (Olive-free)."""

import pytest

from olive_bf16_pass.evaluation.thresholds import Goal, bounds, misses

RESULTS = {"fidelity-cosine_min": 0.9995, "latency-p50": 12.0, "latency-source_p50": 10.0, "size-bytes": 50.0,
           "size-source_bytes": 100.0, "size-ratio": 0.5, "placement-npu_subgraphs": 3}


def _missed(thresholds=None, goals=()):
    return misses(bounds(thresholds, goals, RESULTS), RESULTS)


def test_thresholds_follow_each_metrics_direction():
    assert _missed({"fidelity-cosine_min": 0.999, "size-ratio": 0.6}) == []
    assert _missed({"fidelity-cosine_min": 0.9999}) == [
        "fidelity-cosine_min = 0.9995, required >= 0.9999 (thresholds)"]
    assert _missed({"size-ratio": 0.4})[0].startswith("size-ratio = 0.5, required <= 0.4")


@pytest.mark.parametrize(("goal", "missed"), [
    (Goal("latency-p50", "percent-max-degradation", 25), False),  # <= 12.5 ms, from the FP32 source's 10
    (Goal("latency-p50", "percent-max-degradation", 10), True),
    (Goal("latency-p50", "max-degradation", 1.5), True),  # <= 11.5
    (Goal("size-bytes", "percent-min-improvement", 40), False),  # <= 60
    (Goal("size-bytes", "percent-min-improvement", 60), True),  # <= 40
    (Goal("fidelity-cosine_min", "max-degradation", 0.001), False),  # >= 0.999, from 1.0
    (Goal("fidelity-cosine_min", "threshold", 0.9999), True),
])
def test_goals_resolve_against_the_fp32_source_as_olives_engine_does(goal, missed):
    assert bool(_missed(goals=[goal])) is missed


def test_unknown_metrics_and_unresolvable_goals_are_refused():
    with pytest.raises(ValueError, match="unknown metric 'cosine'"):
        _missed({"cosine": 0.9})
    with pytest.raises(ValueError, match="nothing to be measured from"):
        _missed(goals=[Goal("placement-npu_subgraphs", "max-degradation", 1)])
    with pytest.raises(ValueError, match="unknown goal type 'at-least'"):
        _missed(goals=[Goal("size-bytes", "at-least", 1)])
