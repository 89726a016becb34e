"""Real architectures: tiny random-weight models exported from transformers configs and torch CNNs.

Each family is exported once per module (hidden size 32, 2 layers), converted with a small
``min_elements`` so nearly every weight converts, and run on ONNX Runtime CPU next to the FP32
export. Outputs must agree within BF16 tolerance: max |diff| <= 0.05 * max(1, max |ref|), and
for hidden states a cosine similarity of at least 0.999 per token.

Transformers 5.x models are exported through a small wrapper taking positional tensors (the
TorchScript exporter otherwise fails with "forward() got multiple values for argument
'use_cache'"); BERT is exported with the dynamo exporter too, whose graphs differ (folded
constants, other op patterns).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import torch  # noqa: E402  (test dependencies: missing ones must fail, not skip)
import transformers  # noqa: E402

from _fuzz_models import run_session

from olive_bf16_pass.convert import convert_file
from olive_bf16_pass.options import ConversionOptions

HIDDEN = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VOCAB, SEQ, BATCH = 128, 8, 2
MIN_ELEMENTS = 16


class _Positional(torch.nn.Module):
    """model(input_ids=..., attention_mask=...).last_hidden_state with positional arguments."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _Pixels(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


def _text(model_cls, config):
    return _Positional(model_cls(config)), "text"


def _build(name: str):
    t = transformers
    if name in ("bert", "bert-dynamo"):
        return _text(t.BertModel, t.BertConfig(vocab_size=VOCAB, max_position_embeddings=64, **HIDDEN))
    if name == "xlm-roberta":
        return _text(t.XLMRobertaModel, t.XLMRobertaConfig(vocab_size=VOCAB, max_position_embeddings=64, **HIDDEN))
    if name == "distilbert":
        config = t.DistilBertConfig(
            vocab_size=VOCAB, max_position_embeddings=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64
        )
        return _text(t.DistilBertModel, config)
    if name == "t5-encoder":
        config = t.T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2)
        return _text(t.T5EncoderModel, config)
    if name == "vit":
        return _Pixels(t.ViTModel(t.ViTConfig(image_size=32, patch_size=8, num_channels=3, **HIDDEN))), "image"
    if name.startswith("cnn"):
        nn = torch.nn
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, groups=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 16, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )
        for module in net:
            if isinstance(module, nn.BatchNorm2d):  # non-trivial running statistics
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
        return net, "cnn"
    raise KeyError(name)


def _inputs(kind: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if kind == "text":
        mask = np.ones((BATCH, SEQ), np.int64)
        mask[1, SEQ - 3 :] = 0  # padding: the attention mask's large negative constant is in play
        return {"input_ids": rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int64), "attention_mask": mask}
    if kind == "image":
        return {"pixel_values": rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)}
    return {"input": rng.standard_normal((BATCH, 3, 16, 16)).astype(np.float32)}


def _export(name: str, folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    model, kind = _build(name)
    model.eval()
    feeds = _inputs(kind)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if name.endswith("dynamo"):
            program = torch.onnx.export(
                model, args, input_names=list(feeds), output_names=["out"], dynamo=True, opset_version=18, verbose=False
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=list(feeds),
                output_names=["out"],
                dynamo=False,
                opset_version=17,
                do_constant_folding=name != "cnn-unfolded",
                training=torch.onnx.TrainingMode.PRESERVE if name == "cnn-unfolded" else torch.onnx.TrainingMode.EVAL,
            )
    return path, feeds


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (FP32 path, feeds, reference outputs), exported on first use, once per module."""
    folder = tmp_path_factory.mktemp("exports")
    cache: dict[str, tuple[Path, dict, list]] = {}
    torch.set_num_threads(1)

    def get(name: str):
        if name not in cache:
            path, feeds = _export(name, folder)
            cache[name] = (path, feeds, run_session(path, feeds))
        return cache[name]

    return get


FAMILIES = ["bert", "bert-dynamo", "xlm-roberta", "distilbert", "t5-encoder", "vit", "cnn", "cnn-unfolded"]


def _cosine_per_row(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(np.min((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


@pytest.mark.parametrize("name", FAMILIES)
def test_family_converts_and_matches(exported, tmp_path, name):
    src, feeds, reference = exported(name)
    external = name in ("bert", "t5-encoder", "cnn")
    dst = tmp_path / "bf16.onnx"
    report = convert_file(src, dst, ConversionOptions(min_elements=MIN_ELEMENTS), save_as_external_data=external)

    # most weights convert: at least 90% of the FP32 weight bytes
    fp32_bytes = sum(r.bytes_before for r in report.converted) + sum(
        s.bytes for s in report.skipped if "float32" not in s.reason and "dtype" not in s.reason
    )
    assert sum(r.bytes_before for r in report.converted) >= 0.9 * fp32_bytes, report.summary()
    assert all(r.max_rel_error <= 2**-8 for r in report.converted)
    assert report.weight_bytes_after < 0.6 * report.weight_bytes_before  # (files: 4 KB alignment pads tiny tensors)

    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)
    got = run_session(dst, feeds)
    for g, r in zip(got, reference):
        assert g.shape == r.shape
        assert np.isfinite(g).all()
        scale = max(1.0, float(np.abs(r).max()))
        assert float(np.abs(g - r).max()) <= 0.05 * scale, (name, float(np.abs(g - r).max()), scale)
        if not name.startswith("cnn"):
            assert _cosine_per_row(g, r) >= 0.999


@pytest.mark.parametrize("name", ["bert", "t5-encoder"])
def test_embedding_tables_stay_bfloat16_after_gather(exported, tmp_path, name):
    """Word embeddings are read only by Gather: their Cast moves after the Gather."""
    src, feeds, _ = exported(name)
    report = convert_file(src, tmp_path / "o.onnx", ConversionOptions(min_elements=MIN_ELEMENTS))
    widened = {r.name: r.widened for r in report.converted}
    assert "after_gather" in widened.values() or "cast+after_gather" in widened.values(), widened
    off = convert_file(src, tmp_path / "o2.onnx", ConversionOptions(min_elements=MIN_ELEMENTS, cast_after_gather=False))
    assert {r.widened for r in off.converted} == {"cast"}
    a, b = run_session(tmp_path / "o.onnx", feeds)[0], run_session(tmp_path / "o2.onnx", feeds)[0]
    np.testing.assert_allclose(a, b, atol=1e-5)  # the same numbers, widened in another place


@pytest.mark.parametrize("name", ["distilbert", "vit"])
def test_converted_family_is_a_fixed_point(exported, tmp_path, name):
    src, _, _ = exported(name)
    once, twice = tmp_path / "once.onnx", tmp_path / "twice.onnx"
    convert_file(src, once, ConversionOptions(min_elements=MIN_ELEMENTS))
    report = convert_file(once, twice, ConversionOptions(min_elements=MIN_ELEMENTS))
    assert report.converted == []
    assert once.read_bytes() == twice.read_bytes()
