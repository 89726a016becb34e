"""Where an emulated model rounds to BF16: the graph edit that makes FP32 kernels compute as a BF16 device.

Every floating tensor between nodes is rounded to BF16 by a ``Cast(to=BFLOAT16) -> Cast(to=FLOAT)``
pair, so that each node reads BF16 values, computes in FP32 (as BF16 devices accumulate) and hands
on a BF16 result (emulation.py rounds the weights themselves, as convert does):

- a node's FLOAT outputs are rounded right after it (the node writes a fresh name, the Cast pair
  writes the old one, so consumers, graph outputs and value_info are untouched, in every scope);
- a FLOAT input that no node rounds (a graph input, a weight the plan keeps FP32, a Constant)
  gets a rounded copy for the nodes that compute in BF16; a weight with finite values beyond BF16's
  range (float32 min as a mask fill) is read through a saturated copy first, so it rounds as
  convert rounds the weights it writes (a Cast alone makes them +-inf);
- ops that only move or select values (Reshape, Transpose, Gather, Concat, Where, Max, Relu ...)
  are exact in BF16 on rounded inputs: their outputs are not rounded again;
- nodes kept in FP32 (by op type or name) read what they are given, keep FP32 weights and hand on
  FP32 results, which their consumers read as they are (the tensor stays FP32 on the device);
  nodes inside local functions are one node each (their body is not edited).

So each node owns the precision of the tensors it writes: keeping a node FP32 keeps its results
FP32. (Were its BF16 consumers to round them again, a single node kept FP32 would change nothing:
FP32 inside a node is what the emulation does for every node.)

With ``switches``, each rounding point of a node is ``Where(switch, rounded, raw)`` on a boolean
graph input of that node, weights stay FP32 in the file and each node rounds the weights it reads
under its own switch, so one session runs any mix of BF16 and FP32 nodes exactly as the emulation
with those nodes kept FP32 computes it (sensitivity.py); all switches off is the FP32 model. A move
has a switch only where it reads a value nothing rounds (a weight, a graph input, a Constant): it
rounds that, as the emulation rounds a weight read through a Gather unless the Gather is kept, so a
node kept FP32 after a Gather reads the BF16 table in both; other moves hand on what they read. A
move that reads nothing rounded (a Gather of a table) rounds its results instead of its inputs: the
same values, at the cost of the rows read rather than of the whole table, every run.
Values are bound by scope as traversal.py does (names repeat across subgraphs); new names are fresh.
ONNX Runtime keeps the Cast pairs at every optimization level (tests/test_emulation.py proves it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.graph import Names
from olive_bf16_pass.traversal import DEFAULT_DOMAINS, Scope, Skeleton, constant_value, scopes

__all__ = ["MOVES", "Rounding", "add_rounding"]

logger = logging.getLogger(__name__)

# outputs are some of the inputs' values (moved, selected): exact in BF16 when the inputs are BF16
MOVES = frozenset({
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Gather", "GatherElements", "GatherND",
    "Slice", "Split", "Concat", "Expand", "Tile", "Where", "Max", "Min", "Relu", "Neg", "Abs", "ReduceMax",
    "ReduceMin", "DepthToSpace", "SpaceToDepth", "Shape", "Size",
})
_FLOAT = onnx.TensorProto.FLOAT
_BF16_MAX = 3.3895313892515355e38  # the largest finite BF16


def _saturated(tensor: onnx.TensorProto | None) -> np.ndarray | None:
    """An inline FP32 weight's values with the finite ones beyond BF16's range clamped to +-max, as convert rounds
    weights (saturate), where it has any; else None. A Cast to BF16 makes them +-inf instead. (Weights whose data
    is elsewhere are large ones, whose values lie in range.)"""
    if tensor is None or tensor.data_type != _FLOAT or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    values = onnx.numpy_helper.to_array(tensor)
    beyond = np.isfinite(values) & (np.abs(values) > _BF16_MAX)
    return np.where(beyond, np.sign(values) * np.float32(_BF16_MAX), values).astype(np.float32) if beyond.any() else None


@dataclass
class Rounding:
    """What add_rounding did: rounding points, kept nodes, and (with switches) each switch's node."""

    outputs: int = 0  # node outputs rounded after their node
    inputs: int = 0  # rounded copies of inputs that were not BF16 yet
    kept: list[str] = field(default_factory=list)  # names of the nodes kept in FP32
    untyped: int = 0  # node outputs of unknown type (not rounded)
    switches: list[tuple[str, str]] = field(default_factory=list)  # (graph input, node name), switch order
    switch_ops: list[str] = field(default_factory=list)  # op type of each switch's node


def _types(model: onnx.ModelProto) -> list[dict[str, int]]:
    """Element type of every value, per scope (in traversal.scopes order), from onnx's type inference."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        copy = onnx.shape_inference.infer_shapes(copy)
    except Exception as exc:  # noqa: BLE001 - inference is best effort: declared types still count
        logger.debug("type inference failed (%s); using the declared types only", exc)
    found = []
    for scope in scopes(copy):
        body, types = scope.body, {}
        if not scope.is_function:
            for v in (*body.input, *body.output, *body.value_info):
                if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
                    types[v.name] = v.type.tensor_type.elem_type
            for t in body.initializer:
                types.setdefault(t.name, t.data_type)
        found.append(types)
    return found


class _Edits:
    """Nodes to insert before or after given nodes, per scope; sorted into place once (identity kept)."""

    def __init__(self):
        self.by_scope: dict[int, tuple[Scope, list[tuple[onnx.NodeProto, int, dict]]]] = {}

    def add(self, scope: Scope, anchor: onnx.NodeProto, where: int, **node) -> None:
        self.by_scope.setdefault(id(scope), (scope, []))[1].append((anchor, where, node))

    def apply(self) -> None:
        for scope, added in self.by_scope.values():
            nodes = scope.body.node
            present = list(nodes)  # alive while sorting: the keys are their ids
            place = {id(n): (i, 1, 0) for i, n in enumerate(present)}
            made = []
            for order, (anchor, where, spec) in enumerate(added):
                node = nodes.add(**spec)
                place[id(node)] = (place[id(anchor)][0], where, order)
                made.append(node)
            nodes.sort(key=lambda n: place[id(n)])


def add_rounding(skeleton: Skeleton, keeps: Callable[[onnx.NodeProto], bool], original: set[int],
                 switches: bool = False) -> Rounding:
    """Round every FLOAT value between nodes to BF16 (see the module docstring).

    ``keeps``: whether a node computes in FP32. ``original``: ids of the nodes before graph.apply; the Casts it added write BF16 weights already.
    """
    model, all_scopes = skeleton.model, skeleton.scopes
    names = Names(all_scopes)
    types = _types(model)
    edits, done = _Edits(), Rounding()
    declared: dict[int, set[str]] = {}
    for scope in all_scopes:
        body = scope.body
        here = set(body.input) if scope.is_function else {v.name for v in body.input}
        here.update(t.name for t in scope.initializers)
        here.update(o for n in body.node for o in n.output if o)
        declared[id(scope)] = here
    type_of = {id(s): t for s, t in zip(all_scopes, types)}
    rounded: set[tuple[int, str]] = set()  # (id(defining scope), name): values that hold BF16 values
    held: set[tuple[int, str]] = set()  # values a node hands on in FP32 (kept, or switched off): read as they are
    copies: dict[tuple[int, str, int], str] = {}  # (value, consumer scope) -> its rounded copy
    inline = {(id(s), t.name): t for s in all_scopes for t in s.initializers}  # weights and Constants, by key
    inline.update(((id(s), n.output[0]), constant_value(n)) for s in all_scopes for n in s.body.node
                  if n.output and constant_value(n) is not None)
    saturated: dict[tuple[int, str], np.ndarray | None] = {}

    def owner(scope: Scope, name: str) -> Scope | None:
        return next((s for s in scope.ancestors() if name in declared[id(s)]), None)

    def is_float(scope: Scope, name: str) -> tuple[bool, tuple[int, str] | None]:
        where = owner(scope, name)
        if where is None:
            return False, None
        return type_of[id(where)].get(name) == _FLOAT, (id(where), name)

    def clamps(key) -> bool:
        if key not in saturated:
            saturated[key] = _saturated(inline.get(key))
        return saturated[key] is not None

    def pair(scope, anchor, where, src, dst, switch, key=None):
        narrow, wide = names.new(f"{dst}_bf16"), names.new(f"{dst}_rounded") if switch else dst
        cast_from = src
        if key is not None and clamps(key):  # rounded as convert rounds it: saturated, not +-inf
            cast_from = names.new(f"{src}_saturated")
            scope.body.initializer.append(onnx.numpy_helper.from_array(saturated[key], cast_from))
        edits.add(scope, anchor, where, op_type="Cast", input=[cast_from], output=[narrow],
                  name=names.new(f"{dst}_to_bf16"),
                  attribute=[onnx.helper.make_attribute("to", onnx.TensorProto.BFLOAT16)])
        edits.add(scope, anchor, where, op_type="Cast", input=[narrow], output=[wide], name=names.new(f"{dst}_to_fp32"),
                  attribute=[onnx.helper.make_attribute("to", _FLOAT)])
        if switch:
            edits.add(scope, anchor, where, op_type="Where", input=[switch, wide, src], output=[dst],
                      name=names.new(f"{dst}_switch"))

    for scope in all_scopes:
        if scope.is_function:
            continue  # a local function's body is not edited: each call is one node, FP32 inside
        for node in list(scope.body.node):
            if id(node) not in original:  # graph.apply's Cast of a BF16 weight
                rounded.update((id(scope), o) for o in node.output if o)
                continue
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                continue
            float_outs = [(o, key) for o in node.output if o for flt, key in [is_float(scope, o)] if flt]
            done.untyped += sum(1 for o in node.output if o and owner(scope, o) is not None
                                and type_of[id(owner(scope, o))].get(o) is None)
            if keeps(node):  # FP32 inside and out: its consumers read its results as they are
                done.kept.append(node.name)
                held.update(key for _, key in float_outs)
                continue
            moves = node.op_type in MOVES and node.domain in DEFAULT_DOMAINS
            ins = []
            for index, name in enumerate(node.input):
                flt, key = is_float(scope, name) if name else (False, None)
                if flt and key not in rounded and key not in held:  # a graph input, an FP32 weight
                    ins.append((index, name, key))
            switch = ""
            # a move is switched only where it reads what nothing rounds yet (a weight, a graph input, a Constant):
            # its switch rounds that, as the emulation does unless the move is kept (the weight's precision is the
            # move's, not its consumers': a consumer kept FP32 reads a BF16 table through a Gather)
            if switches and ((float_outs and ins) if moves else (float_outs or ins)):
                switch = names.new(f"bf16_switch_{len(done.switches)}")
                done.switches.append((switch, node.name))
                done.switch_ops.append(node.op_type)
            elif switches and moves:
                ins = []  # no results to round (Shape, Size)
            if switch and moves and len(ins) == sum(is_float(scope, n)[0] for n in node.input if n) \
                    and not any(clamps(key) for _, _, key in ins):
                ins, moves = [], False  # all it reads is unrounded: round what it hands on (a Gather's rows, not
                # its table, each run), as a computing node does; the same values, moves being exact in BF16
            for index, name, key in ins:
                memo = (*key, id(scope))
                copy = None if switch else copies.get(memo)
                if copy is None:
                    copy = names.new(f"{name}_as_bf16")
                    pair(scope, node, 0, name, copy, switch, key)
                    copies[memo] = copy
                    done.inputs += 1
                node.input[index] = copy
            if moves:  # exact on what it reads: BF16 stays BF16, FP32 (a kept node's, a switch's) stays FP32
                reads = {is_float(scope, n)[1] for n in node.input if n}
                (held if switch or reads & held else rounded).update(key for _, key in float_outs)
                continue
            for o, key in float_outs:
                index = list(node.output).index(o)
                raw = names.new(f"{o}_fp32")
                node.output[index] = raw
                pair(scope, node, 2, raw, o, switch)
                (held if switch else rounded).add(key)  # a switched value may be FP32
                done.outputs += 1
    edits.apply()
    for name, _ in done.switches:
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, []))
    return done
