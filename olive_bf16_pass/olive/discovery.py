"""How a plain ``olive run`` finds OnnxFloatToBFloat16 and the plugin's evaluators.

Olive 0.13 resolves a pass ``type`` only through its own package config (olive_config.json)
and ``--package-config`` replaces that file instead of extending it. The wheel therefore ships
``olive_bf16_pass.pth`` and ``_olive_bf16_pass_startup`` (olive/startup_hook.py here), a
stdlib-only import hook registered at interpreter start. When ``olive.package_config`` is
imported, the hook calls :func:`patch`, which wraps
``OlivePackageConfig.get_pass_module_config`` so that a type Olive does *not* know falls back
to this plugin's entries. Olive's own passes are always looked up first and never shadowed.
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

PLUGIN_PASSES = {
    "OnnxFloatToBFloat16": {
        "module_path": "olive_bf16_pass.olive.passes.OnnxFloatToBFloat16",
        "supported_providers": ["*"],
        "supported_accelerators": ["*"],
        "supported_precisions": ["bf16"],
        "supported_algorithms": [],
        "supported_quantization_encodings": [],
    }
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
    """Make ``module.OlivePackageConfig`` fall back to the plugin's passes for types it does not know."""
    cls = module.OlivePackageConfig
    if getattr(cls.get_pass_module_config, "_olive_bf16_pass", False):
        return
    original = cls.get_pass_module_config
    from olive.passes import PassModuleConfig

    entries = {name.lower(): entry for name, entry in PLUGIN_PASSES.items()}

    def get_pass_module_config(self, pass_type: str):
        try:
            return original(self, pass_type)
        except ValueError:
            entry = entries.get(pass_type.rsplit(".", 1)[-1].lower())
            if entry is None:
                raise
            return PassModuleConfig(**entry)

    get_pass_module_config._olive_bf16_pass = True
    cls.get_pass_module_config = get_pass_module_config


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
