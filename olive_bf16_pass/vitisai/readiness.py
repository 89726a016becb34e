"""Is this model ready for the Vitis AI EP (Ryzen AI NPU)? One verdict, before anything compiles.

``check_model`` reads the model as a skeleton (big tensors stay on disk, no ONNX Runtime needed),
asks ``plan.make_plan`` what a conversion with these options would do (the same plan ``convert``
executes), and returns a :class:`Verdict`: blockers and warnings, each a kind and one line with
the way out. The CLI prints it (``olive-bf16 check``), the Olive pass raises on it, ``inspect``
shows its first line.

Sources: field notes sections 4 and 8; AMD's BF16 samples export opset 17, static 1 x 512,
int64 ``input_ids`` / ``attention_mask``, one file (RyzenAI-SW gte, DistilBERT, BGE;
BCEmbedding Docs/RyzenAI); RyzenAI-SW issues #224/#309 (no dynamic shapes), #320 (over 2 GB or
external data fails); operators.py and npu.py for the table and the NPU generations.
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.dtypes import data_type_name
from olive_bf16_pass.io.source import SourceModel, read_model
from olive_bf16_pass.opset import main_opset
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.plan import Plan, make_plan
from olive_bf16_pass.providers import VITISAI
from olive_bf16_pass.report import human_size
from olive_bf16_pass.selection import KeepKind
from olive_bf16_pass.vitisai import npu as npu_module
from olive_bf16_pass.vitisai.operators import SAMPLES_RUN, TABLE_SOURCE, outside_table

__all__ = ["AMD_OPSET", "AS_IS", "TARGETS", "Finding", "Verdict", "check_model", "check_source"]

TARGETS = ("vitisai",)
# a model judged as it will be compiled, not as a conversion would make it: storage float32 changes no
# tensor's size or type, so the plan's projected size is the file's (the compile command and pass use it)
AS_IS = ConversionOptions(storage="float32")
AMD_OPSET = 17  # AMD's BF16 samples export at opset 17
SIZE_LIMIT = 2 << 30  # the EP loads single-file models under 2 GB (RyzenAI-SW #320)
_SAMPLE_INPUT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.FLOAT)
_FLOAT16 = onnx.TensorProto.FLOAT16
_QUANTIZED_TYPES = frozenset({
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
    onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ,
})
_QUANTIZE_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulInteger",
    "ConvInteger", "MatMulNBits", "DynamicQuantizeMatMul", "QGemm", "QAttention",
})


@dataclass(frozen=True)
class Finding:
    kind: str  # stable key: "dynamic_shape", "external_data", "too_large", "opset", "input_type", "operator",
    # "float16_weights", "quantized_weights", "npu", "refused", "bf16_layout"
    line: str  # the problem and the way out, one line


@dataclass
class Verdict:
    """Blockers stop a compile (not ready); warnings are worth reading but may compile."""

    model: str
    target: str = VITISAI
    blockers: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    npu: str | None = None  # the NPU generation this machine reported, when it did

    @property
    def ready(self) -> bool:
        return not self.blockers

    def headline(self) -> str:
        counts = []
        if self.blockers:
            counts.append(f"{len(self.blockers)} blocker{'s' * (len(self.blockers) != 1)}")
        if self.warnings:
            counts.append(f"{len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}")
        state = "ready" if self.ready else "not ready"
        return f"{state} for {self.target}" + (f" ({', '.join(counts)})" if counts else "") + f": {self.model}"

    def lines(self) -> list[str]:
        return [self.headline(), *(f"blocker: {f.line}" for f in self.blockers),
                *(f"warning: {f.line}" for f in self.warnings)]

    def text(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict:
        return {"model": self.model, "target": self.target, "ready": self.ready, "npu": self.npu,
                "blockers": [vars(f) for f in self.blockers], "warnings": [vars(f) for f in self.warnings]}


def check_model(path: str | Path, options: ConversionOptions | None = None,
                detect_npu: Callable[[], str | None] | None = npu_module.detect_npu) -> Verdict:
    """The verdict on the model at ``path`` converted with ``options`` (the defaults: what convert does)
    and compiled by the Vitis AI EP. ``detect_npu`` None: do not look at this machine's NPU."""
    return check_source(read_model(path), options or ConversionOptions(), detect_npu, str(path))


def check_source(source: SourceModel, options: ConversionOptions,
                 detect_npu: Callable[[], str | None] | None = None, name: str | None = None,
                 plan: Plan | None = None) -> Verdict:
    """The verdict on ``source``; ``plan``: its plan with ``options``, when the caller has made it already."""
    plan = make_plan(source.skeleton, options) if plan is None else plan
    verdict = Verdict(name or str(source.path))
    block, warn = verdict.blockers.append, verdict.warnings.append
    for line in plan.refusals:
        block(Finding("refused", f"convert refuses this model: {line}"))
    feeds = _feeds(source.model)
    ops = Counter(op for s in source.scopes for op in map(_DOMAIN_AND_OP, s.body.node))  # one walk of the nodes
    _shapes(feeds, block)
    _size(source, plan, block)
    opset = main_opset(source.model)
    if opset is not None and opset < AMD_OPSET:
        block(Finding("opset", f"ONNX opset {opset}: AMD's BF16 samples export at opset {AMD_OPSET}. Export again "
                               f"with opset {AMD_OPSET} (torch.onnx.export(..., opset_version={AMD_OPSET}); Olive's "
                               f"OnnxConversion target_opset: {AMD_OPSET})."))
    _input_types(feeds, warn)
    _weights(source, plan, ops, block)
    _operators(ops, warn)
    _layout(plan, warn)
    if detect_npu is not None:
        verdict.npu = detect_npu()
        if verdict.npu == "PHX/HPT":
            block(Finding("npu", "this machine's NPU is Phoenix / Hawk Point (PCI 1022:1502), which has no BF16: BF16 "
                                 "runs on Strix / Krackan (STX/KRK) and later. Run the model there, or use an INT8 "
                                 "(Quark) model on this one."))
    return verdict


def _dims(value: onnx.ValueInfoProto) -> list[str] | None:
    """The names of a value's dynamic dims ("?" for an unnamed one), or None when its shape is unknown."""
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_param or "?" for d in t.shape.dim if not d.HasField("dim_value")]


_DOMAIN_AND_OP = operator.attrgetter("domain", "op_type")


def _feeds(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds: those without an initializer of their name."""
    inputs = list(model.graph.input)
    names = {value.name for value in inputs}
    initialized = {name for t in model.graph.initializer if (name := t.name) in names}
    return [value for value in inputs if value.name not in initialized]


def _shapes(feeds: list[onnx.ValueInfoProto], block) -> None:
    dynamic: dict[str, list[str]] = {}
    for value in feeds:
        dims = _dims(value)
        if dims is None:
            dynamic[value.name] = ["(no shape)"]
        elif dims:
            dynamic[value.name] = dims
    if not dynamic:
        return
    names = sorted({d for dims in dynamic.values() for d in dims if d not in ("?", "(no shape)")})
    where = ", ".join(f"{k} [{', '.join(v)}]" for k, v in dynamic.items())
    values = [1 if "batch" in n.lower() else 512 for n in names]  # AMD's samples: batch 1, sequence 512
    fix = (f"Olive's DynamicToFixedShape (\"dim_param\": {json.dumps(names)}, \"dim_value\": {json.dumps(values)})"
           if names else "Olive's DynamicToFixedShape (input_name / input_shape)")
    block(Finding("dynamic_shape", f"dynamic input dims: {where}. The Vitis AI EP compiles static shapes only "
                                   f"(RyzenAI-SW #224, #309): fix them with {fix}, or export static 1 x 512 as AMD's "
                                   "BF16 samples do."))


def _size(source: SourceModel, plan: Plan, block) -> None:
    external = sorted(p.name for p in source.files if p != source.file)
    total = source.file_bytes
    after = total - plan.saved_bytes
    if external:
        shown = ", ".join(external[:3]) + (f", +{len(external) - 3} more" if len(external) > 3 else "")
        way = ("convert it into one file (olive-bf16 convert MODEL OUT without --external-data; "
               "Olive: save_as_external_data false)" if after < SIZE_LIMIT else "make it smaller first")
        block(Finding("external_data", f"the model keeps its weights in external data ({shown}; "
                                       f"{human_size(total)} in all): the Vitis AI EP loads single-file models only "
                                       f"(RyzenAI-SW #320); {way}."))
    if after >= SIZE_LIMIT:
        way_out = ("Convert with storage=bfloat16 (half the weight bytes), or use a smaller model."
                   if plan.options.storage == "float32" else "Use a smaller model (or fewer FP32 tensors kept).")
        note = f" ({human_size(after)} after conversion)" if after != total else ""
        block(Finding("too_large", f"the model is {human_size(total)}{note}: the Vitis AI EP cannot load a model of "
                                   "2 GB or more (RyzenAI-SW #320). " + way_out))


def _input_types(feeds: list[onnx.ValueInfoProto], warn) -> None:
    odd = [f"{v.name} ({data_type_name(v.type.tensor_type.elem_type)})" for v in feeds
           if v.type.tensor_type.elem_type not in _SAMPLE_INPUT_TYPES]
    if odd:
        warn(Finding("input_type", f"input types AMD's BF16 samples do not use: {', '.join(odd)}; they take int64 "
                                   "input_ids / attention_mask (or float32 tensors). Export with int64 inputs if "
                                   "the compile fails."))


def _weights(source: SourceModel, plan: Plan, ops: Counter, block) -> None:
    fp16 = [k.definition.name for k in plan.kept if k.kind is KeepKind.OTHER_DTYPE
            and k.definition.tensor.data_type == _FLOAT16] if _FLOAT16 in plan.tensor_counts else []
    if fp16 and not any("float16" in r for r in plan.refusals):
        block(Finding("float16_weights", f"{len(fp16)} float16 weights ({', '.join(fp16[:3])}) are mixed in: "
                                         "no AMD BF16 sample mixes FP16 and BF16. Convert from the FP32 export "
                                         "(drop the FP16 pass)."))
    quantized = sorted({t.name for s in source.scopes for t in s.initializers if t.data_type in _QUANTIZED_TYPES}
                       if _QUANTIZED_TYPES & plan.tensor_counts.keys() else ())  # the plan's tally: none, no walk
    qops: Counter = Counter()
    for (_, op_type), count in ops.items():
        if op_type in _QUANTIZE_OPS:
            qops[op_type] += count
    if quantized or qops:
        what = ", ".join(f"{op} x{n}" for op, n in qops.most_common(3)) or ", ".join(quantized[:3])
        block(Finding("quantized_weights", f"quantized weights or ops are mixed in ({what}): the BF16 flow takes a "
                                           "float model, INT8 models take another (Quark) flow. Convert from the FP32 "
                                           "export, before any quantization."))


def _operators(ops: Counter, warn) -> None:
    outside = outside_table(ops)
    if not outside:
        return
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(outside.items(), key=lambda kv: -kv[1])[:8])
    more = f", +{len(outside) - 8} more" if len(outside) > 8 else ""
    seen = sorted(SAMPLES_RUN & set(outside))
    aside = f" ({', '.join(seen)} run in AMD's own BF16 samples)" if seen else ""
    warn(Finding("operator", f"ops outside AMD's published BF16 table: {listed}{more}{aside}. The table "
                             f"({TABLE_SOURCE}) is incomplete, so this may compile; after compiling, check the EP's "
                             "operator report for ops left on the CPU."))


def _layout(plan: Plan, warn) -> None:
    already = KeepKind.ALREADY_BF16 in plan.kept.kinds()
    if already or (plan.chosen and plan.options.storage == "bfloat16"):
        warn(Finding("bf16_layout", "BF16 initializers widened by a Cast (storage=bfloat16) appear in no AMD sample; "
                                    "AMD documents FP32 as the compiler's input. storage=float32 (--storage float32) "
                                    "writes the same rounded weights as FP32, the documented form."))
