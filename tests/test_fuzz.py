"""Property tests: random DAGs of MatMul, Add, Gather, Conv, LayerNormalization, Constant and If.

Each generated model has random initializer shapes, initializers shared between consumers
(MatMul and Gather reading one table included), outer-scope reads from If branches and
initializers local to a branch. Every example is converted both in memory (convert_model) and
through files (convert_file, single file or external data), and must:

- pass onnx.checker.check_model(full_check=True);
- run on ONNX Runtime CPU with outputs within BF16 tolerance of the FP32 model's;
- be a fixed point: converting the converted model changes nothing;
- be the same model whichever way it was converted.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import IR_VERSION, run_proto, run_session
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.convert import convert_file, convert_model
from olive_bf16_pass.model_io import iter_graphs
from olive_bf16_pass.options import ConversionOptions

BATCH = 2
IDS = np.array([1, 3], dtype=np.int64)  # Gather indices: every table has at least 4 rows


class _Builder:
    """Accumulates one random model: values are [BATCH, width] float tensors."""

    def __init__(self, draw, opset: int):
        self.draw, self.opset = draw, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.by_shape: dict[tuple[int, ...], list[str]] = {}  # main-graph FP32 initializers, for sharing
        self.values: list[tuple[str, int]] = []
        self.count = 0
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def array(self, shape: tuple[int, ...]) -> np.ndarray:
        fan_in = shape[0] if len(shape) > 1 else 1
        return (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def weight(self, shape: tuple[int, ...], share: bool = True) -> str:
        """A main-graph FP32 initializer of ``shape``: an existing one (shared) or a new one."""
        existing = self.by_shape.get(shape, [])
        if share and existing and self.draw(st.booleans()):
            return self.draw(st.sampled_from(existing))
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(self.array(shape), name))
        self.by_shape.setdefault(shape, []).append(name)
        return name

    def constant(self, shape: tuple[int, ...]) -> str:
        name = self.name("c")
        self.nodes.append(
            helper.make_node("Constant", [], [name], value=numpy_helper.from_array(self.array(shape), name + "_v"))
        )
        return name

    def operand(self, shape: tuple[int, ...]) -> str:
        return self.constant(shape) if self.draw(st.integers(0, 3)) == 0 else self.weight(shape)

    def int64(self, values) -> str:
        name = self.name("i")
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def add(self, op: str, inputs, width: int, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        self.values.append((out, width))
        return out

    # --- one random step ------------------------------------------------------------------

    def step(self) -> None:
        ops = ["MatMul", "Add", "Gather", "Conv", "If", "Constant"] + (
            ["LayerNormalization"] if self.opset >= 17 else []
        )
        op = self.draw(st.sampled_from(ops))
        v, d = self.draw(st.sampled_from(self.values))
        widths = st.sampled_from([4, 6, 8, 16, 32])
        if op == "MatMul":
            d2 = self.draw(widths)
            self.add("MatMul", [v, self.operand((d, d2))], d2)
        elif op == "Add":
            others = [name for name, w in self.values if w == d and name != v]
            kind = self.draw(st.sampled_from(["row", "full", "value"] if others else ["row", "full"]))
            if kind == "value":
                other = self.draw(st.sampled_from(others))
            else:
                other = self.operand((d,) if kind == "row" else (BATCH, d))
            self.add("Add", [v, other], d)
        elif op == "Gather":
            rows, d2 = self.draw(st.sampled_from([4, 8, 16, 33])), self.draw(widths)
            table = self.weight((rows, d2))
            gathered = self.add("Gather", [table, "ids"], d2)
            if d == rows and self.draw(st.booleans()):  # the same table read by a MatMul too
                self.add("MatMul", [v, table], d2)
            elif d == d2 and self.draw(st.booleans()):
                self.add("Add", [gathered, v], d2)
        elif op == "Conv":
            channels, k = self.draw(st.integers(1, 4)), self.draw(st.sampled_from([1, 3, 5]))
            x3 = self.name("unsq")
            self.nodes.append(helper.make_node("Unsqueeze", [v, self.int64([1])], [x3]))
            inputs = [x3, self.weight((channels, 1, k))]
            if self.draw(st.booleans()):
                inputs.append(self.weight((channels,)))
            conv = self.name("conv")
            self.nodes.append(helper.make_node("Conv", inputs, [conv], pads=[(k - 1) // 2] * 2, kernel_shape=[k]))
            self.add("Flatten", [conv], channels * d, axis=1)
        elif op == "LayerNormalization":
            self.add("LayerNormalization", [v, self.operand((d,)), self.operand((d,))], d, axis=-1)
        elif op == "Constant":
            self.add("Mul", [v, self.constant((BATCH, d))], d)
        else:
            self._if(v, d)

    def _branch(self, v: str, d: int, d2: int, local: bool) -> onnx.GraphProto:
        """A branch computing v @ W: W local to the branch, or the outer graph's (outer-scope read)."""
        out = self.name("branch_out")
        inits, nodes = [], []
        if local:
            w = self.name("w_local")
            inits.append(numpy_helper.from_array(self.array((d, d2)), w))
        else:
            w = self.weight((d, d2))
        mid = self.name("branch_mm")
        nodes.append(helper.make_node("MatMul", [v, w], [mid]))
        if self.draw(st.booleans()):  # a Constant inside the branch
            c = self.name("branch_c")
            nodes.append(
                helper.make_node("Constant", [], [c], value=numpy_helper.from_array(self.array((d2,)), c + "_v"))
            )
            nodes.append(helper.make_node("Add", [mid, c], [out]))
        else:
            nodes.append(helper.make_node("Identity", [mid], [out]))
        return helper.make_graph(
            nodes, self.name("branch"), [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [BATCH, d2])], inits
        )

    def _if(self, v: str, d: int) -> None:
        d2 = self.draw(st.sampled_from([4, 8, 16]))
        then_branch = self._branch(v, d, d2, local=self.draw(st.booleans()))
        else_branch = self._branch(v, d, d2, local=self.draw(st.booleans()))
        self.add("If", ["cond"], d2, then_branch=then_branch, else_branch=else_branch)

    def model(self, outputs: list[tuple[str, int]]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "fuzz",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, self.values[0][1]]),
                helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH]),
                helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            ],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [BATCH, w]) for n, w in outputs],
            self.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=IR_VERSION)


@st.composite
def random_models(draw):
    opset = draw(st.sampled_from([13, 17, 18]))
    b = _Builder(draw, opset)
    b.values.append(("x", draw(st.sampled_from([4, 8, 16]))))
    for _ in range(draw(st.integers(1, 8))):
        b.step()
    produced = b.values[1:]
    last = produced[-1]
    extra = draw(st.lists(st.sampled_from(produced), max_size=2, unique=True))
    outputs = [last] + [o for o in extra if o != last]
    options = ConversionOptions(
        rounding=draw(st.sampled_from(["nearest_even", "truncate"])),
        min_elements=draw(st.sampled_from([1, 4, 16, 64])),
        convert_constants=draw(st.booleans()),
        cast_after_gather=draw(st.booleans()),
    )
    return b.model(outputs), options


def _feeds(model: onnx.ModelProto, cond: bool) -> dict:
    width = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(width).standard_normal((BATCH, width)).astype(np.float32)
    return {"x": x, "ids": IDS, "cond": np.array(cond)}


def _assert_close(got: list[np.ndarray], ref: list[np.ndarray]) -> None:
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
        scale = max(1.0, float(np.abs(r).max()))
        assert float(np.abs(g - r).max()) <= 0.05 * scale, (float(np.abs(g - r).max()), scale)


def _strip_names(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


EXAMPLES = int(os.environ.get("BF16_FUZZ_EXAMPLES", "40"))  # raise it for a longer hunt


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(random_models(), st.booleans())
def test_random_models(case, external):
    model, options = case
    onnx.checker.check_model(model, full_check=True)  # the generator's own sanity

    converted, report = convert_model(model, options)
    onnx.checker.check_model(converted, full_check=True)
    assert all(r.max_rel_error <= 2**-7 for r in report.converted)  # truncation: < 1 ulp; nearest: <= 1/2

    for cond in (True, False):
        feeds = _feeds(model, cond)
        _assert_close(run_proto(converted, feeds), run_proto(model, feeds))

    again, report2 = convert_model(converted, options)
    assert report2.converted == []
    assert _strip_names(again) == _strip_names(converted)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        file_report = convert_file(src, dst, options, save_as_external_data=external, size_threshold=64)
        assert [r.name for r in file_report.converted] == [r.name for r in report.converted]
        assert [r.max_abs_error for r in file_report.converted] == [r.max_abs_error for r in report.converted]
        from_file = onnx.load(str(dst))
        for t in (t for g in iter_graphs(from_file.graph) for t in g.initializer):  # compare data, not place
            del t.external_data[:]
            t.ClearField("data_location")
        assert _strip_names(from_file) == _strip_names(converted)
        feeds = _feeds(model, True)
        _assert_close(run_session(dst, feeds), run_session(src, feeds))
        # the converted file converted again: the same bytes
        dst2 = Path(tmp) / "out2.onnx"
        convert_file(dst, dst2, options, save_as_external_data=external, size_threshold=64)
        if external:
            assert (Path(tmp) / "out.onnx.data").read_bytes() == (Path(tmp) / "out2.onnx.data").read_bytes()
        else:
            assert dst.read_bytes() == dst2.read_bytes()


@pytest.mark.parametrize("op", ["MatMul", "Add", "Gather", "Conv", "LayerNormalization", "Constant", "If"])
def test_the_generator_makes_every_op(op):
    """Each op appears in some generated model that converts and runs, so a broken generator cannot pass silently."""
    from hypothesis import find

    def uses(case):
        graphs = [case[0].graph] + [
            a.g for n in case[0].graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
        ]
        return op in {n.op_type for g in graphs for n in g.node}

    model, _ = find(random_models(), uses, settings=settings(max_examples=500, database=None, phases=[Phase.generate]))
    converted, report = convert_model(model, ConversionOptions(min_elements=1))
    assert report.converted
    _assert_close(run_proto(converted, _feeds(model, True)), run_proto(model, _feeds(model, True)))
