"""Evaluation without Olive: agreement metrics, the corpus, the models' inputs, where a model ran,
ONNX Runtime sessions.

numpy and ONNX Runtime code only; it never imports Olive. The Olive evaluators
(``olive_bf16_pass.olive.evaluators``) adapt it. This file imports nothing, so that importing a
submodule costs only that submodule.
"""

from __future__ import annotations

__all__: list[str] = []
