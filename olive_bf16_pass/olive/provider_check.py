"""A Ryzen AI recipe on a machine without the Vitis AI EP stops at once, and says what to do.

Olive 0.13 stops such a run before any pass, in ``create_accelerator``, with a bare "None of the
execution providers [...] cannot be found". :func:`wrap_run_engine` re-raises that with what is
missing, how to get it, and the recipe's CPU twin (its evaluator's ``cpu_twin``). It is applied
when ``olive.workflows.run.run`` is imported (see discovery.py), so it imports the rest of the
plugin only when such a run has failed.
"""

from __future__ import annotations

_OLIVE_MISSING_EP = "cannot be found in the target system"


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
        try:
            return original(package_config, run_config)
        except ValueError as e:
            from olive_bf16_pass.agreement import EvaluationError

            if _OLIVE_MISSING_EP not in str(e) or isinstance(e, EvaluationError):
                raise
            from olive_bf16_pass.olive.sessions import missing_provider_message
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
