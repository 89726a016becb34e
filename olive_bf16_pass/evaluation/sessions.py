"""Running the two models: ONNX Runtime sessions, their files, timing and provider messages
(their inputs: :mod:`~olive_bf16_pass.evaluation.inputs`).

The model under test runs where the recipe asks (its caller, the Olive evaluator, creates the
session, so the recipe's inference settings apply), watched by a
:class:`~olive_bf16_pass.evaluation.probe.PlacementProbe`; its FP32 source always runs on
:data:`REFERENCE_PROVIDER`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.evaluation.probe import PlacementProbe
from olive_bf16_pass.optional import import_onnxruntime
from olive_bf16_pass.providers import CPU, CUDA, DML, VITISAI

__all__ = [
    "REFERENCE_PROVIDER",
    "absolute_provider_paths",
    "fp32_twin_line",
    "in_olive_cache",
    "interleaved_latency",
    "latency_figures",
    "missing_provider_message",
    "model_size_on_disk",
    "onnx_file",
    "reference_session",
    "same_file",
    "size_figures",
    "target_session",
]

REFERENCE_PROVIDER = CPU  # where the FP32 source runs: present in every onnxruntime build


# --------------------------------------------------------------------------- model files


def onnx_file(path: str | Path) -> Path:
    """The .onnx file itself, given it or the folder Olive keeps it in."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.onnx"))
        if len(files) != 1:
            raise EvaluationError(f"expected exactly one .onnx file in {path}, found {len(files)}")
        path = files[0]
    return path


def model_size_on_disk(model_path: str | Path) -> int:
    """Bytes of an ONNX file plus the external data files it references."""
    import onnx

    model_path = onnx_file(model_path)
    total = model_path.stat().st_size
    proto = onnx.load(str(model_path), load_external_data=False)
    locations = set()
    for t in _all_initializers(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for entry in t.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        p = model_path.parent / loc
        if p.is_file():
            total += p.stat().st_size
    return total


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


def in_olive_cache(path: str | Path) -> bool:
    """Whether ``path`` lies in the cache of the Olive run in progress (``OLIVE_CACHE_DIR``, set by Olive)."""
    cache = os.environ.get("OLIVE_CACHE_DIR")
    return bool(cache) and Path(path).resolve().is_relative_to(Path(cache).resolve())


def _all_initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.g.ByteSize():
                yield from _all_initializers(attr.g)
            for g in attr.graphs:
                yield from _all_initializers(g)


# --------------------------------------------------------------------------- sessions


def target_session(
    settings: dict,
    create: Callable[[dict], object],
    cpu_twin: str | None = None,
    rejected: tuple[type[BaseException], ...] = (),
):
    """The model under test on the EP its inference ``settings`` name, profiled from creation:
    (session, provider, probe).

    ``create(settings)`` makes the session (the Olive evaluator passes its model handler's
    ``prepare_session``); an exception of a type in ``rejected`` is ONNX Runtime refusing the EP.
    Stops with an :class:`EvaluationError` where the EP is missing or refused; the probe decides
    later whether the EP really ran the model.
    """
    ort = import_onnxruntime("the fidelity evaluator")
    wanted = [ep[0] if isinstance(ep, (list, tuple)) else ep for ep in settings.get("execution_provider") or []]
    available = ort.get_available_providers()
    missing = [ep for ep in wanted if ep not in available]
    if missing:
        raise EvaluationError(missing_provider_message(missing, available, cpu_twin))
    settings = absolute_provider_paths(settings)
    options = (settings.get("provider_options") or [{}])[0] or {}
    probe = PlacementProbe(wanted[0] if wanted else REFERENCE_PROVIDER, options)
    settings = probe.settings(settings)  # profiling on until probe.measure()
    try:
        with probe.creating():
            session = create(settings)
    except rejected as e:
        raise EvaluationError(
            f"ONNX Runtime did not run the BF16 model on {wanted}: {e}. A silent fallback to another"
            " provider would make the numbers meaningless, so the evaluation stops."
        ) from e
    probe.attach(session)
    if wanted and session.get_providers()[0] != wanted[0]:  # a first check; the probe decides
        probe.close()
        raise EvaluationError(f"the session runs on {session.get_providers()} but {wanted[0]} was requested (fallback)")
    return session, wanted[0] if wanted else session.get_providers()[0], probe


def reference_session(source_path: str | Path):
    ort = import_onnxruntime("the fidelity evaluator")
    return ort.InferenceSession(str(onnx_file(source_path)), providers=[REFERENCE_PROVIDER])


def interleaved_latency(sessions: list, feeds: list[dict], runs: int, warmup: int = 0) -> list[list[float]]:
    """Milliseconds per run for each session. The sessions take turns (a, b, a, b, ...) on the same
    input, cycling over ``feeds``, so that drift (clock boost, heat, other load) reaches all of
    them alike, as benchmarks/worker.py's paired measurement does."""
    if not feeds:
        raise EvaluationError("no input to time the models with")
    for i in range(max(0, int(warmup))):
        for session in sessions:
            session.run(None, feeds[i % len(feeds)])
    times: list[list[float]] = [[] for _ in sessions]
    for i in range(max(1, int(runs))):
        feed = feeds[i % len(feeds)]
        for session, spent in zip(sessions, times):
            t0 = time.perf_counter()
            session.run(None, feed)
            spent.append((time.perf_counter() - t0) * 1000.0)
    return times


def latency_figures(times: list[list[float]]) -> dict[str, float]:
    """p50 / p90 of interleaved_latency's [reference, target] times (or [target] alone)."""
    results = {"latency-p50": float(np.percentile(times[-1], 50)), "latency-p90": float(np.percentile(times[-1], 90))}
    if len(times) > 1:
        results["latency-source_p50"] = float(np.percentile(times[0], 50))
        results["latency-source_p90"] = float(np.percentile(times[0], 90))
    return results


def size_figures(model_path: str | Path, source_path: str | Path) -> dict[str, float]:
    size, source = model_size_on_disk(model_path), model_size_on_disk(source_path)
    return {"size-bytes": size, "size-source_bytes": source, "size-ratio": size / source if source else 0.0}


# --------------------------------------------------------------------------- execution providers


def absolute_provider_paths(settings: dict) -> dict:
    """Make relative ``config_file`` / ``cache_dir`` provider options absolute (against the current
    directory, as Olive resolves every other relative path in a recipe)."""
    options = settings.get("provider_options")
    if not options:
        return settings
    fixed = []
    for opts in options:
        opts = dict(opts or {})
        for key in ("config_file", "cache_dir", "cacheDir"):
            if isinstance(opts.get(key), str) and opts[key] and not os.path.isabs(opts[key]):
                opts[key] = str(Path(opts[key]).resolve())
        fixed.append(opts)
    return {**settings, "provider_options": fixed}


_PROVIDER_HELP = {
    VITISAI: (
        f"{VITISAI} comes with AMD Ryzen AI Software (Windows or Linux, on a Strix / Krackan"
        " or newer NPU for BF16): activate its conda environment, whose onnxruntime build includes the"
        " VitisAI EP, then run this recipe again."
    ),
    CUDA: f"{CUDA} needs the onnxruntime-gpu package and a CUDA GPU.",
    DML: f"{DML} needs the onnxruntime-directml package on Windows.",
}


def missing_provider_message(missing: list[str], available: list[str], cpu_twin: str | None = None) -> str:
    """The message for a recipe whose execution provider is not installed: what is missing,
    what this onnxruntime has, how to get it, and which recipe runs without it."""
    ort = import_onnxruntime("the execution provider check")
    lines = [
        (
            f"{', '.join(missing)} is not available: this Python's onnxruntime {ort.__version__}"
            f" ({Path(ort.__file__).parent}) offers {available}."
        )
    ]
    lines.extend(_PROVIDER_HELP[m] for m in missing if m in _PROVIDER_HELP)
    if cpu_twin:
        lines.append(f"To convert and check the model without it, run the CPU twin: olive run --config {cpu_twin}")
    return " ".join(lines)


_EP_FAILURES = ("did not run the BF16 model", "fell back", "(fallback)")  # target_session's / placement.py's words


def fp32_twin_line(fp32_twin: str | None, message: str) -> str | None:
    """For a failed compile or a CPU fallback: the recipe that gives the compiler AMD's documented input."""
    if not fp32_twin or not any(words in message for words in _EP_FAILURES):
        return None
    return (f"Try the FP32-storage twin (the same BF16-rounded weights stored as FP32, no Cast: the input AMD "
            f"documents for its compiler): olive run --config {fp32_twin}")
