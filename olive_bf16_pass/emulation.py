"""BF16 compute, emulated on FP32 kernels: a diagnostic model that ONNX Runtime's CPU EP runs as a BF16 device computes.

The convert pipeline (read -> plan -> graph.apply -> stream -> check, with convert's guards,
guards.py) with one more edit on the skeleton: every weight is rounded to BF16
(``min_elements=0``), and every floating tensor between nodes is rounded to BF16
(rounding_points.py says where and how), so that each node reads BF16 values, computes in FP32 (as
BF16 devices accumulate) and hands on a BF16 result. Nodes kept in FP32 (by op type or name) keep
their FP32 weights and hand on FP32 results.

With ``switches``, weights stay FP32 in the file and every rounding point of a node is under a
boolean graph input of that node, so one session runs any mix of BF16 and FP32 nodes
(sensitivity.py). The node lists this module reads and writes are those the emulation, convert
(``node_block_list``) and the Olive pass all accept.
ONNX Runtime keeps the Cast pairs at every optimization level (tests/test_emulation.py proves it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from olive_bf16_pass import graph, guards
from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.io.destination import Destination
from olive_bf16_pass.io.source import read_model
from olive_bf16_pass.io.streamer import Conversion, Streamer
from olive_bf16_pass.io.writer import ExternalDataSpec, write_model
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.rounding_points import Rounding, add_rounding

__all__ = [
    "EMULATION_KEY", "EMULATION_NOTE", "EmulationOptions", "EmulationReport", "emulate_file", "read_node_list",
    "write_node_list",
]

logger = logging.getLogger(__name__)

EMULATION_KEY = "olive_bf16_pass.emulation"
EMULATION_NOTE = "diagnostic: BF16 compute emulated on FP32 kernels"


@dataclass(frozen=True)
class EmulationOptions:
    """Which nodes compute in FP32 (by op type or node name); every other node computes in BF16."""

    keep_op_types: tuple[str, ...] = ()
    keep_nodes: tuple[str, ...] = ()
    rounding: str = "nearest_even"  # of the weights, as convert rounds them

    def __post_init__(self):
        for name in ("keep_op_types", "keep_nodes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a list of names, not the string {value!r}")  # noqa: TRY004
            object.__setattr__(self, name, tuple(value or ()))

    def keeps(self, node: onnx.NodeProto) -> bool:
        return node.op_type in self.keep_op_types or (bool(node.name) and node.name in self.keep_nodes)

    def weight_options(self) -> ConversionOptions:
        """Every float weight to BF16, except the inputs of kept nodes (Olive's block-list words)."""
        return ConversionOptions(rounding=self.rounding, min_elements=0, op_block_list=self.keep_op_types,
                                 node_block_list=self.keep_nodes)


@dataclass
class EmulationReport:
    source: str
    destination: list[str]
    rounding: Rounding
    weights_converted: int
    seconds: float

    def summary(self) -> str:
        r = self.rounding
        return (f"emulated BF16 compute: {self.weights_converted} weights rounded to BF16, {r.outputs} node outputs "
                f"and {r.inputs} inputs rounded between nodes, {len(r.kept)} nodes kept in FP32"
                + (f", {r.untyped} outputs of unknown type left FP32" if r.untyped else "")
                + f" ({self.seconds:.1f} s). A diagnostic model: run it on ONNX Runtime's CPU EP, do not deploy it.")


def _mark(model: onnx.ModelProto, options: EmulationOptions, done: Rounding) -> None:
    props = {p.key: p for p in model.metadata_props}
    entries = {EMULATION_KEY: EMULATION_NOTE,
               EMULATION_KEY + ".kept_nodes": json.dumps(done.kept),
               EMULATION_KEY + ".kept_op_types": json.dumps(list(options.keep_op_types))}
    for key, value in entries.items():
        if key in props:
            props[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)


def emulate_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    options: EmulationOptions | None = None,
    *,
    save_as_external_data: bool = False,
    external_data_name: str | None = None,
    switches: bool = False,
    progress=None,
) -> EmulationReport:
    """Write to ``dst`` the model at ``src`` as a BF16 device computes it (a diagnostic; see the module docstring).

    Weights stream from ``src`` rounded to BF16, with the bounded memory of convert_file; ``src`` is
    never modified and ``dst`` appears only when complete and checked by onnx.checker.
    """
    options = options or EmulationOptions()
    started = time.perf_counter()
    src = Path(src)
    destination = Destination(Path(dst), external_data_name if save_as_external_data else None)
    if guards.same_file(src, destination.model):
        raise ConversionError(f"{destination.model}: the output is the input. Choose another output path.")
    source = read_model(src)
    guards.refuse_overwriting_input(source, destination)
    weights = options.weight_options()
    if switches:  # weights stay FP32 in the file; each reader rounds them under its own switch
        weights = ConversionOptions(rounding=options.rounding, min_elements=0, include_initializers=(),
                                    convert_constants=False)
    plan = guards.checked_plan(source.skeleton, weights)
    alive = [n for s in plan.skeleton.scopes for n in s.body.node]  # alive: their ids name them
    original = {id(n) for n in alive}
    converted = graph.apply(plan.skeleton.model, plan.skeleton.scopes, plan.chosen, weights)
    done = add_rounding(plan.skeleton, options.keeps, original, switches)
    del alive
    _mark(plan.skeleton.model, options, done)
    conversions = {id(c.definition.tensor): Conversion(c.definition.tensor, c.stats) for c in converted if c.on_disk}
    streamer = Streamer(source.where, weights.rounding, weights.saturate)
    streamer.progress = progress
    written = write_model(
        plan.skeleton, destination, streamer, conversions,
        ExternalDataSpec() if save_as_external_data else None,
        check=lambda tmp: guards.check_output(tmp, lambda: read_model(src).model),
    )
    if done.untyped:
        logger.warning("%d node outputs have no known type (onnx shape inference could not type them); they are "
                       "left FP32 in the emulation", done.untyped)
    return EmulationReport(str(src), [str(p) for p in written.files], done, len(converted),
                           time.perf_counter() - started)


def write_node_list(path: str | os.PathLike, nodes: list[str], **about) -> None:
    """A node list as JSON that the emulation (--keep-nodes-from), convert (node_block_list) and an Olive
    pass config all read: ``{"node_block_list": [...], ...about}``."""
    Path(path).write_text(json.dumps({"node_block_list": list(nodes), **about}, indent=1) + "\n", encoding="utf-8")


def read_node_list(path: str | os.PathLike) -> list[str]:
    """Node names from a JSON file (``{"node_block_list": [...]}`` or a list) or a text file (one a line)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    nodes = data.get("node_block_list") if isinstance(data, dict) else data
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise ValueError(f"{path}: expected a JSON list of node names or an object with a 'node_block_list' list")
    return nodes
