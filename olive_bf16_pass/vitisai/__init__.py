"""Ryzen AI (Vitis AI EP) deployment: the readiness check, AMD's BF16 operator table, the NPU
generation, the EP-context compile and the deploy folder it writes.

Nothing here imports ONNX Runtime at module level: the check runs without it, and the compile
asks for ``VitisAIExecutionProvider`` only when it runs.
"""
