"""Fixtures for the Olive-side tests. The tiny text models they run are built in helpers.py and
served by tests/conftest.py (encoder_pair, reranker_pair, tokenizer_dir); here only what needs Olive."""

from __future__ import annotations

from pathlib import Path

import pytest


def _onnx_handler(path: Path, source: Path | None, tokenizer: Path | None = None, inference_settings=None):
    """An ONNXModelHandler as OnnxFloatToBFloat16 returns it (source path in model_attributes)."""
    from olive.model import ONNXModelHandler

    attrs = {}
    if source is not None:
        attrs["bf16_source_model_path"] = str(source)
    if tokenizer is not None:
        attrs["_name_or_path"] = str(tokenizer)
    return ONNXModelHandler(model_path=str(path), model_attributes=attrs, inference_settings=inference_settings)


@pytest.fixture
def onnx_handler():
    return _onnx_handler


@pytest.fixture
def olive_log_records():
    """The records Olive's logger emits during the test (the list fills as they come)."""
    import logging

    records: list = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("olive").addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger("olive").removeHandler(handler)
