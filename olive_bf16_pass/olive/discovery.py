"""How a plain ``olive run`` finds OnnxFloatToBFloat16 and the plugin's evaluators.

Olive 0.13 resolves a pass ``type`` only through its own package config (olive_config.json)
and ``--package-config`` replaces that file instead of extending it. The wheel therefore ships
``olive_bf16_pass.pth`` and ``_olive_bf16_pass_startup`` (olive/startup_hook.py here), a
stdlib-only import hook registered at interpreter start. When ``olive.package_config`` is
imported, the hook calls :func:`patch`, which makes every ``OlivePackageConfig`` Olive builds
carry this plugin's entries beside its own (a pydantic post-init hook): Olive lists them, and
looks them up, itself. Olive's own passes are never shadowed.
Likewise the evaluators register when Olive's evaluator module loads (Olive checks evaluator
types while it parses a recipe), and ``run_engine`` gains the early provider check.

All of this runs at every ``import olive``, so it loads only discovery.py, evaluators.py (which
imports its machinery when an evaluation runs), attributes.py and provider_check.py; the pass
module, and the converter with it, is imported by Olive from ``module_path`` only when a recipe
uses the pass (tests/olive/test_import_cost.py).

Switch it off with ``OLIVE_BF16_PASS_DISCOVERY=0``; then use the supported route,
``olive-bf16 package-config -o FILE`` and ``olive run --package-config FILE``.
"""

from __future__ import annotations

import json
import warnings

__all__ = ["EXTENSIONS", "PLUGIN_PASSES", "extend", "merged_package_config", "patch"]

PLUGIN_PASSES = {
    "OnnxFloatToBFloat16": {
        "module_path": "olive_bf16_pass.olive.passes.OnnxFloatToBFloat16",
        "supported_providers": ["*"],
        "supported_accelerators": ["*"],
        "supported_precisions": ["bf16"],
        "supported_algorithms": [],
        "supported_quantization_encodings": [],
    },
    "VitisAIContextCompile": {
        "module_path": "olive_bf16_pass.olive.compile_pass.VitisAIContextCompile",
        "supported_providers": ["VitisAIExecutionProvider"],
        "supported_accelerators": ["npu"],
        "supported_precisions": ["bf16"],
        "supported_algorithms": [],
        "supported_quantization_encodings": [],
    },
}


_warned: set[str] = set()


def extend(module) -> None:
    """Called by the start-up hook right after one of the watched Olive modules has loaded.

    An Olive outside the tested range is left exactly as it is, with one warning that says so.
    """
    from olive_bf16_pass.optional import untested_olive_message

    message = untested_olive_message()
    if message is not None:
        if message not in _warned:
            _warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return
    EXTENSIONS[module.__name__](module)


def _register_evaluators(module) -> None:
    import olive_bf16_pass.olive.evaluators  # noqa: F401  (registers with Olive's Registry on import)


def _wrap_run_engine(module) -> None:
    from olive_bf16_pass.olive.provider_check import wrap_run_engine

    wrap_run_engine(module)


def patch(module) -> None:
    """Add the plugin's passes to every ``module.OlivePackageConfig`` Olive builds, where it lacks them.

    A pydantic post-init hook, run after Olive's own validation: the entries then sit in
    ``config.passes`` beside Olive's, so everything Olive does with its package config sees them
    (``olive run``, ``olive run-pass --list-passes``, ``--list_required_packages``), and a pass type
    nobody knows fails in Olive's own ``get_pass_module_config``, with no frame of this module in
    the traceback. A built-in pass is never shadowed.
    """
    cls = module.OlivePackageConfig
    if getattr(cls, "_olive_bf16_pass", False):
        return
    original = cls.__dict__.get("model_post_init")

    def model_post_init(self, context) -> None:
        if original is not None:
            original(self, context)
        from olive.passes import PassModuleConfig

        for name, entry in PLUGIN_PASSES.items():
            if name.lower() not in self.passes:
                self.passes[name.lower()] = PassModuleConfig(**entry)

    cls.model_post_init = model_post_init
    cls.__pydantic_post_init__ = "model_post_init"
    cls.model_rebuild(force=True)
    cls._olive_bf16_pass = True


EXTENSIONS = {
    "olive.package_config": patch,
    "olive.evaluator.olive_evaluator": _register_evaluators,
    "olive.workflows.run.run": _wrap_run_engine,
}


def merged_package_config() -> dict:
    """Olive's full default package config plus this plugin's passes (for --package-config)."""
    from olive.package_config import OlivePackageConfig

    with open(OlivePackageConfig.get_default_config_path()) as f:
        config = json.load(f)
    known = {name.lower() for name in config["passes"]}
    for name, entry in PLUGIN_PASSES.items():
        if name.lower() not in known:  # never shadow a built-in pass
            config["passes"][name] = entry
    return config
