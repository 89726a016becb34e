"""How a plain ``olive run`` finds OnnxFloatToBFloat16.

Olive 0.13 resolves a pass ``type`` only through its own package config (olive_config.json)
and ``--package-config`` replaces that file instead of extending it. The wheel therefore ships
``olive_bf16_pass.pth``, which calls :func:`install` at interpreter start. ``install`` costs one
import-hook check until ``olive.package_config`` is imported, then wraps
``OlivePackageConfig.get_pass_module_config`` so that a type Olive does *not* know falls back to
this plugin's entries. Olive's own passes are always looked up first and never shadowed.

Switch it off with ``OLIVE_BF16_PASS_DISCOVERY=0``; then use the supported route,
``olive-bf16 package-config -o FILE`` and ``olive run --package-config FILE``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys

ENV_SWITCH = "OLIVE_BF16_PASS_DISCOVERY"
_TARGET = "olive.package_config"

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


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _patch(module) -> None:
    """Make OlivePackageConfig fall back to the plugin's passes for types it does not know."""
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


class _Finder(importlib.abc.MetaPathFinder):
    """Patches olive.package_config right after Olive's own code has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    """Called by olive_bf16_pass.pth at start-up; safe to call again."""
    if not enabled():
        return
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


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
