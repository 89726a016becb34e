"""The side-by-side table an evaluation prints: the FP32 source, the BF16 model, the emulated BF16 compute.

Made from the metrics alone (evaluation/metrics.py's names), so the gate prints the same table for
metrics Olive loaded from its cache. A column appears where its figures were measured: the emulated
BF16 compute (``emulate``, the default), and on a device run the BF16 model on the CPU (weights only)
and the device against the emulation.
"""

from __future__ import annotations

from olive_bf16_pass.evaluation.metrics import MISCOMPILE_RATIO, VARIANT_LABELS, split, variant_name
from olive_bf16_pass.evaluation.sessions import REFERENCE_PROVIDER

__all__ = ["side_by_side"]

_ORDER = ("emulated", "weight_only", "device_vs_emulated")  # the columns after FP32 and the model under test


def side_by_side(results: dict[str, float], provider: str) -> str:
    """FP32 source, BF16 model and the other figures in columns: what a run prints at the end."""
    mb = 1 / 2**20
    variants = [v for v in _ORDER if any(split(k)[1] == v for k in results)]
    blank = [""] * len(variants)
    rows = [
        ("size on disk (MB)", results["size-source_bytes"] * mb, results["size-bytes"] * mb, *blank,
         f"{results['size-ratio']:.3f}x"),
        ("latency p50 (ms)", results["latency-source_p50"], results["latency-p50"], *blank,
         f"{results['latency-p50'] / results['latency-source_p50']:.2f}x"),
        ("latency p90 (ms)", results["latency-source_p90"], results["latency-p90"], *blank,
         f"{results['latency-p90'] / results['latency-source_p90']:.2f}x"),
    ]
    for name, value in results.items():
        if name.startswith(("fidelity-", "retrieval-")) and split(name)[1] is None and name != MISCOMPILE_RATIO:
            reference = 0.0 if name.endswith("max_abs_diff") else 1.0
            rows.append((name, reference, value, *(results.get(variant_name(name, v), "-") for v in variants), ""))
    if MISCOMPILE_RATIO in results:  # the device's gap from the emulation over the emulation's from FP32
        rows.append((MISCOMPILE_RATIO, "", "", *(results[MISCOMPILE_RATIO] if v == "device_vs_emulated" else ""
                                                   for v in variants), ""))
    # the reference runs wholly on the CPU EP by construction; it has no NPU subgraphs
    rows += [(name, 1.0 if name.endswith("share") else "-", results[name], *blank, "")
             for name in ("placement-ep_op_share", "placement-npu_subgraphs") if name in results]
    head = ("", f"FP32 ({REFERENCE_PROVIDER})", f"BF16 ({provider})", *(VARIANT_LABELS[v] for v in variants), "ratio")
    widths = [max(len(r[i]) if isinstance(r[i], str) else 12 for r in (head, *rows)) for i in range(len(head))]
    widths[1:-1] = [max(w, 14) for w in widths[1:-1]]

    def line(row):
        cells = [f"{row[0]:<{widths[0]}}"]
        cells += [f"{_cell(v):>{w}}" for v, w in zip(row[1:-1], widths[1:-1])]
        return "  ".join([*cells, f"{row[-1]:>{widths[-1]}}"]).rstrip()

    return "\n".join(line(r) for r in (head, *rows))


def _cell(value) -> str:
    return value if isinstance(value, str) else f"{value:.7g}"  # 7 digits: 0.9999999 is not 1
