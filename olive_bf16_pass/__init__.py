"""Convert an ONNX model's FP32 weights to BF16, as a library, an Olive pass and a command.

Public API (imported lazily so that the discovery hook, which runs at every interpreter start,
costs nothing until something is used)::

    from olive_bf16_pass import ConversionOptions, convert_file, convert_model

    report = convert_file("model.onnx", "model_bf16.onnx", ConversionOptions())
    print(report.summary())
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ConversionOptions": "olive_bf16_pass.options",
    "ConversionError": "olive_bf16_pass.errors",
    "convert_file": "olive_bf16_pass.convert",
    "convert_model": "olive_bf16_pass.convert",
    "emulate_file": "olive_bf16_pass.emulation",
    "EmulationOptions": "olive_bf16_pass.emulation",
    "Report": "olive_bf16_pass.report",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'olive_bf16_pass' has no attribute {name!r}")
