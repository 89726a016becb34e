"""lean_onnx: a conversion without ``import onnx`` (ml_dtypes' import costs 0.4 s), and the same onnx after it.

The suite itself imports onnx first, so the lean path runs in fresh interpreters here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnx.helper
import pytest
from helpers import embedding_mlp, if_subgraph_model, save

from olive_bf16_pass import checking, dtypes, lean_onnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh(code: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CONVERT = """
import json, sys
from olive_bf16_pass import convert_file
report = convert_file(sys.argv[1], sys.argv[2])
print(json.dumps({"onnx": "onnx" in sys.modules, "ml_dtypes": "ml_dtypes" in sys.modules,
                  "converted": len(report.converted)}))
"""


@pytest.mark.parametrize("build", [embedding_mlp, if_subgraph_model], ids=["mlp", "if_branch"])
def test_a_conversion_imports_neither_onnx_nor_ml_dtypes_and_writes_the_same_bytes(tmp_path, build):
    src = save(build(), tmp_path / "model.onnx")
    lean = _fresh(CONVERT, str(src), str(tmp_path / "lean.onnx"))
    whole = _fresh(CONVERT, str(src), str(tmp_path / "whole.onnx"), env={"OLIVE_BF16_FULL_ONNX": "1"})
    assert lean == {"onnx": False, "ml_dtypes": False, "converted": whole["converted"]}
    assert whole["onnx"] and whole["converted"] > 0
    assert (tmp_path / "lean.onnx").read_bytes() == (tmp_path / "whole.onnx").read_bytes()


def test_inspect_imports_neither(tmp_path):
    src = save(embedding_mlp(), tmp_path / "model.onnx")
    code = """
import json, sys
from olive_bf16_pass.inspection import inspect_model
info = inspect_model(sys.argv[1])
print(json.dumps({"onnx": "onnx" in sys.modules, "ml_dtypes": "ml_dtypes" in sys.modules, "n": info["would_convert"]}))
"""
    assert _fresh(code, str(src)) == {"onnx": False, "ml_dtypes": False, "n": 3}


def test_a_later_import_onnx_is_the_same_onnx_with_its_parts_bound():
    code = """
import json, sys, importlib.machinery
from olive_bf16_pass import lean_onnx
model = lean_onnx.ModelProto(ir_version=10)
import onnx, onnx.helper
onnx.checker.check_model(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])))
print(json.dumps({
    "same_class": onnx.ModelProto is lean_onnx.ModelProto and isinstance(model, onnx.ModelProto),
    "bound": onnx.onnx_ml_pb2 is sys.modules["onnx.onnx_ml_pb2"] and hasattr(onnx.onnx_cpp2py_export, "checker"),
    "loader": isinstance(onnx.__loader__, importlib.machinery.SourceFileLoader),
    "helper": lean_onnx.helper is onnx.helper,
}))
"""
    assert _fresh(code) == {"same_class": True, "bound": True, "loader": True, "helper": True}


def test_the_lean_checker_refuses_what_onnx_checker_refuses():
    code = """
import json
from olive_bf16_pass import lean_onnx as onnx
bad = onnx.ModelProto(ir_version=10)
bad.graph.name = "g"
bad.graph.node.add(op_type="NoSuchOp", input=["x"], output=["y"])
bad.opset_import.add(domain="", version=17)
try:
    onnx.checker.check_model(bad, full_check=True)
    caught = None
except onnx.checker.ValidationError as error:
    caught = str(error)
import onnx as real
print(json.dumps({"caught": caught, "same_error": onnx.checker.ValidationError is real.checker.ValidationError,
                  "infer": onnx.shape_inference.InferenceError is real.shape_inference.InferenceError}))
"""
    out = _fresh(code)
    assert out["caught"] and "NoSuchOp" in out["caught"]
    assert out["same_error"] and out["infer"]


def test_with_onnx_imported_it_is_onnx():
    assert lean_onnx.ModelProto is onnx.ModelProto
    assert lean_onnx.checker is onnx.checker
    assert lean_onnx.numpy_helper is onnx.numpy_helper


@pytest.mark.parametrize("dims", [[], [4], [2, 3, 5], [0, 7]])
@pytest.mark.parametrize("data_type", [onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT64])
def test_value_infos_are_what_onnx_helper_makes(dims, data_type):
    tensor = onnx.TensorProto(name="w", data_type=data_type, dims=dims)
    made = checking._value_info(tensor)
    assert made == onnx.helper.make_tensor_value_info("w", data_type, dims)
    assert made.SerializeToString() == onnx.helper.make_tensor_value_info("w", data_type, dims).SerializeToString()


def test_the_known_widths_are_onnx_s():
    for data_type, bits in dtypes._KNOWN_BITS.items():
        if data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
            assert bits == 0
        else:
            assert np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize * 8 == bits, data_type
    # and a type outside the table still asks onnx (and ml_dtypes): 4 bits
    assert dtypes._bits_of(onnx.TensorProto.INT4) == 4


def test_the_graph_edits_are_what_onnx_helper_makes():
    from olive_bf16_pass import graph

    assert graph._TO_FLOAT == onnx.helper.make_attribute("to", onnx.TensorProto.FLOAT)
    value = onnx.TensorProto(name="c", data_type=onnx.TensorProto.FLOAT, dims=[3, 2])
    values = onnx.TensorProto(name="out__values", data_type=onnx.TensorProto.FLOAT, dims=[0])
    indices = onnx.TensorProto(name="out__indices", data_type=onnx.TensorProto.INT64, dims=[0])
    expected = onnx.helper.make_node(
        "Constant", [], ["out"], sparse_value=onnx.helper.make_sparse_tensor(values, indices, [3, 2])
    )
    assert checking._shaped_like(value, "out") == expected
