"""Model builders and small helpers for test_cli, test_bad_input, test_atomic, test_fuzz and test_identity.

Every model is built with ``ir_version=10``: onnxruntime 1.31 refuses IR 14, onnx's default.

The second half holds the property-based generator (:func:`random_models`, :func:`file_forms`)
and the value checks shared by test_fuzz and test_identity: :func:`bf16_reference` (the
original model with exactly the tensors the report names rounded to BF16), :func:`assert_same`
(tight comparison against it), :func:`canonical` (a model's content wherever its data lives) and
:func:`assert_data_is_own` (the output reads only files the conversion wrote).
"""

from __future__ import annotations

import contextlib
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


# --- every tensor of a model, wherever it lives -----------------------------------------------


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def scopes(model: onnx.ModelProto):
    """(label, initializers, nodes) of the main graph, every subgraph, and every local function."""

    # labels as the report writes a record's ``scope`` (the converter's documented format):
    # "graph", "graph/If[2].then_branch", "function local.f", "function local.f/Loop[0].body"
    def walk(label, initializers, nodes):
        yield label, initializers, nodes
        for index, node in enumerate(nodes):
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(f"{label}/{node.op_type}[{index}].{attr.name}", attr.g.initializer, attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, sub in enumerate(attr.graphs):
                        yield from walk(f"{label}/{node.op_type}[{index}].{attr.name}[{i}]", sub.initializer, sub.node)

    yield from walk("graph", model.graph.initializer, model.graph.node)
    for fn in model.functions:
        overload = f":{fn.overload}" if fn.overload else ""
        yield from walk(f"function {fn.domain}.{fn.name}{overload}", [], fn.node)


def all_tensors(model: onnx.ModelProto):
    """Every TensorProto that can hold data: initializers and attribute tensors, functions included."""
    for _, initializers, nodes in scopes(model):
        yield from initializers
        for node in nodes:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def every_tensor_message(model: onnx.ModelProto):
    """Every TensorProto anywhere in the model, by protobuf reflection (not by our own walk)."""
    stack = [model]
    while stack:
        message = stack.pop()
        if isinstance(message, onnx.TensorProto):
            yield message
            continue
        for field, value in message.ListFields():
            if field.type == field.TYPE_MESSAGE:
                repeated = getattr(field, "is_repeated", None)
                repeated = field.label == field.LABEL_REPEATED if repeated is None else repeated
                stack.extend(value if repeated else [value])


def weights(model: onnx.ModelProto):
    """(kind, name consumers read, scope label, tensor) of every initializer and Constant value."""
    for label, initializers, nodes in scopes(model):
        for t in initializers:
            yield "initializer", t.name, label, t
        for node in nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        yield "constant", node.output[0], label, attr.t


# --- the reference: the original model with the reported tensors rounded to BF16 ------------------


def round_bf16(values: np.ndarray, rounding: str = "nearest_even") -> np.ndarray:
    """FP32 values rounded to BF16 and widened back: ml_dtypes (nearest-even) or truncation."""
    import ml_dtypes

    values = np.ascontiguousarray(values, dtype=np.float32)
    if rounding == "truncate":
        return (values.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    return values.astype(ml_dtypes.bfloat16).astype(np.float32)


def bf16_reference(model: onnx.ModelProto, report, rounding: str = "nearest_even") -> onnx.ModelProto:
    """``model`` (data loaded) with every FP32 tensor the report says converted replaced by its
    BF16-rounded values, still FP32: what the converted model must compute, to float32 precision.

    A record names a tensor by the name its consumers read (``name``), its ``kind`` ("initializer"
    or a Constant's value) and its ``scope``. Names are not unique across scopes (sibling branches,
    functions), so the scope must pick out exactly one FP32 tensor: otherwise the report could not
    say which tensor it converted.
    """
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    found: dict[tuple[str, str, str], list] = {}
    for kind, name, label, tensor in weights(ref):
        if tensor.data_type == TensorProto.FLOAT:
            found.setdefault((kind, name, label), []).append(tensor)
    for record in report.converted:
        key = ("initializer" if record.kind == "initializer" else "constant", record.name, record.scope)
        places = found.get(key, [])
        assert len(places) == 1, (
            f"the report says it converted {key[0]} {key[1]!r} in {key[2]}, and the input holds {len(places)} FP32 "
            f"{key[0]}s so named there: the report must identify exactly one tensor"
        )
        tensor = places[0]
        rounded = round_bf16(numpy_helper.to_array(tensor), rounding)
        tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
    return ref


def assert_same(got: list[np.ndarray], ref: list[np.ndarray], what: str = "", rel: float = 1e-4) -> None:
    """Outputs equal to the reference's up to float32 reordering: far tighter than BF16's 2**-8."""
    assert len(got) == len(ref), f"{what}: {len(got)} outputs, the reference has {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape and g.dtype == r.dtype, f"{what}: output {i} is {g.dtype}{g.shape}, want {r.dtype}{r.shape}"
        scale = max(1.0, float(np.abs(r).max()))
        diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
        worst = int(diff.argmax())
        assert float(diff.max()) <= rel * scale, (
            f"{what}: output {i} differs from the BF16-rounded reference by {float(diff.max()):.4g} at flat index "
            f"{worst} (got {g.flat[worst]!r}, want {r.flat[worst]!r}; tolerance {rel * scale:.3g}): "
            "a tensor was swapped, misplaced, or converted without being reported"
        )


def canonical(path_or_model) -> bytes:
    """The model's content with every tensor's data inline: equal models give equal bytes."""
    model = onnx.load(str(path_or_model)) if not isinstance(path_or_model, onnx.ModelProto) else path_or_model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in all_tensors(copy):
        del tensor.external_data[:]
        tensor.ClearField("data_location")
    return copy.SerializeToString(deterministic=True)


def assert_data_is_own(dst: Path, written) -> None:
    """Every external tensor of ``dst`` (functions and Constants included) reads a file the conversion wrote."""
    own = {Path(p).resolve() for p in written}
    model = onnx.load(str(dst), load_external_data=False)
    for tensor in all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            target = (Path(dst).parent / location).resolve()
            assert target in own, (
                f"{dst.name}: tensor {tensor.name!r} reads external data from {location!r}, which the conversion did "
                f"not write (it wrote {sorted(p.name for p in own)}): its data was not carried into the output"
            )


def save_input(model: onnx.ModelProto, path: Path, external: bool, threshold: int = 0, attributes: bool = True,
               location: str | None = None) -> list[Path]:
    """Save the model as a single file or with onnx's own external data; return the files made."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save moves the data of the model it is given out to the file
    if not external:
        onnx.save(copy, str(path))
        return [path]
    location = location or f"{path.name}.data"
    onnx.save(copy, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=threshold, convert_attribute=attributes)
    data = path.parent / location
    return [path, data] if data.exists() else [path]


# --- the property-based generator --------------------------------------------------------------

BATCH = 2
IDS = np.array([1, 3], dtype=np.int64)  # Gather indices: every table has at least 4 rows
CHUNK_ELEMENTS = (16 << 20) // 4  # the streamer reads 16 MB chunks: a large tensor spans two or more
FUNCTION_DOMAIN = "local"


def varied(n: int, scale: float = 1.0) -> np.ndarray:
    """n float32 values that neither repeat with the chunk size nor are constant: a chunk written
    at the wrong offset, or a tensor swapped for another, changes them."""
    prime = 65521  # CHUNK_ELEMENTS % prime != 0
    return ((np.arange(n, dtype=np.int64) % prime).astype(np.float32) / prime - 0.5) * np.float32(scale)


def _strategies():
    from hypothesis import strategies as st

    return st


class Builder:
    """Accumulates one random model: values are [BATCH, width] float tensors.

    Name hazards it makes on purpose, all legal for onnx.checker and unambiguous for runtimes:
    sibling If branches with their own initializer under one name (different values), sibling
    Constants with one output name, Constant value tensors named "" or like an initializer
    elsewhere, local functions whose Constant outputs are named like main-graph initializers, a
    function called from the main graph and from a branch, and Gather tables also read by MatMul
    or by Gemm(transB=1) (a tied LM head).

    Not made: a subgraph initializer shadowing an outer name. onnx.checker lets an initializer
    through (it refuses only node outputs), but checker.cc says shadowing is not allowed, and
    runtimes disagree on what it means: ONNX Runtime 1.31 reads the outer value when the outer
    name is an initializer and the inner one when it is a node output, but only with graph
    optimizations off (the outer again with them on); onnx.reference reads the outer.
    """

    def __init__(self, draw, opset: int, large: bool = False):
        st = _strategies()
        self.st, self.draw, self.opset, self.large = st, draw, opset, large
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.by_shape: dict[tuple[int, ...], list[str]] = {}  # main-graph FP32 initializers, for sharing
        self.values: list[tuple[str, int]] = []
        self.outputs: list[tuple[str, int]] = []  # forced graph outputs (the large tensors' products)
        self.functions: list[onnx.FunctionProto] = []
        self.function_for: dict[tuple[int, int], str] = {}  # (in width, out width) -> a function's name
        self.features: set[str] = set()
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
        if share and existing and self.draw(self.st.booleans()):
            return self.draw(self.st.sampled_from(existing))
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(self.array(shape), name))
        self.by_shape.setdefault(shape, []).append(name)
        return name

    def value_name(self, own: str) -> str:
        """The name of a Constant's value tensor: its own, empty, or an initializer's from elsewhere."""
        others = [n for names in self.by_shape.values() for n in names]
        choice = self.draw(self.st.sampled_from(["own", "empty", "initializer"] if others else ["own", "empty"]))
        if choice == "empty":
            self.features.add("constant_value_empty_name")
            return ""
        if choice == "initializer":
            self.features.add("constant_value_initializer_name")
            return self.draw(self.st.sampled_from(others))
        return own

    def constant_node(self, out: str, values: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(values, self.value_name(out + "_v")))

    def constant(self, shape: tuple[int, ...]) -> str:
        name = self.name("c")
        self.nodes.append(self.constant_node(name, self.array(shape)))
        return name

    def operand(self, shape: tuple[int, ...]) -> str:
        return self.constant(shape) if self.draw(self.st.integers(0, 3)) == 0 else self.weight(shape)

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
        st = self.st
        ops = ["MatMul", "Add", "Gather", "Conv", "If", "Constant", "Function"] + (
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
            tie = self.draw(st.sampled_from(["none", "matmul", "gemm", "add"]))
            if tie == "matmul" and d == rows:  # the same table read by a MatMul too
                self.features.add("tied_matmul")
                self.add("MatMul", [v, table], d2)
            elif tie == "gemm" and d == d2:  # a tied LM head: logits = h @ E^T
                self.features.add("tied_gemm")
                self.add("Gemm", [v, table], rows, transB=1)
            elif tie == "add" and d == d2:
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
        elif op == "Function":
            d2 = self.draw(st.sampled_from([4, 8, 16]))
            self.features.add("function_in_main")
            self.add(self.function(d, d2), [v], d2, domain=FUNCTION_DOMAIN)
        else:
            self._if(v, d)

    def function(self, d: int, d2: int) -> str:
        """A local function X @ K (+ B), K and B Constants inside it; reused for the same widths."""
        key = (d, d2)
        if key in self.function_for and self.draw(self.st.booleans()):
            self.features.add("function_reused")
            return self.function_for[key]
        fname = self.name("Lin")
        st = self.st
        inits = [n for names in self.by_shape.values() for n in names]
        # the function's Constant output may be named like a main-graph initializer: another scope
        k = self.draw(st.sampled_from(inits)) if inits and self.draw(st.booleans()) else "K"
        if k != "K":
            self.features.add("function_name_collision")
        nodes = [self.constant_node(k, self.array((d, d2)))]
        if self.draw(st.booleans()):
            nodes += [helper.make_node("MatMul", ["X", k], ["XK"]), self.constant_node("B", self.array((d2,))),
                      helper.make_node("Add", ["XK", "B"], ["Y"])]
        else:
            nodes.append(helper.make_node("MatMul", ["X", k], ["Y"]))
        self.functions.append(
            helper.make_function(
                FUNCTION_DOMAIN, fname, ["X"], ["Y"], nodes, opset_imports=[helper.make_opsetid("", self.opset)]
            )
        )
        self.function_for[key] = fname
        self.features.add("function")
        return fname

    def _branch(self, v: str, d: int, d2: int, local: str | None, const_name: str | None) -> onnx.GraphProto:
        """A branch computing v @ W (W local to the branch under the name ``local``, or the outer
        graph's), or calling a local function; then maybe + a Constant named ``const_name``."""
        st = self.st
        out = self.name("branch_out")
        inits, nodes = [], []
        mid = self.name("branch_mm")
        if local is None and self.draw(st.integers(0, 3)) == 0:
            self.features.add("function_in_branch")
            nodes.append(helper.make_node(self.function(d, d2), [v], [mid], domain=FUNCTION_DOMAIN))
        else:
            if local is not None:
                w = local
                inits.append(numpy_helper.from_array(self.array((d, d2)), w))  # own values, even when named alike
            else:
                w = self.weight((d, d2))
            nodes.append(helper.make_node("MatMul", [v, w], [mid]))
        if const_name is not None:  # a Constant inside the branch
            nodes.append(self.constant_node(const_name, self.array((d2,))))
            nodes.append(helper.make_node("Add", [mid, const_name], [out]))
        else:
            nodes.append(helper.make_node("Identity", [mid], [out]))
        return helper.make_graph(
            nodes, self.name("branch"), [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [BATCH, d2])], inits
        )

    def _if(self, v: str, d: int) -> None:
        st = self.st
        d2 = self.draw(st.sampled_from([4, 8, 16]))
        locals_ = [self.name("w_local") if self.draw(st.booleans()) else None for _ in range(2)]
        if all(locals_) and self.draw(st.booleans()):
            locals_[1] = locals_[0]  # siblings, each with its own initializer under one name
            self.features.add("sibling_initializers_same_name")
        consts = [self.name("branch_c") if self.draw(st.booleans()) else None for _ in range(2)]
        if all(consts) and self.draw(st.booleans()):
            consts[1] = consts[0]
            self.features.add("sibling_constants_same_name")
        then_branch = self._branch(v, d, d2, locals_[0], consts[0])
        else_branch = self._branch(v, d, d2, locals_[1], consts[1])
        self.add("If", ["cond"], d2, then_branch=then_branch, else_branch=else_branch)

    def large_step(self) -> None:
        """One tensor over a streaming chunk, of varied values, read by a MatMul whose product is a
        graph output: every element of it shows in the output."""
        v, d = self.draw(self.st.sampled_from(self.values))
        cols = -(-(CHUNK_ELEMENTS + 4099) // d)  # a little over one chunk: the second chunk is partial
        values = varied(d * cols, scale=2.0 / np.sqrt(d)).reshape(d, cols)
        if self.draw(self.st.booleans()):
            name = self.name("c_big")
            self.nodes.append(self.constant_node(name, values))
            self.features.add("large_constant")
        else:
            name = self.name("w_big")
            self.inits.append(numpy_helper.from_array(values, name))
            self.features.add("large_initializer")
        out = self.name("big_mm")
        self.nodes.append(helper.make_node("MatMul", [v, name], [out]))
        self.outputs.append((out, cols))

    def model(self, outputs: list[tuple[str, int]]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "fuzz",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, self.values[0][1]]),
                helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH]),
                helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            ],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [BATCH, w]) for n, w in outputs + self.outputs],
            self.inits,
        )
        opsets = [helper.make_opsetid("", self.opset)]
        if self.functions:
            opsets.append(helper.make_opsetid(FUNCTION_DOMAIN, 1))
        return helper.make_model(
            graph, opset_imports=opsets, ir_version=IR_VERSION, functions=self.functions
        )


def random_models(large: bool = False):
    """A strategy for (model, ConversionOptions, features): ``large`` adds one tensor over a chunk."""
    from hypothesis import strategies as st

    from olive_bf16_pass.options import ConversionOptions

    @st.composite
    def build(draw):
        opset = draw(st.sampled_from([13, 17, 18]))
        b = Builder(draw, opset, large)
        b.values.append(("x", draw(st.sampled_from([4, 8, 16]))))
        steps = draw(st.integers(1, 8))
        big_at = draw(st.integers(0, steps - 1)) if large else -1
        for i in range(steps):
            b.step()
            if i == big_at:
                b.large_step()
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
        return b.model(outputs), options, frozenset(b.features)

    return build()


SIZE_THRESHOLDS = [0, 64, 1024, 4096]  # bytes: 0 moves every tensor out, 4096 keeps the small ones inline


def file_forms():
    """A strategy for how the input is saved and the output written (dict of settings)."""
    from hypothesis import strategies as st

    return st.fixed_dictionaries(
        {
            "in_external": st.booleans(),
            "in_threshold": st.sampled_from(SIZE_THRESHOLDS),
            "in_constants_external": st.booleans(),  # onnx.save(convert_attribute=...): Constant values too
            "out_external": st.booleans(),
            "out_threshold": st.sampled_from(SIZE_THRESHOLDS),
            "out_data_name": st.sampled_from([None, "weights.bin"]),
            "out_beside_input": st.booleans(),
            # how tensor bytes are read: None as shipped (small tensors in batches, the rest in 16 MB chunks
            # through maps of the file); or every tensor of 16 bytes up in chunks of this many bytes
            "chunk_bytes": st.sampled_from([None, 4096, 65536]),
            "mapped": st.booleans(),
        }
    )


@contextlib.contextmanager
def reading_as(forms: dict):
    """Read tensor bytes the way ``forms`` says (file_forms' chunk_bytes and mapped)."""
    from unittest import mock

    from olive_bf16_pass.io import positional, source, streamer

    with contextlib.ExitStack() as stack:
        if forms.get("chunk_bytes"):
            stack.enter_context(mock.patch.object(streamer, "CHUNK_BYTES", forms["chunk_bytes"]))
            stack.enter_context(mock.patch.object(source, "INLINE_LIMIT", 16))  # tensors of 4 floats up stay on disk
            stack.enter_context(mock.patch.object(streamer, "SMALL_BYTES", 0))  # and are read in chunks, not batches
        if not forms.get("mapped", True):
            stack.enter_context(mock.patch.object(positional.Handles, "mapped", lambda *args: None))
        yield


# --- the command's contract on refused input (used by test_bad_input.py and test_hostile_input.py) ---------


def expect_error(capsys, argv, *, contains, folders, code=1):
    """Run the command; check the one-line error, the exit code and that ``folders`` did not change."""
    before = {f: snapshot(f) for f in folders}
    from olive_bf16_pass.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == code, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("olive-bf16: error: "), err
    for text in [contains] if isinstance(contains, str) else contains:
        assert text in lines[0], lines[0]
    for f in folders:
        assert snapshot(f) == before[f], f"{f} changed"
        assert temp_leftovers(f) == []
    return lines[0]


def expect_ok(capsys, argv):
    from olive_bf16_pass.cli import main

    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured
