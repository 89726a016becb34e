"""Packages the light install leaves out, and the one line that says how to get each.

``pip install olive-bf16-pass`` brings only onnx, numpy and ml_dtypes: enough to convert. ONNX
Runtime comes as whichever build the user's hardware needs (stock, Ryzen AI's vendor build,
DirectML, CUDA), and Olive with the ``[olive]`` extra; a feature that needs one asks for it here.
"""

from __future__ import annotations

import importlib
import importlib.metadata

__all__ = [
    "OLIVE_HELP",
    "OLIVE_TESTED",
    "ONNXRUNTIME_HELP",
    "MissingDependency",
    "import_onnxruntime",
    "olive_range",
    "onnxruntime_distribution",
    "untested_olive_message",
]

ONNXRUNTIME_HELP = (
    "ONNX Runtime is not installed. Install the build for your hardware: "
    'pip install "olive-bf16-pass[cpu]" for the stock CPU build; on a Ryzen AI PC, activate the Ryzen AI '
    "Software conda environment instead (its onnxruntime-vitisai provides the NPU); onnxruntime-directml or "
    "onnxruntime-gpu for DirectML or CUDA. Never install two of them into one environment."
)
OLIVE_HELP = 'Olive is not installed: pip install "olive-bf16-pass[olive]" (olive-ai {range}).'
OLIVE_TESTED = ((0, 13), (0, 14))  # [lowest, first untested) minor versions of olive-ai


class MissingDependency(ImportError):
    """A feature's package is missing; the message says which package to install."""


def import_onnxruntime(feature: str):
    """``onnxruntime``, whichever distribution provides it, or one line naming what to install."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise MissingDependency(f"{feature} needs ONNX Runtime. {ONNXRUNTIME_HELP}") from exc


def onnxruntime_distribution() -> str | None:
    """Which installed distribution provides the ``onnxruntime`` module (e.g. onnxruntime-vitisai)."""
    for name in importlib.metadata.packages_distributions().get("onnxruntime", []):
        return name
    return None


def olive_range() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = OLIVE_TESTED
    return f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"


def untested_olive_message() -> str | None:
    """None when the installed olive-ai is in the tested range, else what to do about it."""
    try:
        version = importlib.metadata.version("olive-ai")
    except importlib.metadata.PackageNotFoundError:
        return None  # an olive module is importable without metadata (a source checkout): trust it
    try:
        minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None
    if OLIVE_TESTED[0] <= minor < OLIVE_TESTED[1]:
        return None
    return (
        f"olive-bf16-pass is tested with olive-ai {olive_range()}, and this environment has {version}; its "
        "pass and evaluators were not registered with Olive. Install a tested Olive "
        f'(pip install "olive-ai{olive_range()}"), or turn the hook off with OLIVE_BF16_PASS_DISCOVERY=0.'
    )
