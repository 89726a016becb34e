"""The metric names of the three fidelity figures, and the miscompile check read back from them.

Standard library only (the gate and the table read these names from cached metrics, with no arrays).

Every agreement metric has a plain name, the model under test against its FP32 source (what the
recipes' thresholds name): ``fidelity-cosine_mean``, ``fidelity-cosine_min``,
``retrieval-top10_overlap``, ``retrieval-top1_agreement`` for embeddings; ``fidelity-spearman``,
``fidelity-top1_agreement``, ``fidelity-max_abs_diff`` for rerankers. The other figures
(fidelity_figures.three_figures) carry a variant between the metric's group and its name
(``<group>-<variant>-<name>``):

- ``emulated``: the emulated BF16-compute model of the FP32 source (emulation.py) on the CPU EP,
  against FP32: what an NPU-class device should get (``fidelity-emulated-cosine_mean``);
- ``weight_only``: the BF16 model on the CPU EP against FP32, reported where the model under test
  ran elsewhere (a Vitis AI run); on a CPU run the plain names are the weight-only figures;
- ``device_vs_emulated``: the device's output against the emulation's.

and :data:`MISCOMPILE_RATIO` (``fidelity-miscompile_ratio``), the device's gap from the emulation
over the emulation's gap from FP32 (gaps: 1 - mean cosine, or 1 - Spearman; the emulation's at
least fidelity_figures.MISCOMPILE_FLOOR). Above the evaluator's ``miscompile_factor`` the device
output is a likely miscompile (:func:`miscompile_misses`).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "AGREEMENT",
    "MISCOMPILE_FACTOR",
    "MISCOMPILE_FLOOR",
    "MISCOMPILE_RATIO",
    "VARIANTS",
    "VARIANT_LABELS",
    "figure_metrics",
    "miscompile_misses",
    "split",
    "variant_name",
]

# the miscompile threshold (how it was chosen: fidelity_figures.py); here so that the gate and the Olive
# evaluators' options read them with the standard library only
MISCOMPILE_FACTOR = 100.0
MISCOMPILE_FLOOR = 1e-5  # the emulation's gap is taken as at least this (a model that rounds almost nothing)
MISCOMPILE_RATIO = "fidelity-miscompile_ratio"
VARIANTS = ("weight_only", "emulated", "device_vs_emulated")
VARIANT_LABELS = {  # the side-by-side table's column headings
    "weight_only": "BF16 weights only (CPU)",
    "emulated": "emulated BF16 compute (CPU)",
    "device_vs_emulated": "device vs emulated",
}
# what the agreement functions return -> the metric's plain name, per kind of model
AGREEMENT = {
    "embedding": {"cosine_mean": "fidelity-cosine_mean", "cosine_min": "fidelity-cosine_min",
                  "topk_overlap": "retrieval-top10_overlap", "top1_agreement": "retrieval-top1_agreement"},
    "reranker": {"spearman": "fidelity-spearman", "top1_agreement": "fidelity-top1_agreement",
                 "max_abs_diff": "fidelity-max_abs_diff"},
}


def variant_name(name: str, variant: str | None) -> str:
    """``fidelity-cosine_mean``, ``emulated`` -> ``fidelity-emulated-cosine_mean``."""
    if not variant:
        return name
    group, sub = name.split("-", 1)
    return f"{group}-{variant}-{sub}"


def split(name: str) -> tuple[str, str | None]:
    """The plain name and the variant of a metric name (variant None for a plain one)."""
    parts = name.split("-")
    if len(parts) == 3 and parts[1] in VARIANTS:
        return f"{parts[0]}-{parts[2]}", parts[1]
    return name, None


def _gap(plain: Mapping[str, float], kind: str) -> float:
    return 1.0 - plain["cosine_mean" if kind == "embedding" else "spearman"]


def figure_metrics(figures: Mapping[str, Mapping], kind: str) -> dict[str, float]:
    """Metrics from fidelity_figures.three_figures' answer (or a subset: ``{"weight_only": ...}``,
    ``{"device": ...}`` where the emulation was not run). The plain names get the model under test:
    the device where there is one, else the weight-only BF16 model."""
    names = AGREEMENT[kind]

    def named(agree, variant=None):
        return {variant_name(names[k], variant): float(v) for k, v in agree.items() if k in names}

    on_device = "device" in figures
    out = named(figures["device" if on_device else "weight_only"])
    for variant in VARIANTS:
        if variant in figures and (variant != "weight_only" or on_device):
            out.update(named(figures[variant], variant))
    if on_device and "emulated" in figures and "device_vs_emulated" in figures:
        emulated_gap = max(_gap(figures["emulated"], kind), MISCOMPILE_FLOOR)
        out[MISCOMPILE_RATIO] = _gap(figures["device_vs_emulated"], kind) / emulated_gap
    return out


def miscompile_misses(results: Mapping[str, float], factor: float) -> list[str]:
    """One line, with the three figures, where the device is more than ``factor`` times further from the
    emulation than the emulation is from FP32; none otherwise (or where no device figure was made)."""
    ratio = results.get(MISCOMPILE_RATIO)
    if ratio is None or ratio <= float(factor):  # NaN: an agreement function would have refused it first
        return []
    key = "cosine_mean" if "fidelity-cosine_mean" in results else "spearman"
    what = "mean cosine" if key == "cosine_mean" else "Spearman"

    def fig(variant):
        value = results.get(variant_name(f"fidelity-{key}", variant))
        return "?" if value is None else f"{value:.6f}"

    return [
        f"{MISCOMPILE_RATIO} = {ratio:.4g}, required <= {float(factor):g} (miscompile_factor): a likely miscompile."
        f" {what} against FP32: device {fig(None)}, BF16 weights only (CPU) {fig('weight_only')}, emulated BF16"
        f" compute (CPU) {fig('emulated')}; device against the emulation {fig('device_vs_emulated')}. The device is"
        f" {ratio:.4g}x further from the emulation than the emulation is from FP32; a sound BF16 device stays"
        " within about 10x (RyzenAI-SW #390 reports compiled BF16 models returning wrong numbers): compare its"
        " output layer by layer and report it with the model"
    ]
