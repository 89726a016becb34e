"""The three fidelity figures, against FP32: weight-only BF16, emulated BF16 compute, and a device's own output.

Olive-free (numpy, plus emulation.py to build the emulated model): the evaluators, the recipes'
CPU runs and the catalog tables hand arrays here and print what comes back.

- ``weight_only``: FP32 arithmetic on BF16-rounded weights, what ``convert`` ships;
- ``emulated``: BF16 compute as emulation.py models it (rounding between nodes, FP32 inside), what an
  NPU-class device should get;
- ``device`` (a Vitis AI run): the NPU's own output, against FP32 and against the emulation.

A device much further from the emulation than the emulation is from FP32 is flagged as a likely
miscompile. The threshold, ``MISCOMPILE_FACTOR`` = 100 with a floor of 1e-5 on the emulation's gap:
a sound NPU differs from the emulation by its own exp / erf / rsqrt / softmax approximations and
accumulation order, which the figures put at about 10x the emulation's gap (NetEase's BCE sample on
a Ryzen AI NPU, mean cosine 0.99928, a gap of 7.2e-4, against emulated gaps of 1e-5 to 1e-4 here);
miscompiles reported (RyzenAI-SW #390) give cosines of 0.9 and below, gaps of 1e-1. A factor of 100
sits between the two with a decade of margin on each side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# defined in evaluation/metrics.py (standard library only), which the gate reads on cached runs
from olive_bf16_pass.evaluation.metrics import MISCOMPILE_FACTOR, MISCOMPILE_FLOOR

__all__ = ["MISCOMPILE_FACTOR", "MISCOMPILE_FLOOR", "emulated_model", "three_figures"]


def _gap(figures: dict) -> float:
    """How far apart, as one number that grows with the disagreement: 1 - mean cosine, or 1 - Spearman."""
    return 1.0 - figures["cosine_mean"] if "cosine_mean" in figures else 1.0 - figures["spearman"]


def three_figures(reference, weight_only, emulated, device=None, *, kind: str = "embedding", top_k: int = 10,
                  factor: float = MISCOMPILE_FACTOR, floor: float = MISCOMPILE_FLOOR, queries: int | None = None) -> dict:
    """The figures of each model against FP32 (``reference``), and the device's against the emulation.

    Arrays as the agreement functions take them: pooled embeddings ``[texts, hidden]`` (``kind``
    "embedding"; ``queries`` as embedding_agreement takes it) or scores ``[queries, candidates]``
    ("reranker"). ``device``: the NPU's output, or None.
    """
    from olive_bf16_pass.evaluation.agreement import embedding_agreement, reranker_agreement

    def agree(a, b):
        return embedding_agreement(a, b, top_k, queries) if kind == "embedding" else reranker_agreement(a, b)

    out = {"weight_only": agree(reference, weight_only), "emulated": agree(reference, emulated)}
    if device is None:
        return out
    out["device"] = agree(reference, device)
    out["device_vs_emulated"] = agree(emulated, device)
    emulated_gap, device_gap = _gap(out["emulated"]), _gap(out["device_vs_emulated"])
    bound = factor * max(emulated_gap, floor)
    out["miscompile"] = {
        "flagged": bool(device_gap > bound or not np.isfinite(device_gap)),
        "device_gap": device_gap, "emulated_gap": emulated_gap, "threshold": bound, "factor": factor,
        "why": (f"the device's output is {device_gap:.2e} from the emulation (1 - agreement), more than {factor:g}x "
                f"the emulation's {emulated_gap:.2e} from FP32: a likely miscompile; compare per layer, report it "
                "with the model" if device_gap > bound else "the device is as close to the emulation as expected"),
    }
    return out


def emulated_model(source: str | os.PathLike, folder: str | os.PathLike, keep_nodes=()) -> Path:
    """The emulated BF16-compute model of ``source`` in ``folder`` (made once; reused while newer than it)."""
    from olive_bf16_pass.emulation import EmulationOptions, emulate_file

    source, path = Path(source), Path(folder) / "emulated_bf16_compute.onnx"
    if not path.exists() or path.stat().st_mtime < source.stat().st_mtime or keep_nodes:
        path.parent.mkdir(parents=True, exist_ok=True)
        emulate_file(source, path, EmulationOptions(keep_nodes=tuple(keep_nodes)))
    return path
