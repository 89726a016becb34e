"""OnnxFloatToBFloat16 chained with the Olive passes a user puts beside it, both orders, on a BERT export.

Each cell of the matrix either works (and the final model keeps the BF16 weights it should) or
stops with one line that says why and gives the order that works. Passes that fold the BF16
Casts back into FP32 weights are caught up front, before any pass runs, by the run_engine wrapper
(provider_check.check_pass_order); chained by hand (no workflow), the fold is reported by
attributes.undone_message, which the evaluators use.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from olive.model import ONNXModelHandler
from olive.package_config import OlivePackageConfig
from olive.passes.olive_pass import create_pass_from_dict

from olive_bf16_pass.olive.attributes import RECORD_KEY, conversion_record, read_metadata, undone_message
from olive_bf16_pass.olive.provider_check import PassOrderError, check_pass_order

SEQ = 16
DATA = {
    "name": "dummy",
    "type": "DummyDataContainer",
    "load_dataset_config": {
        "input_names": ["input_ids", "attention_mask"],
        "input_shapes": [[1, SEQ], [1, SEQ]],
        "input_types": ["int64", "int64"],
        "max_samples": 4,
    },
}
# the passes a user chains with ours, each with the settings an encoder recipe gives it
PASSES = {
    "OrtTransformersOptimization": {"model_type": "bert", "num_heads": 4, "hidden_size": 64},
    "OnnxPeepholeOptimizer": {},
    "OnnxFloatToFloat16": {},
    "OnnxDynamicQuantization": {},
    "OnnxStaticQuantization": {"data_config": DATA},
    "DynamicToFixedShape": {"dim_param": ["batch", "sequence"], "dim_value": [1, SEQ]},
    "GraphSurgeries": {"surgeries": [{"surgeon": "InferShapes"}, {"surgeon": "ReplaceErfWithTanh"}]},
}
CONVERTED = 14  # the export's weights of >= 1024 elements: 12 in the layers, word and position embeddings


def _stop(first: str, then: str, remedy: str = "") -> str:
    """The one line a workflow listing ``first`` before ``then`` stops with (names as in _workflow)."""
    if then == "OnnxFloatToBFloat16":  # BF16 after a pass that leaves no FP32 weights
        return (f"OnnxFloatToBFloat16 ('bf16') runs after {first} ('other'), which leaves no FP32 weights to convert"
                " (BF16 conversion starts from FP32 weights): list 'bf16' before 'other' in \"passes\", or drop one of"
                " them.")
    what = {
        "OrtTransformersOptimization": "ONNX Runtime's graph optimizer folds the BF16 weights' Casts back into FP32 weights",
        "OnnxPeepholeOptimizer": "onnxscript's constant folding folds the BF16 weights' Casts back into FP32 weights",
    }.get(then, "its pre-processing folds the BF16 Casts back and quantizes FP32 weights")
    return (f"OnnxFloatToBFloat16 ('bf16') runs before {then} ('other'), and {what}, undoing the conversion: list 'bf16'"
            f" after 'other' in \"passes\" (BF16 last){remedy}.")


# (other pass, BF16 first?) -> the BF16 initializers the final model has, or the line the workflow stops with
MATRIX = {
    ("OrtTransformersOptimization", False): CONVERTED,
    ("OrtTransformersOptimization", True): _stop("OnnxFloatToBFloat16", "OrtTransformersOptimization",
                                                 " or set opt_level: 0 on 'other'"),
    ("OnnxPeepholeOptimizer", False): CONVERTED,
    ("OnnxPeepholeOptimizer", True): _stop("OnnxFloatToBFloat16", "OnnxPeepholeOptimizer",
                                           " or set onnxscript_optimize: false on 'other'"),
    ("OnnxFloatToFloat16", False): _stop("OnnxFloatToFloat16", "OnnxFloatToBFloat16"),
    ("OnnxFloatToFloat16", True): CONVERTED,  # the FP16 converter leaves BF16 initializers and their Casts alone
    ("OnnxDynamicQuantization", False): 0,  # every large weight is int8 already: nothing left to convert
    ("OnnxDynamicQuantization", True): _stop("OnnxFloatToBFloat16", "OnnxDynamicQuantization"),
    ("OnnxStaticQuantization", False): 0,
    ("OnnxStaticQuantization", True): _stop("OnnxFloatToBFloat16", "OnnxStaticQuantization"),
    ("DynamicToFixedShape", False): CONVERTED,
    ("DynamicToFixedShape", True): CONVERTED,
    ("GraphSurgeries", False): CONVERTED,
    ("GraphSurgeries", True): CONVERTED,
}
# settings of a folding pass that keep the BF16 weights (the remedies the stop lines name)
KEEPING = {
    "OrtTransformersOptimization": {"opt_level": 0},
    "OnnxPeepholeOptimizer": {"onnxscript_optimize": False},
}


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 64, 4 heads) exported with TorchScript, opset 17, dynamic batch / sequence."""
    import torch
    import transformers

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64)
    model = Encoder(transformers.BertModel(config, add_pooling_layer=False).eval()).eval()
    path = tmp_path_factory.mktemp("bert") / "model.onnx"
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randint(0, 256, (1, SEQ)), torch.ones(1, SEQ, dtype=torch.int64)), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamo=False, opset_version=17,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})
    return path


def _pass_class(name: str):
    return OlivePackageConfig.load_default_config().import_pass_module(name)


def _chain(source: Path, steps: list[tuple[str, dict]], folder: Path) -> ONNXModelHandler:
    """Run ``steps`` one after another, as Olive's engine would with search disabled."""
    handler = ONNXModelHandler(model_path=str(source))
    for i, (name, config) in enumerate(steps):
        handler = create_pass_from_dict(_pass_class(name), config, disable_search=True).run(handler, str(folder / str(i)))
    return handler


def _bf16_count(path: str) -> int:
    return sum(t.data_type == onnx.TensorProto.BFLOAT16 for t in onnx.load(path).graph.initializer)


def _steps(other: str, bf16_first: bool, other_config: dict | None = None) -> list[tuple[str, dict]]:
    steps = [("OnnxFloatToBFloat16", {}), (other, PASSES[other] if other_config is None else other_config)]
    return steps if bf16_first else steps[::-1]


def _workflow(other: str, bf16_first: bool, other_config: dict | None = None):
    from olive.workflows.run.config import RunConfig

    passes = {"bf16": {"type": "OnnxFloatToBFloat16"}, "other": {"type": other, **(other_config or PASSES[other])}}
    if not bf16_first:
        passes = {"other": passes["other"], "bf16": passes["bf16"]}
    return RunConfig.parse_file_or_obj({"input_model": {"type": "ONNXModel", "model_path": "model.onnx"},
                                        "passes": passes})


@pytest.mark.parametrize(("other", "bf16_first"), list(MATRIX), ids=lambda v: v if isinstance(v, str) else
                         ("bf16-first" if v else "bf16-last"))
def test_composition_matrix(bert, tmp_path, other, bf16_first):
    expected = MATRIX[(other, bf16_first)]
    if isinstance(expected, str):
        with pytest.raises(PassOrderError) as info:
            check_pass_order(_workflow(other, bf16_first))
        assert str(info.value) == expected and "\n" not in expected
        return
    check_pass_order(_workflow(other, bf16_first))  # the workflow is not stopped
    out = _chain(bert, _steps(other, bf16_first), tmp_path)
    assert _bf16_count(out.model_path) == expected
    feeds = {"input_ids": np.arange(SEQ, dtype=np.int64)[None] % 256, "attention_mask": np.ones((1, SEQ), np.int64)}
    ort.InferenceSession(out.model_path, providers=["CPUExecutionProvider"]).run(None, feeds)  # and it runs
    if bf16_first:
        assert undone_message(out) is None  # nothing undid the conversion
    if expected:
        assert conversion_record(out)["bf16_tensors"] == CONVERTED


@pytest.mark.parametrize("other", list(KEEPING))
def test_the_stop_lines_remedy_keeps_bf16(bert, tmp_path, other):
    config = {**PASSES[other], **KEEPING[other]}
    check_pass_order(_workflow(other, True, config))
    out = _chain(bert, _steps(other, True, config), tmp_path)
    assert _bf16_count(out.model_path) == CONVERTED and undone_message(out) is None


@pytest.mark.parametrize("other", ["OrtTransformersOptimization", "OnnxPeepholeOptimizer", "OnnxDynamicQuantization"])
def test_a_fold_outside_a_workflow_is_reported_with_the_sizes(bert, tmp_path, other):
    out = _chain(bert, _steps(other, True), tmp_path)
    message = undone_message(out)
    assert message is not None and message.startswith(f"a later pass undid the BF16 conversion: {CONVERTED} BF16 tensors became 2, ")
    assert "MB became" in message and "\n" not in message


def test_our_pass_leaves_model_attributes_as_it_found_them(bert, tmp_path):
    """Empty stays empty (OrtTransformersOptimization reads any attributes as a Hugging Face config);
    existing ones gain one namespaced key; the record is in the model's metadata either way."""
    p = create_pass_from_dict(_pass_class("OnnxFloatToBFloat16"), {}, disable_search=True)
    out = p.run(ONNXModelHandler(model_path=str(bert)), str(tmp_path / "a"))
    assert not out.model_attributes
    record = conversion_record(out)
    assert record["source_model_path"] == str(bert.resolve()) and record["bf16_tensors"] == CONVERTED
    assert set(read_metadata(out.model_path)) == {RECORD_KEY}
    hf = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4}
    out = p.run(ONNXModelHandler(model_path=str(bert), model_attributes=hf), str(tmp_path / "b"))
    assert set(out.model_attributes) == set(hf) | {RECORD_KEY}
    assert {k: out.model_attributes[k] for k in hf} == hf
    # and the optimizer after us, reading those attributes, runs (it crashed with our old keys)
    after = create_pass_from_dict(_pass_class("OrtTransformersOptimization"), {"opt_level": 0}, disable_search=True)
    assert _bf16_count(after.run(out, str(tmp_path / "c")).model_path) == CONVERTED


def test_the_source_model_is_found_for_models_of_older_versions(tmp_path):
    from olive_bf16_pass.olive.attributes import source_model_path

    assert source_model_path({"bf16_source_model_path": "/old/model.onnx"}) == "/old/model.onnx"
    assert source_model_path({RECORD_KEY: {"source_model_path": "/new/model.onnx"}}) == "/new/model.onnx"
    assert source_model_path({}) is None


@pytest.mark.slow
def test_a_workflow_in_the_wrong_order_stops_before_any_pass(bert, tmp_path):
    from olive.workflows import run as olive_run

    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(bert)},
        "passes": {"bf16": {"type": "OnnxFloatToBFloat16"}, "other": {"type": "OnnxPeepholeOptimizer"}},
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
    }
    with pytest.raises(PassOrderError, match="list 'bf16' after 'other'"):
        olive_run(config)
    assert not (tmp_path / "out").exists() and not list((tmp_path / "cache").rglob("*.onnx"))


@pytest.mark.slow
def test_a_workflow_in_the_right_order_keeps_bf16_and_the_report(bert, tmp_path, olive_log_records):
    from olive.workflows import run as olive_run

    records = olive_log_records
    olive_run({
        "input_model": {"type": "ONNXModel", "model_path": str(bert)},
        "passes": {"other": {"type": "OrtTransformersOptimization", **PASSES["OrtTransformersOptimization"]},
                   "bf16": {"type": "OnnxFloatToBFloat16"}},
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
    })
    out = tmp_path / "out"
    assert _bf16_count(str(out / "model.onnx")) == CONVERTED
    assert (out / "model.bf16_report.json").is_file()  # the report travels with the model
    summary = [r.getMessage() for r in records if r.getMessage().startswith("OnnxFloatToBFloat16 (model.onnx): ")]
    assert summary and "converted" in summary[0] and "worst rounding error" in summary[0]
