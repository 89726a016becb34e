"""ONNX Runtime execution provider names, spelled once for the whole package.

A misspelt provider name is not an error in ONNX Runtime's eyes (it is simply not available), so
every comparison and message takes its spelling from here. Imports nothing.
"""

from __future__ import annotations

__all__ = ["CPU", "CUDA", "DML", "VITISAI"]

CPU = "CPUExecutionProvider"
VITISAI = "VitisAIExecutionProvider"  # AMD Ryzen AI NPU
CUDA = "CUDAExecutionProvider"
DML = "DmlExecutionProvider"  # DirectML, Windows
