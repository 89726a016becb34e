"""A Ryzen AI recipe on a machine without the Vitis AI EP stops at once, and says what to do.

Olive 0.13 stops such a run before any pass, in ``create_accelerator``, with a bare "None of the
execution providers [...] cannot be found". :func:`wrap_run_engine` re-raises that with what is
missing, how to get it, and the recipe's CPU twin (its evaluator's ``cpu_twin``). It is applied
when ``olive.workflows.run.run`` is imported (see discovery.py), so it imports the rest of the
plugin only when such a run has failed.

It also stops, before any pass runs, a workflow that lists OnnxFloatToBFloat16 before a pass that
undoes it (:func:`check_pass_order`): ONNX Runtime's optimizer, onnxscript's constant folding and
the quantizers' pre-processing fold ``Cast(bf16 weight)`` back into FP32 weights.
"""

from __future__ import annotations

__all__ = [
    "BF16_PASS",
    "EMPTYING_PASSES",
    "UNDOING_PASSES",
    "PassOrderError",
    "check_pass_order",
    "wrap_run_engine",
]

_OLIVE_MISSING_EP = "cannot be found in the target system"
BF16_PASS = "onnxfloattobfloat16"


def _folds_when(setting: str, keeps: object, default: object):
    """A rule: the pass folds our Casts unless its ``setting`` is ``keeps``; the remedy names it."""

    def rule(config: dict) -> str | None:
        value = config.get(setting, default)
        return None if value == keeps else f"or set {setting}: {str(keeps).lower()} on {{name!r}}"

    return rule


def _always(config: dict) -> str | None:
    return ""


# pass type (lower case) -> (its name, what it does to a BF16 model, its rule): None when a config keeps BF16,
# else the extra remedy ("" for none). Measured on a BERT export with olive-ai 0.13 / onnxruntime 1.2x
# (tests/olive/test_composition.py).
UNDOING_PASSES = {
    "orttransformersoptimization": (
        "OrtTransformersOptimization",
        "ONNX Runtime's graph optimizer folds the BF16 weights' Casts back into FP32 weights",
        _folds_when("opt_level", 0, None),
    ),
    "onnxpeepholeoptimizer": (
        "OnnxPeepholeOptimizer",
        "onnxscript's constant folding folds the BF16 weights' Casts back into FP32 weights",
        _folds_when("onnxscript_optimize", False, True),
    ),
    "onnxdynamicquantization": (
        "OnnxDynamicQuantization", "its pre-processing folds the BF16 Casts back and quantizes FP32 weights", _always),
    "onnxstaticquantization": (
        "OnnxStaticQuantization", "its pre-processing folds the BF16 Casts back and quantizes FP32 weights", _always),
    "onnxquantization": (
        "OnnxQuantization", "its pre-processing folds the BF16 Casts back and quantizes FP32 weights", _always),
}


class PassOrderError(ValueError):
    """A workflow whose later pass would undo the BF16 conversion (a ValueError: Olive stops on it)."""


def _pass_type(config) -> str:
    return str(getattr(config, "type", "") or "").rsplit(".", 1)[-1].lower()


def _pass_config(config) -> dict:
    raw = getattr(config, "config", None) or {}
    return raw if isinstance(raw, dict) else dict(getattr(raw, "__dict__", {}))


# pass type (lower case) -> why OnnxFloatToBFloat16 cannot come after it
EMPTYING_PASSES = {
    "onnxfloattofloat16": (
        "OnnxFloatToFloat16", "leaves no FP32 weights to convert (BF16 conversion starts from FP32 weights)"
    ),
}


def check_pass_order(run_config) -> None:
    """Raise :class:`PassOrderError` (one line, the order that works) when OnnxFloatToBFloat16 comes
    before a pass that undoes it, or after one that leaves it nothing to convert. Every candidate
    config of a searched pass is checked."""
    bf16_name = None
    before: list[tuple[str, object]] = []
    for name, configs in (getattr(run_config, "passes", None) or {}).items():
        configs = list(configs or [])
        if bf16_name is None:
            if any(_pass_type(c) == BF16_PASS for c in configs):
                bf16_name = name
                for earlier, config in before:
                    type_name, why = EMPTYING_PASSES[_pass_type(config)]
                    raise PassOrderError(
                        f"OnnxFloatToBFloat16 ({name!r}) runs after {type_name} ({earlier!r}), which {why}:"
                        f" list {name!r} before {earlier!r} in \"passes\", or drop one of them."
                    )
            else:
                before += [(name, c) for c in configs if _pass_type(c) in EMPTYING_PASSES]
            continue
        for config in configs:
            entry = UNDOING_PASSES.get(_pass_type(config))
            if entry is None:
                continue
            type_name, what, rule = entry
            remedy = rule(_pass_config(config))
            if remedy is None:
                continue
            remedy = remedy.format(name=name)
            raise PassOrderError(
                f"OnnxFloatToBFloat16 ({bf16_name!r}) runs before {type_name} ({name!r}), and {what}, undoing the"
                f" conversion: list {bf16_name!r} after {name!r} in \"passes\" (BF16 last)"
                + (f" {remedy}." if remedy else ".")
            )


def _cpu_twins(run_config) -> list[str]:
    twins = []
    for config in (getattr(run_config, "evaluators", None) or {}).values():
        twin = (getattr(config, "type_args", None) or {}).get("cpu_twin")
        if twin and twin not in twins:
            twins.append(twin)
    return twins


def wrap_run_engine(module) -> None:
    """Olive stops a run whose target EP is not installed before any pass runs (in
    ``create_accelerator``), with a bare "None of the execution providers [...] cannot be found".
    Re-raise that with what is missing, how to get it, and the recipe's ``cpu_twin``."""
    original = module.run_engine
    if getattr(original, "_olive_bf16_pass", False):
        return

    def run_engine(package_config, run_config):
        check_pass_order(run_config)
        try:
            from olive_bf16_pass.olive.gate import checked_run  # thresholds checked on cached runs too

            return checked_run(original, package_config, run_config)
        except ValueError as e:
            from olive_bf16_pass.evaluation.errors import EvaluationError

            if _OLIVE_MISSING_EP not in str(e) or isinstance(e, EvaluationError):
                raise
            from olive_bf16_pass.evaluation.sessions import missing_provider_message
            from olive_bf16_pass.optional import import_onnxruntime

            ort = import_onnxruntime("checking the recipe's execution provider")
            available = ort.get_available_providers()
            wanted = []
            target = getattr(getattr(run_config, "engine", None), "target", None)
            for acc in getattr(getattr(target, "config", None), "accelerators", None) or []:
                wanted.extend(acc.get_ep_strs() or [])
            missing = [ep for ep in wanted if ep not in available] or wanted
            twins = _cpu_twins(run_config)
            raise EvaluationError(missing_provider_message(missing, available, " or ".join(twins) or None)) from e

    run_engine._olive_bf16_pass = True
    module.run_engine = run_engine
