"""The fidelity gate: thresholds checked on every run, against the metrics Olive hands back.

Olive 0.13 caches an evaluation under the model's id and the accelerator only
(``Engine._evaluate_model``): a second run of the same workflow loads the metrics and never calls
the evaluator, so a threshold checked inside ``evaluate()`` is skipped, and a stricter one passes
unchecked. Olive's own ``goal``s do not help: a run without search never checks them, and
``"type": "custom"`` metrics do not even serialize in 0.13. So the check lives where both the
workflow's evaluator config and the final metrics are at hand, fresh or cached alike: after
Olive's ``run_engine`` returns (:func:`checked_run`, called from the run_engine wrapper in
provider_check.py). While it runs, the evaluators report a miss as a warning and return their
metrics; Olive then caches them and saves the model to the output folder, and the gate raises,
naming where the model is. A run with a changed threshold checks it against the cached metrics.

A device output flagged as a likely miscompile (``fidelity-miscompile_ratio`` above the evaluator's
``miscompile_factor``, evaluation/metrics.py) fails the run the same way, with the three figures,
cached or fresh.

The same place checks that no pass after OnnxFloatToBFloat16 undid its conversion
(attributes.undone_message), for every run that has the pass, with or without an evaluator.

An evaluator called outside such a run (directly, or by an engine this plugin did not wrap)
checks its thresholds itself and raises (:func:`check_evaluation`).
"""

from __future__ import annotations

import contextvars
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from olive_bf16_pass.evaluation.errors import EvaluationError

__all__ = [
    "CHECKED_BY_GATE", "check_evaluation", "check_output", "checked_run", "deferred", "goals", "priorities", "undone_line",
]

logger = logging.getLogger("olive.olive_bf16_pass.gate")  # under Olive's logger: `olive run` shows it

_DEFERRED = contextvars.ContextVar("olive_bf16_pass_gate_deferred", default=False)
BF16_PASS = "onnxfloattobfloat16"


CHECKED_BY_GATE = "olive_bf16_checked_by_gate"  # class attribute of the evaluators whose thresholds this checks


def deferred() -> bool:
    """True while :func:`checked_run` runs Olive's engine: it checks the thresholds when the engine returns."""
    return _DEFERRED.get()


def checked_run(original, package_config, run_config):
    """``original(package_config, run_config)`` (Olive's run_engine), then the gate on what it returns."""
    token = _DEFERRED.set(True)
    try:
        output = original(package_config, run_config)
    finally:
        _DEFERRED.reset(token)
    check_output(run_config, output)
    return output


# --------------------------------------------------------------------------- metrics and goals


def goals(metrics) -> list:
    """Olive ``Metric`` configs -> thresholds.Goal for each sub type with a goal."""
    from olive_bf16_pass.evaluation.thresholds import Goal

    out = []
    for metric in metrics or []:
        for sub in getattr(metric, "sub_types", None) or []:
            goal = getattr(sub, "goal", None)
            if goal is not None and getattr(goal, "type", None):
                out.append(Goal(f"{metric.name}-{sub.name}", str(goal.type), float(goal.value)))
    return out


def priorities(metrics) -> dict[str, int]:
    """The ranks Olive's ``metrics`` give to our metrics' joint keys (``<name>-<sub type>``)."""
    return {
        f"{metric.name}-{sub.name}": int(sub.priority)
        for metric in metrics or []
        for sub in getattr(metric, "sub_types", None) or []
        if getattr(sub, "priority", -1) not in (None, -1)
    }


def _misses(options: dict[str, Any], metrics, results: dict[str, float]) -> list[str]:
    """Thresholds, goals, ``min_ep_op_share``, and a device's likely miscompile (``miscompile_factor``)."""
    from olive_bf16_pass.evaluation import thresholds
    from olive_bf16_pass.evaluation.metrics import MISCOMPILE_FACTOR, miscompile_misses

    share = options.get("min_ep_op_share")
    asked = dict(options.get("thresholds") or {})
    if isinstance(share, (int, float)) and "placement-ep_op_share" in results:
        asked.setdefault("placement-ep_op_share", float(share))
    try:
        bounds = thresholds.bounds(asked, goals(metrics), results)
    except ValueError as e:
        raise EvaluationError(str(e)) from e
    factor = options.get("miscompile_factor")
    return thresholds.misses(bounds, results) + miscompile_misses(
        results, MISCOMPILE_FACTOR if factor is None else float(factor))


def _miss_message(who: str, failures: list[str], where: str) -> str:
    return f"{who}: the BF16 model misses its thresholds: " + "; ".join(failures) + f". {where}"


def check_evaluation(evaluator, model, metrics, results: dict[str, float]) -> None:
    """Inside ``evaluate()``: raise on a miss, or, inside :func:`checked_run`, warn and leave it to the gate."""
    # min_ep_op_share was checked by the placement probe
    options = {"thresholds": evaluator.thresholds, "miscompile_factor": evaluator.miscompile_factor}
    failures = _misses(options, metrics, results)
    if not failures:
        return
    who = type(evaluator).__name__
    if deferred():
        logger.warning("%s: the BF16 model misses its thresholds: %s (the run fails when Olive has saved the model)",
                       who, "; ".join(failures))
        return
    raise EvaluationError(_miss_message(
        who, failures,
        f"The model is kept at {evaluator._model_file(model)}; where that is in Olive's cache, copy it out before"
        " the next run (\"clean_cache\": true deletes it).",
    ))


def undone_line(model) -> str | None:
    from olive_bf16_pass.olive.attributes import undone_message

    try:
        return undone_message(model)
    except (OSError, ValueError):  # a model the reader refuses: the evaluation that loads it says why
        return None


# --------------------------------------------------------------------------- after the engine


def _evaluator_config(run_config):
    """The evaluator of the final model: the last pass's own, else the engine's (as Olive's engine picks)."""
    passes = list((getattr(run_config, "passes", None) or {}).values())
    evaluator = None
    if passes and passes[-1]:
        evaluator = getattr(passes[-1][0], "evaluator", None)
    evaluator = evaluator or getattr(getattr(run_config, "engine", None), "evaluator", None)
    if isinstance(evaluator, str):
        evaluator = (getattr(run_config, "evaluators", None) or {}).get(evaluator)
    return evaluator


def _ours(evaluator_config) -> bool:
    """One of our fidelity evaluators (they carry ``CHECKED_BY_GATE``; no import of them, so no circle)."""
    from olive.evaluator.registry import Registry

    cls = Registry.get(getattr(evaluator_config, "type", None) or "")
    return isinstance(cls, type) and getattr(cls, CHECKED_BY_GATE, False)


def _has_bf16_pass(run_config) -> bool:
    return any(
        str(getattr(c, "type", "") or "").rsplit(".", 1)[-1].lower() == BF16_PASS
        for configs in (getattr(run_config, "passes", None) or {}).values()
        for c in configs or []
    )


def _model_of(candidate) -> SimpleNamespace:
    """A stand-in handler for attributes.py: the saved model's path, file name and attributes."""
    config = candidate.model_config or {}
    return SimpleNamespace(
        model_path=candidate.model_path,
        onnx_file_name=config.get("onnx_file_name"),
        model_attributes=config.get("model_attributes") or {},
    )


def _where(candidate, run_config) -> str:
    model = _model_of(candidate)
    path = Path(str(model.model_path or ""))
    if model.onnx_file_name and path.is_dir():
        path = path / model.onnx_file_name
    output_dir = getattr(getattr(run_config, "engine", None), "output_dir", None)
    metrics = f", its metrics in {Path(output_dir) / 'metrics.json'}" if output_dir else ""
    return (
        f"The model is kept at {path}{metrics} (Olive's cache id {candidate.model_id}). It did not pass: inspect it,"
        " or relax the thresholds and run again (Olive reuses the cached model and metrics, and checks them again)."
    )


def check_output(run_config, output) -> None:
    """Raise EvaluationError when the run's model was unconverted by a later pass, or its metrics
    (fresh or cached) miss the thresholds or goals of the fidelity evaluator that measured it."""
    candidate = output.get_best_candidate() if output is not None and output.has_output_model() else None
    if candidate is None:
        return
    if _has_bf16_pass(run_config):
        undone = undone_line(_model_of(candidate))
        if undone:
            raise EvaluationError(f"{undone} {_where(candidate, run_config)}")
    evaluator = _evaluator_config(run_config)
    values = candidate.metrics_value
    if evaluator is None or not values or not _ours(evaluator):
        return
    results = {k: float(v["value"]) for k, v in values.items()}
    if not any(k.startswith(("fidelity-", "retrieval-")) for k in results):
        return  # a baseline (the FP32 model itself): thresholds are on the BF16 model
    from olive_bf16_pass.evaluation.table import side_by_side

    print(side_by_side(results, _target_provider(run_config)), flush=True)  # fresh or cached: the run's answer
    failures = _misses(evaluator.type_args or {}, evaluator.metrics, results)
    if failures:
        raise EvaluationError(_miss_message(evaluator.type, failures, _where(candidate, run_config)))
    logger.info("%s: the BF16 model meets its thresholds", evaluator.type)


def _target_provider(run_config) -> str:
    """The execution provider the run targets (its first accelerator's first), for the table's heading."""
    from olive_bf16_pass.providers import CPU

    try:
        accelerator = run_config.engine.target.config.accelerators[0]
        return (accelerator.execution_providers or [CPU])[0]
    except (AttributeError, IndexError, TypeError):
        return CPU
