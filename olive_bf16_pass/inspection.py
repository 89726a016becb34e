"""What a model holds and what ``convert`` would do to it, without writing anything: the plan, printed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from olive_bf16_pass import dtypes, traversal
from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.gc_pause import gc_paused
from olive_bf16_pass.io.source import SourceModel, external_info, read_model
from olive_bf16_pass.opset import MIN_OPSET, main_opset
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.plan import Plan, make_plan
from olive_bf16_pass.report import group_kept, human_size

__all__ = ["inspect_model"]


@gc_paused()
def inspect_model(path: str | Path, options: ConversionOptions | None = None) -> dict:
    """A dict of figures plus ``text``, a human rendering of them; ``options`` as ``convert`` would take them."""
    source = read_model(path)
    plan = make_plan(source.skeleton, options or ConversionOptions())
    info = {"path": str(path), **_holdings(source, plan), **_verdict(plan)}
    from olive_bf16_pass.vitisai.readiness import check_source  # the same verdict as olive-bf16 check's

    info["vitisai"] = check_source(source, plan.options, None, str(path), plan).to_dict()
    info["text"] = _text(info, plan)
    return info


def _holdings(source: SourceModel, plan: Plan) -> dict:
    """What the file holds, as read (before any upgrade)."""
    model = source.model
    external_files: Counter = Counter()
    if plan.skeleton is source.skeleton:  # by data type number, every tensor once: named once at the end
        nbytes, tensors = Counter(plan.tensor_bytes), Counter(plan.tensor_counts)
    else:  # the plan is an opset upgrade's: the file's own tensors are counted here
        nbytes, tensors = Counter(), Counter()
        for tensor in traversal.iter_tensors(model, source.scopes):
            nbytes[tensor.data_type] += dtypes.expected_nbytes(tensor) or 0
            tensors[tensor.data_type] += 1
    for tensor in traversal.iter_tensors(model, source.scopes):
        if tensor.data_location == onnx.TensorProto.EXTERNAL and source.where(tensor)[0] != source.file:
            external_files[external_info(tensor)["location"]] += source.where(tensor)[2]
    by_dtype, count = _named(nbytes), _named(tensors)
    opset = main_opset(model)
    return {
        "file_bytes": source.file_bytes,
        "ir_version": model.ir_version,
        "opset": opset,
        "opset_ok": (opset or MIN_OPSET) >= MIN_OPSET,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": sum(len(s.body.node) for s in source.scopes),
        "tensor_bytes_by_dtype": dict(by_dtype),
        "tensor_count_by_dtype": dict(count),
        "external_data_files": dict(external_files),
        "sparse_initializers": sum(len(s.body.sparse_initializer) for s in source.scopes if not s.is_function),
    }


def _named(by_type: Counter) -> Counter:
    named: Counter = Counter()
    for data_type, value in by_type.items():
        named[dtypes.data_type_name(data_type)] += value
    return named


def _verdict(plan: Plan) -> dict:
    """What convert would do: the plan's figures, under the names the JSON has always had."""
    groups = group_kept(plan.kept)
    return {
        "would_convert": len(plan.chosen),
        "would_keep": len(plan.kept),
        "bytes_saved": plan.saved_bytes,
        "keep_reasons": {g.reason: g.count for g in groups},
        "convert_refuses": list(plan.refusals),
        "converts": [{"name": d.name, "scope": d.scope.label} for d in plan.chosen],
        "warnings": list(plan.warnings),
        "opset_upgrade": plan.opset_upgrade,
    }


def _text(info: dict, plan: Plan) -> str:
    count, by_dtype = Counter(info["tensor_count_by_dtype"]), Counter(info["tensor_bytes_by_dtype"])
    external = info["external_data_files"]
    lines = [
        f"{info['path']}: {human_size(info['file_bytes'])}, IR {info['ir_version']}, opset {info['opset']}"
        + ("" if info["opset_ok"] else f" (below {MIN_OPSET}: convert upgrades it, or refuses with "
                                        "upgrade_opset=false)"),
        f"producer: {info['producer'] or '-'}; {info['nodes']} nodes",
        "tensors by dtype:",
        *(f"  {k:<10} {count[k]:>5} tensors {human_size(v):>12}" for k, v in by_dtype.most_common()),
        "external data: " + (", ".join(f"{k} ({human_size(v)})" for k, v in external.items()) if external else "none"),
        *(f"warning: {w}" for w in plan.warnings),
        _vitisai_line(info["vitisai"]),
    ]
    if plan.refusals:
        lines.append("convert will refuse this model: " + "; ".join(plan.refusals))
        return "\n".join(lines)
    kept = info["keep_reasons"]
    lines += [
        f"convert would turn {len(plan.chosen)} tensors to bfloat16, saving {human_size(plan.saved_bytes)}, "
        f"and keep {len(plan.kept)}" + (":" if kept else ""),
        *(f"  {n:>5}  {r}" for r, n in list(kept.items())[:8]),
    ]
    return "\n".join(lines)


def _vitisai_line(verdict: dict) -> str:
    """The Vitis AI readiness verdict in one line; olive-bf16 check prints its lines."""
    state = "ready" if verdict["ready"] else "not ready"
    kinds = [f["kind"] for f in verdict["blockers"]]
    detail = f" ({', '.join(dict.fromkeys(kinds))})" if kinds else ""
    return (f"Ryzen AI NPU (Vitis AI EP): {state}{detail}, {len(verdict['warnings'])} warnings; "
            f"olive-bf16 check MODEL --target vitisai says why")
