"""Start-up hook, installed as the top-level module ``_olive_bf16_pass_startup`` and run by
``olive_bf16_pass.pth`` at every interpreter start.

It imports nothing but the standard library and only registers an import hook; the plugin
itself is imported when, and only if, Olive's ``olive.package_config`` module is imported.
``OLIVE_BF16_PASS_DISCOVERY=0`` turns it off. See olive_bf16_pass/olive/discovery.py.
"""

import importlib.abc
import importlib.machinery
import os
import sys

ENV_SWITCH = "OLIVE_BF16_PASS_DISCOVERY"
TARGET = "olive.package_config"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _patch(module) -> None:
    try:
        from olive_bf16_pass.olive.discovery import patch
    except ImportError:  # the package was removed but this hook was left behind
        return
    patch(module)


class OlivePackageConfigHook(importlib.abc.MetaPathFinder):
    """Lets Olive's own olive.package_config load, then extends its pass lookup."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
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
    """Register the hook (or patch at once if Olive is already imported); idempotent."""
    if not enabled():
        return
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
    elif not any(type(f).__name__ == "OlivePackageConfigHook" for f in sys.meta_path):
        sys.meta_path.insert(0, OlivePackageConfigHook())


if __name__ != "__main__":
    install()
