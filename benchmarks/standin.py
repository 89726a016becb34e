"""A stand-in for olive_bf16_pass's converter, used only while the real one does not exist yet.

The benchmark uses it when ``olive_bf16_pass/convert.py`` (or ``olive_bf16_pass/olive/passes.py``)
is missing, and marks those rows ``[stand-in]``. It has the real API's shape
(``convert_file(src, dst, options, save_as_external_data=..., external_data_name=...)`` returning
an object with ``to_dict()`` and ``summary()``) and does a plain, reasonably frugal job: graph
proto without weights, FP32 tensors of >= 1024 elements read one at a time (memory-mapped when
external), rounded with ml_dtypes (nearest even), BF16 initializer + ``Cast(to=FLOAT)``, the Cast
placed after the Gather for a table read only by Gather. It is not the product; its figures are
not the product's.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper

MIN_ELEMENTS = 1024


class StandInReport:
    def __init__(self, converted: int, kept: int, bytes_in: int, bytes_out: int):
        self.converted, self.kept, self.bytes_in, self.bytes_out = converted, kept, bytes_in, bytes_out

    def to_dict(self) -> dict:
        return {"stand_in": True, "converted": self.converted, "kept": self.kept,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}

    def summary(self) -> str:
        return f"[stand-in] converted {self.converted} tensors, kept {self.kept}: {self.bytes_in} -> {self.bytes_out} bytes"


def _read(t: TensorProto, base: Path) -> np.ndarray:
    shape = tuple(t.dims)
    if t.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        n = int(np.prod(shape, dtype=np.int64))
        return np.memmap(base / info["location"], dtype=np.float32, mode="r", offset=int(info.get("offset", 0)), shape=(n,)).reshape(shape)
    if t.raw_data:
        return np.frombuffer(t.raw_data, dtype=np.float32).reshape(shape)
    return np.asarray(t.float_data, dtype=np.float32).reshape(shape)


def convert_file(src, dst, options=None, save_as_external_data: bool = False, external_data_name: str | None = None):
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    consumers: dict[str, list] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_inputs = {i.name for i in g.input}
    new_nodes_front, converted, kept, bytes_in, bytes_out = [], 0, 0, 0, 0
    after_gather: dict[str, str] = {}  # gather output -> its new bf16 name
    for t in g.initializer:
        n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        if t.data_type != TensorProto.FLOAT or n < MIN_ELEMENTS or t.name in graph_inputs:
            kept += 1
            continue
        arr = _read(t, src.parent)
        bits = arr.astype(ml_dtypes.bfloat16).view(np.uint16)
        del arr
        name = t.name
        bytes_in += 4 * n
        bytes_out += 2 * n
        t.ClearField("external_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.DEFAULT
        t.data_type = TensorProto.BFLOAT16
        t.raw_data = bits.tobytes()
        del bits
        users = consumers.get(name, [])
        t.name = name + "_bf16"
        if users and all(u.op_type == "Gather" and u.input[0] == name and name not in u.input[1:] for u in users):
            for u in users:
                u.input[0] = t.name
                after_gather[u.output[0]] = u.output[0] + "_bf16"
        else:
            new_nodes_front.append(helper.make_node("Cast", [t.name], [name], name=name + "_to_fp32", to=TensorProto.FLOAT))
        converted += 1
    nodes = new_nodes_front
    for node in g.node:
        nodes.append(node)
        if node.op_type == "Gather" and node.output[0] in after_gather:
            out = node.output[0]
            node.output[0] = after_gather[out]
            nodes.append(helper.make_node("Cast", [after_gather[out]], [out], name=out + "_to_fp32", to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    total = sum(len(t.raw_data) for t in g.initializer)
    if save_as_external_data or total > 2**31 - 2**26:
        location = external_data_name or dst.name + ".data"
        with open(dst.parent / location, "wb") as fh:
            for t in g.initializer:
                if len(t.raw_data) >= 1024:
                    offset = fh.tell()
                    fh.write(t.raw_data)
                    t.ClearField("raw_data")
                    t.data_location = TensorProto.EXTERNAL
                    for k, v in (("location", location), ("offset", str(offset)), ("length", str(fh.tell() - offset))):
                        e = t.external_data.add()
                        e.key, e.value = k, v
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(model.SerializeToString())
    os.replace(tmp, dst)
    return StandInReport(converted, kept, bytes_in, bytes_out)


def make_pass_class():
    """An Olive Pass over the stand-in converter, shaped like olive_bf16_pass.olive.passes.OnnxFloatToBFloat16."""
    from olive.model import ONNXModelHandler
    from olive.model.utils import resolve_onnx_path
    from olive.passes import Pass
    from olive.passes.onnx.common import get_external_data_config

    class StandInOnnxFloatToBFloat16(Pass):
        @classmethod
        def _default_config(cls, accelerator_spec):
            return get_external_data_config()

        def _run_for_config(self, model, config, output_model_path):
            out = Path(resolve_onnx_path(output_model_path, Path(model.model_path).name))
            convert_file(model.model_path, out, None, save_as_external_data=config.save_as_external_data,
                         external_data_name=config.external_data_name)
            return ONNXModelHandler(model_path=str(out.parent), onnx_file_name=out.name)

    return StandInOnnxFloatToBFloat16
