"""Model builders and small helpers for test_cli, test_bad_input, test_atomic and test_fuzz.

Every model is built with ``ir_version=10``: onnxruntime 1.31 refuses IR 14, onnx's default.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10


def make_model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def matmul_model(n: int = 64, opset: int = 17, dtype=np.float32, seed: int = 0, weight: np.ndarray | None = None):
    """y = x @ W + b, W of n*n elements (converts with min_elements <= n*n), b of n (stays FP32 by default)."""
    rng = np.random.default_rng(seed)
    w = weight if weight is not None else rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
            helper.make_node("Add", ["h", "b"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", elem, [1, n])],
        [helper.make_tensor_value_info("y", elem, [1, n])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return make_model(graph, opset)


def with_external_reference(model: onnx.ModelProto, name: str, location: str, offset=None, length=None):
    """Point initializer ``name`` at external data, without writing any data file."""
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=location)
    if offset is not None:
        tensor.external_data.add(key="offset", value=str(offset))
    if length is not None:
        tensor.external_data.add(key="length", value=str(length))
    return model


def save_with_external_data(model: onnx.ModelProto, path: Path, location: str | None = None) -> None:
    onnx.save(model, str(path), save_as_external_data=True, location=location or f"{path.name}.data", size_threshold=0)


def big_model(path: Path, megabytes: int, tensors: int = 4, seed: int = 0) -> None:
    """A single-file FP32 model of about ``megabytes`` MB: a chain of Adds over large 1-D weights.

    Written with onnx.save directly; the weights are cheap to generate (a ramp, not random).
    """
    n = megabytes * 2**20 // 4 // tensors
    nodes, inits, prev = [], [], "x"
    for i in range(tensors):
        w = np.full(n, 0.001 * (i + 1), dtype=np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Add", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        inits,
    )
    onnx.save(make_model(graph), str(path))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with its hash; links as 'link:target'."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = Path(root, name)
            rel = str(p.relative_to(folder))
            found[rel] = f"link:{os.readlink(p)}" if p.is_symlink() else sha256(p)
    return found


def temp_leftovers(folder: Path) -> list[str]:
    """Files that look like the writer's temporaries: '.NAME.*.tmp'."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def run_session(path: Path, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_proto(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
