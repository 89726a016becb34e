"""What a fidelity evaluation must reach: ``thresholds`` and Olive-style goals, turned into bounds.

Two ways to ask, both checked against the same metric results (fresh or from Olive's cache):

- the evaluator's ``thresholds``: ``{"fidelity-cosine_min": 0.999, "size-ratio": 0.6}``, a bound in the
  metric's own direction (``>=`` for higher-is-better metrics, ``<=`` for the others);
- Olive's ``metrics`` with ``goal``s, whose joint key (``<metric name>-<sub type>``) names one of
  the evaluator's metrics: ``{"name": "latency", "type": "latency", "sub_types": [{"name": "p50",
  "goal": {"type": "percent-max-degradation", "value": 20}}]}``. A ``threshold`` goal is a bound as
  above; the relative goals (``max-degradation``, ``min-improvement``, ``percent-max-degradation``,
  ``percent-min-improvement``) are resolved as Olive's engine resolves them, against the FP32
  source's own figure (:data:`BASELINES`): ``latency-p50`` against ``latency-source_p50``,
  ``size-bytes`` against ``size-source_bytes``, agreement metrics against their value for identical
  models. The direction is always the metric's own; a goal's ``higher_is_better`` is not needed.
The figures' variants (evaluation/metrics.py: ``fidelity-emulated-cosine_min``) go as their plain
metric does, and ``fidelity-miscompile_ratio`` is lower-is-better.

Standard library only; neither Olive nor numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from olive_bf16_pass.evaluation.metrics import MISCOMPILE_RATIO, split

__all__ = ["BASELINES", "LOWER_IS_BETTER", "Bound", "Goal", "bounds", "higher_is_better", "misses"]

# every other metric is higher-is-better
LOWER_IS_BETTER = frozenset({
    "fidelity-max_abs_diff", "latency-p50", "latency-p90", "latency-source_p50", "latency-source_p90",
    "size-bytes", "size-source_bytes", "size-ratio",
    "placement-npu_subgraphs",  # fewer pieces: fewer NPU/CPU hand-overs
    MISCOMPILE_RATIO,
})

# what a relative goal is measured from: the FP32 source's figure (a metric name) or a constant
BASELINES: dict[str, str | float] = {
    "latency-p50": "latency-source_p50",
    "latency-p90": "latency-source_p90",
    "size-bytes": "size-source_bytes",
    "size-ratio": 1.0,
    "fidelity-cosine_mean": 1.0,
    "fidelity-cosine_min": 1.0,
    "fidelity-spearman": 1.0,
    "fidelity-top1_agreement": 1.0,
    "fidelity-max_abs_diff": 0.0,
    "retrieval-top10_overlap": 1.0,
    "retrieval-top1_agreement": 1.0,
}

_RELATIVE = ("max-degradation", "min-improvement", "percent-max-degradation", "percent-min-improvement")


class Goal(NamedTuple):
    """One Olive goal: the joint metric key, Olive's goal type and value."""

    metric: str
    type: str
    value: float


class Bound(NamedTuple):
    metric: str
    higher_is_better: bool
    value: float
    asked: str  # how it was asked, for the message: "thresholds" or the goal

    def holds(self, measured: float) -> bool:
        return measured >= self.value if self.higher_is_better else measured <= self.value

    def describe(self, measured: float) -> str:
        op = ">=" if self.higher_is_better else "<="
        return f"{self.metric} = {measured:.6g}, required {op} {self.value:.10g} ({self.asked})"


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER and split(metric)[0] not in LOWER_IS_BETTER


def _baseline(goal: Goal, results: Mapping[str, float]) -> float:
    base = BASELINES.get(goal.metric)
    plain, variant = split(goal.metric)
    if base is None and variant and isinstance(BASELINES.get(plain), float):  # a figure's value for identical models
        base = BASELINES[plain]
    if base is None:
        raise ValueError(
            f"goal {goal.type!r} on {goal.metric!r} has nothing to be measured from; relative goals work on"
            f" {sorted(BASELINES)}; use a 'threshold' goal or the evaluator's 'thresholds'"
        )
    if isinstance(base, str):
        if base not in results:
            raise ValueError(f"goal {goal.type!r} on {goal.metric!r} needs {base!r}, which this evaluation lacks")
        return float(results[base])
    return float(base)


def _resolve(goal: Goal, results: Mapping[str, float]) -> float:
    if goal.type == "threshold":
        return float(goal.value)
    if goal.type not in _RELATIVE:
        raise ValueError(f"unknown goal type {goal.type!r} on {goal.metric!r}; Olive's are threshold, {', '.join(_RELATIVE)}")
    base, m, v = _baseline(goal, results), (1 if higher_is_better(goal.metric) else -1), float(goal.value)
    return {  # as olive.engine.Engine.resolve_goals does
        "max-degradation": base - m * v,
        "min-improvement": base + m * v,
        "percent-max-degradation": base * (1 - m * v / 100),
        "percent-min-improvement": base * (1 + m * v / 100),
    }[goal.type]


def bounds(
    thresholds: Mapping[str, float] | None, goals: Iterable[Goal], results: Mapping[str, float]
) -> list[Bound]:
    """The bounds asked for, resolved against ``results``. Raises ValueError for a metric the results
    do not have (a typo would otherwise pass forever) or a goal that cannot be resolved."""
    out = []
    asked = [(name, bound, "thresholds") for name, bound in (thresholds or {}).items()]
    asked += [(g.metric, g, f"goal {g.type} {g.value:g}") for g in goals]
    for name, spec, how in asked:
        if name not in results:
            raise ValueError(f"threshold on unknown metric {name!r}; metrics are {sorted(results)}")
        value = _resolve(spec, results) if isinstance(spec, Goal) else float(spec)
        out.append(Bound(name, higher_is_better(name), value, how))
    return out


def misses(bounds_: Iterable[Bound], results: Mapping[str, float]) -> list[str]:
    """One line per bound the results miss."""
    return [b.describe(float(results[b.metric])) for b in bounds_ if not b.holds(float(results[b.metric]))]
