"""The evaluators' inputs: what a recipe names, tokenizers, and the feeds for a session's inputs."""

from __future__ import annotations

import pytest

from olive_bf16_pass.evaluation import inputs
from olive_bf16_pass.evaluation.errors import EvaluationError


def test_resolve_path_spec(tmp_path):
    assert inputs.resolve_path_spec(str(tmp_path)) == str(tmp_path)
    assert inputs.resolve_path_spec("os.path:sep") == __import__("os").path.sep
    with pytest.raises(EvaluationError, match="cannot resolve"):
        inputs.resolve_path_spec("no_such_module_here:f")


def test_feeds_pad_a_short_last_batch_to_a_static_batch(static_encoder_pair, tokenizer_dir):
    import onnxruntime as ort

    fp32, _ = static_encoder_pair  # batch 1, sequence 32
    io = inputs.Io(ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]))
    tokenizer = inputs.load_tokenizer(str(tokenizer_dir))
    feeds, sizes = inputs.feeds(tokenizer, io, None, 8, ["a", "b c", "d"])
    assert sizes == [1, 1, 1] and all(f["input_ids"].shape == (1, 32) for f in feeds)
    assert set(feeds[0]) == {"input_ids", "attention_mask", "token_type_ids"}
