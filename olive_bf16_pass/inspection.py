"""What a model holds and what ``convert`` would do to it, without writing anything."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from olive_bf16_pass import graph, selection, traversal
from olive_bf16_pass.gc_pause import gc_paused
from olive_bf16_pass.io.source import external_info, read_model
from olive_bf16_pass.validation import unknown_types
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.report import human_size, reason_group


@gc_paused()
def inspect_model(path: str | Path, min_elements: int = 1024) -> dict:
    """A dict of figures plus ``text``, a human rendering of them."""
    source = read_model(path)
    model = source.model
    by_dtype: Counter = Counter()
    count: Counter = Counter()
    external_files: Counter = Counter()
    all_scopes = source.scopes
    for tensor in traversal.iter_tensors(model, all_scopes):
        name = traversal.data_type_name(tensor.data_type)
        by_dtype[name] += traversal.expected_nbytes(tensor) or 0
        count[name] += 1
        if tensor.data_location == onnx.TensorProto.EXTERNAL and source.where(tensor)[0] != source.file:
            info = external_info(tensor)
            external_files[info["location"]] += int(info.get("length", 0))
    found = traversal.definitions(all_scopes)
    # read_model refused corrupt names and data; a type this onnx does not know is shown, not raised
    options = ConversionOptions(min_elements=min_elements)
    chosen, skipped = selection.select(model, all_scopes, found, options)
    sparse = sum(len(s.body.sparse_initializer) for s in all_scopes if not s.is_function)
    unknown = unknown_types(all_scopes)
    refusals = []
    if unknown:
        refusals.append(unknown[0] + (f" ({len(unknown) - 1} more like it)" if len(unknown) > 1 else ""))
    if sparse:
        refusals.append(f"{sparse} sparse initializer(s)")
    if not chosen and any(s.reason.startswith("dtype float16") for s in skipped):
        refusals.append("float16 weights and no float32 ones")
    saved = sum(c.size * 2 for c in chosen)
    reasons = Counter(reason_group(s.reason) for s in skipped)
    info = {
        "path": str(path),
        "file_bytes": source.file_bytes,
        "ir_version": model.ir_version,
        "opset": graph.main_opset(model),
        "opset_ok": (graph.main_opset(model) or graph.MIN_OPSET) >= graph.MIN_OPSET,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "nodes": sum(len(s.body.node) for s in all_scopes),
        "tensor_bytes_by_dtype": dict(by_dtype),
        "tensor_count_by_dtype": dict(count),
        "external_data_files": dict(external_files),
        "would_convert": len(chosen),
        "would_keep": len(skipped),
        "bytes_saved": saved,
        "keep_reasons": dict(reasons),
        "sparse_initializers": sparse,
        "convert_refuses": refusals,
    }
    lines = [
        f"{path}: {human_size(source.file_bytes)}, IR {model.ir_version}, opset {info['opset']}"
        + ("" if info["opset_ok"] else f" (below {graph.MIN_OPSET}: convert upgrades it, or refuses with "
                                        "--no-upgrade-opset)"),
        f"producer: {info['producer'] or '-'}; {info['nodes']} nodes",
        "tensors by dtype:",
        *(f"  {k:<10} {count[k]:>5} tensors {human_size(v):>12}" for k, v in by_dtype.most_common()),
        "external data: "
        + (", ".join(f"{k} ({human_size(v)})" for k, v in external_files.items()) if external_files else "none"),
    ]
    if refusals:
        lines.append("convert will refuse this model: " + "; ".join(refusals))
    else:
        lines += [
            f"convert would turn {len(chosen)} tensors to bfloat16, saving {human_size(saved)}, "
            f"and keep {len(skipped)}" + (":" if skipped else ""),
            *(f"  {n:>5}  {r}" for r, n in reasons.most_common(8)),
        ]
    info["text"] = "\n".join(lines)
    return info
