"""The naive loop of the seed article (AMD's BF16 technique for BCE models on Ryzen AI).

A faithful re-implementation of the published script's logic, kept as simple as the original:
load the whole model (external data included), walk every initializer, convert each FP32 one
with numpy bit operations (round to nearest even: ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16`` on
the uint32 view), store it as a BF16 initializer, and, so that the model still runs on ONNX
Runtime's CPU EP (which has no BF16 arithmetic), add one ``Cast(to=FLOAT)`` per tensor that
gives back the original name. Then ``onnx.save`` the whole model (external data beyond 2 GB).

Only the Casts are an addition to the article's script (without them the result does not load
on CPU); everything else, including printing each weight as it goes, follows the article.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_2GB = 2**31


def float32_to_bfloat16(fp32_data: np.ndarray) -> np.ndarray:
    """FP32 -> BF16 bit patterns (uint16), round to nearest even, as in the article."""
    u = np.ascontiguousarray(fp32_data, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype(np.uint16)


def convert(src: str, dst: str, verbose: bool = True) -> dict:
    model = onnx.load(src)  # everything in memory, external data included
    graph = model.graph
    casts = []
    total = 0
    converted = 0
    for i, init in enumerate(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            total += len(init.raw_data)
            continue
        weight_name = init.name
        if verbose:
            print(f"\nFound weight: {weight_name}")
            print(f"Original data type: {TensorProto.DataType.Name(init.data_type)}")
            print("\nConverting FP32 to BF16")
        fp32_data = numpy_helper.to_array(init)
        bf16_data_uint16 = float32_to_bfloat16(fp32_data)
        new = TensorProto()
        new.name = weight_name + "_bf16"
        new.data_type = TensorProto.BFLOAT16
        new.dims.extend(fp32_data.shape)
        new.raw_data = bf16_data_uint16.tobytes()
        graph.initializer[i].CopyFrom(new)
        casts.append(helper.make_node("Cast", [new.name], [weight_name], name=weight_name + "_cast", to=TensorProto.FLOAT))
        total += len(new.raw_data)
        converted += 1
    # the Casts produce the old names; put them first so the graph stays topologically sorted
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    external = total >= _2GB - (64 << 20)  # protobuf cannot hold 2 GB in one message
    if external:
        onnx.save(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=dst.rsplit("/", 1)[-1] + ".data")
    else:
        onnx.save(model, dst)
    return {"converted": converted, "external_data": external}


if __name__ == "__main__":
    print(convert(sys.argv[1], sys.argv[2]))
