"""The side-by-side table an evaluation prints: the FP32 source against the BF16 model."""

from __future__ import annotations

from olive_bf16_pass.evaluation.sessions import REFERENCE_PROVIDER

__all__ = ["side_by_side"]


def side_by_side(results: dict[str, float], provider: str) -> str:
    """FP32 source and BF16 model in two columns: what the quickstart prints at the end."""
    mb = 1 / 2**20
    rows = [
        ("size on disk (MB)", results["size-source_bytes"] * mb, results["size-bytes"] * mb,
         f"{results['size-ratio']:.3f}x"),
        ("latency p50 (ms)", results["latency-source_p50"], results["latency-p50"],
         f"{results['latency-p50'] / results['latency-source_p50']:.2f}x"),
        ("latency p90 (ms)", results["latency-source_p90"], results["latency-p90"],
         f"{results['latency-p90'] / results['latency-source_p90']:.2f}x"),
    ]
    for name, value in results.items():
        if name.startswith(("fidelity-", "retrieval-")):
            reference = 0.0 if name.endswith("max_abs_diff") else 1.0
            rows.append((name, reference, value, ""))
    # the reference runs wholly on the CPU EP by construction; it has no NPU subgraphs
    rows += [(name, 1.0 if name.endswith("share") else "-", results[name], "")
             for name in ("placement-ep_op_share", "placement-npu_subgraphs") if name in results]
    head = ("", f"FP32 ({REFERENCE_PROVIDER})", f"BF16 ({provider})", "ratio")
    width = max(len(r[0]) for r in rows)
    lines = [f"{head[0]:<{width}}  {head[1]:>26}  {head[2]:>26}  {head[3]:>7}"]
    lines += [f"{n:<{width}}  {_cell(a)}  {_cell(b)}  {r:>7}" for n, a, b, r in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:>26}" if isinstance(value, str) else f"{value:>26.6g}"
