"""The three fidelity figures in an evaluation: the emulated model's file, and the metrics of the runs.

An evaluation (the Olive evaluators, fidelity_base.py) runs the model under test and its FP32
source on the same feeds; with emulation on (the default) it also runs, on the CPU EP, the emulated
BF16-compute model of the source (emulation.py: weights and every tensor between nodes rounded to
BF16, FP32 inside each node), and where the model under test ran on another EP (a Vitis AI run)
the BF16 model itself on the CPU EP. :func:`fidelity_metrics` turns those outputs into the metrics
of evaluation/metrics.py with fidelity_figures.three_figures (the miscompile flag included).

The emulated model is made once per FP32 source and reused (:func:`emulated_model_file`): in Olive's
cache of the run (``OLIVE_CACHE_DIR``, which Olive sets while it runs; ``"clean_cache": true``
removes it with the rest), else in the temporary folder, in a folder named by the source's path,
size and modification time.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from olive_bf16_pass.evaluation.agreement import embedding_agreement, reranker_agreement
from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.evaluation.metrics import MISCOMPILE_FACTOR, figure_metrics

__all__ = ["emulated_model_file", "fidelity_metrics", "work_folder"]

KINDS = ("embedding", "reranker")


def work_folder(source: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Where the emulated model of ``source`` lives: under ``root``, Olive's cache or the temporary folder."""
    from olive_bf16_pass import __version__

    source = Path(source).resolve()
    stat = source.stat()
    root = Path(root or os.environ.get("OLIVE_CACHE_DIR") or tempfile.gettempdir())
    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{__version__}".encode()).hexdigest()[:16]
    return root / "olive_bf16_pass" / "emulated" / key


def emulated_model_file(source: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The emulated BF16-compute model of the FP32 ``source`` (a file, or Olive's folder of one); made once."""
    from olive_bf16_pass.evaluation.sessions import onnx_file
    from olive_bf16_pass.fidelity_figures import emulated_model

    source = onnx_file(source)
    try:
        return emulated_model(source, work_folder(source, root))
    except (OSError, ValueError) as e:  # ConversionError is a ValueError
        raise EvaluationError(
            f"could not make the emulated BF16-compute model of {source} ({type(e).__name__}: {e}); the evaluator's"
            " \"emulate\": false skips the emulated figures"
        ) from e


def fidelity_metrics(
    outputs: Mapping[str, np.ndarray],
    kind: str,
    *,
    top_k: int = 10,
    queries: int | None = None,
    factor: float = MISCOMPILE_FACTOR,
) -> dict[str, float]:
    """Metrics (evaluation/metrics.py) from the arrays each model gave on the same feeds.

    ``outputs``: ``reference`` (the FP32 source, CPU) and ``target`` (the model under test), and
    with emulation ``emulated`` (CPU), plus ``weight_only`` (the BF16 model on the CPU) where the
    target ran on a device: then the target is the device, compared with FP32 and with the
    emulation, and ``fidelity-miscompile_ratio`` says how far off it is. Embeddings ``[texts,
    hidden]`` (``queries`` as embedding_agreement takes it) or reranker scores ``[queries, candidates]``.
    """
    from olive_bf16_pass.fidelity_figures import three_figures

    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {KINDS}")
    ref, target = outputs["reference"], outputs["target"]
    if "emulated" not in outputs:
        agree = embedding_agreement(ref, target, top_k, queries) if kind == "embedding" else reranker_agreement(ref, target)
        return figure_metrics({"weight_only": agree}, kind)  # the plain names: the model under test against FP32
    device = "weight_only" in outputs
    figures = three_figures(
        ref, outputs["weight_only"] if device else target, outputs["emulated"], target if device else None,
        kind=kind, top_k=top_k, factor=factor, queries=queries,
    )
    return figure_metrics(figures, kind)
