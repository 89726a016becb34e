"""Start-up hook, installed as the top-level module ``_olive_bf16_pass_startup`` and run by
``olive_bf16_pass.pth`` at every interpreter start.

It imports nothing but the standard library and only registers an import hook; the plugin
itself is imported when, and only if, one of the Olive modules in ``TARGETS`` is imported, and
then right after that module's own code has run. ``OLIVE_BF16_PASS_DISCOVERY=0`` turns it off.
See olive_bf16_pass/olive/discovery.py.
"""

import importlib.machinery
import os
import sys

__all__ = ["ENV_SWITCH", "TARGETS", "OliveExtensionHook", "enabled", "install"]

ENV_SWITCH = "OLIVE_BF16_PASS_DISCOVERY"
# kept in step with olive_bf16_pass.olive.discovery.EXTENSIONS
TARGETS = ("olive.package_config", "olive.evaluator.olive_evaluator", "olive.workflows.run.run")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


_failed = []


def _extend(module) -> None:
    """Hand ``module`` to the plugin; whatever goes wrong there, Olive itself keeps working."""
    try:
        from olive_bf16_pass.olive.discovery import extend
    except ImportError:  # the package was removed but this hook was left behind
        return
    try:
        extend(module)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must never break `import olive`
        if not _failed:
            import warnings

            warnings.warn(
                f"olive-bf16-pass could not extend {module.__name__} ({type(exc).__name__}: {exc}); Olive runs"
                f" without its pass and evaluators. Set {ENV_SWITCH}=0 to silence this, or reinstall a tested"
                " olive-ai (see olive-bf16-pass's README).",
                RuntimeWarning,
                stacklevel=2,
            )
        _failed.append(module.__name__)


class OliveExtensionHook:
    """Lets each target Olive module load as usual, then hands it to the plugin.

    A meta path finder is any object with ``find_spec``: subclassing importlib.abc's would import
    importlib.resources at every interpreter start (16 ms on Python 3.11)."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_extend(module):
            exec_module(module)
            _extend(module)

        spec.loader.exec_module = exec_and_extend
        return spec


def install() -> None:
    """Register the hook, and extend target modules already imported; idempotent."""
    if not enabled():
        return
    for name in TARGETS:
        if name in sys.modules:
            _extend(sys.modules[name])
    if not any(type(f).__name__ == "OliveExtensionHook" for f in sys.meta_path):
        sys.meta_path.insert(0, OliveExtensionHook())


if __name__ != "__main__":
    install()
