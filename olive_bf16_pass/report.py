"""The Report of one conversion: per-tensor figures, totals, JSON and a one-screen summary.

Built once (``Report.build``) from the plan and the edits' and streamer's figures, when they are
final; nothing else sets its fields. Kept tensors are grouped by their ``KeepKind``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from olive_bf16_pass.options import DEFAULT_MIN_ELEMENTS
from olive_bf16_pass.skipped import SkipGroup, SkippedRecord, SkippedRecords, group_kept, group_skipped

if TYPE_CHECKING:
    from olive_bf16_pass.graph import Converted
    from olive_bf16_pass.plan import Plan

__all__ = ["Report", "SkipGroup", "SkippedRecord", "SkippedRecords", "TensorRecord", "group_kept", "group_skipped",
           "human_size"]

_GROUPS_SHOWN = 8


def human_size(nbytes: int) -> str:
    """Bytes for people: 512 B, 16.0 KB, 1.5 MB, 2.10 GB."""
    if nbytes < 1024:
        return f"{nbytes} B"
    for unit, scale in (("KB", 2**10), ("MB", 2**20), ("GB", 2**30)):
        if nbytes < 1024 * scale or unit == "GB":
            return f"{nbytes / scale:,.1f} {unit}" if unit != "GB" else f"{nbytes / scale:,.2f} GB"
    return f"{nbytes} B"


def _examples(names: list[str], count: int, shown: int = 3, width: int = 40) -> str:
    cut = [n if len(n) <= width else n[: width - 3] + "..." for n in names[:shown]]
    return ", ".join(cut) + (f", +{count - shown} more" if count > shown else "")


@dataclass
class TensorRecord:
    name: str  # the name consumers read (FP32, made by the Cast)
    stored_name: str  # the BF16 tensor in the file
    kind: str  # "initializer" or "constant"
    shape: list[int]
    bytes_before: int
    bytes_after: int
    widened: str  # "cast" or "after_gather"
    scope: str = "graph"  # where it lives: "graph", "graph/If[2].then_branch", "function local.f", ...
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    nan_count: int = 0
    inf_count: int = 0
    saturated_count: int = 0
    overflow_count: int = 0


@dataclass
class Report:
    converted: list[TensorRecord] = field(default_factory=list)
    skipped: Sequence[SkippedRecord] = field(default_factory=list)  # SkippedRecords when built from a plan
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    file_bytes_before: int | None = None
    file_bytes_after: int | None = None
    seconds: float | None = None
    source: str | None = None
    destination: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    opset_upgrade: list[int] | None = None  # [from, to] when the converter upgraded the model's opset
    input_fails_checker: str | None = None  # onnx.checker's message when the input already failed it

    @classmethod
    def build(cls, plan: Plan, converted: Sequence[Converted], **written) -> Report:
        """The report of ``plan`` carried out: ``converted``'s figures must be final (streamed ones too);
        ``written``: the file figures (source, destination, file_bytes_*, seconds, input_fails_checker)."""
        return cls(
            converted=[_record(c) for c in converted],
            skipped=SkippedRecords.of(plan.kept),
            weight_bytes_before=plan.weight_bytes,
            weight_bytes_after=plan.weight_bytes - plan.saved_bytes,
            options=plan.options.to_dict(),
            opset_upgrade=plan.opset_upgrade,
            **written,
        )

    @property
    def ratio(self) -> float:
        """Output size over input size: files when written, else weight bytes."""
        if self.file_bytes_before and self.file_bytes_after is not None:
            return self.file_bytes_after / self.file_bytes_before
        return self.weight_bytes_after / self.weight_bytes_before if self.weight_bytes_before else 1.0

    @property
    def worst(self) -> TensorRecord | None:
        return max(self.converted, key=lambda r: r.max_rel_error, default=None)

    @property
    def storage(self) -> str:
        """The form written: "bfloat16" (BF16 initializers + Cast) or "float32" (BF16-exact values as FP32)."""
        return self.options.get("storage", "bfloat16")

    def to_dict(self) -> dict:
        # the records are flat: a shallow copy each, where asdict's deep copy cost seconds for 100k of them
        rest = asdict(replace(self, converted=[], skipped=[]))
        rest["converted"] = [{**vars(r), "shape": list(r.shape)} for r in self.converted]
        rest["skipped"] = [dict(vars(s)) for s in self.skipped]
        return {**rest, "ratio": self.ratio, "storage": self.storage}

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        """One screen for people: counts, sizes, the worst error, and why tensors stayed FP32."""
        if self.storage == "float32":
            lines = [
                f"rounded {len(self.converted)} tensors to bfloat16 values, left {len(self.skipped)} as they were",
                ("storage: float32 (each rounded weight stored as FP32, no Cast: the Ryzen AI compiler's documented "
                 "input; storage=bfloat16 halves the file instead)"),
            ]
        else:
            lines = [
                f"converted {len(self.converted)} tensors to bfloat16, left {len(self.skipped)} as they were",
                "storage: bfloat16 (BF16 initializers, each widened by a Cast)",
            ]
        if self.opset_upgrade:
            lines.append(f"opset: upgraded from {self.opset_upgrade[0]} to {self.opset_upgrade[1]} (Cast from "
                         "bfloat16 needs 13; upgrade_opset=false refuses instead)")
        if self.file_bytes_after is not None:
            lines.append(
                f"size: {human_size(self.file_bytes_before)} -> {human_size(self.file_bytes_after)} "
                f"(ratio {self.ratio:.3f})"
            )
            if self.converted and self.storage == "bfloat16" and self.file_bytes_after > self.file_bytes_before:
                lines.append(
                    "note: the output is larger than the input: each converted tensor gets a Cast node, which "
                    f"outweighs what tiny tensors save; raise min_elements (default {DEFAULT_MIN_ELEMENTS})"
                )
        else:
            lines.append(
                f"weights: {human_size(self.weight_bytes_before)} -> {human_size(self.weight_bytes_after)} "
                f"(ratio {self.ratio:.3f})"
            )
        worst = self.worst
        if worst is not None:
            lines.append(
                f"worst rounding error: {worst.max_rel_error:.3g} relative, {worst.max_abs_error:.3g} absolute "
                f"({worst.name})"
            )
        specials = {
            "NaN": sum(r.nan_count for r in self.converted),
            "Inf": sum(r.inf_count for r in self.converted),
            "saturated to +-max bf16": sum(r.saturated_count for r in self.converted),
            "overflowed to Inf": sum(r.overflow_count for r in self.converted),
        }
        if any(specials.values()):
            lines.append("special values: " + ", ".join(f"{n} {k}" for k, n in specials.items() if n))
        groups = group_skipped(self.skipped, names=3)
        for g in groups[:_GROUPS_SHOWN]:
            tensors = "tensor " if g.count == 1 else "tensors"
            examples = _examples(g.names, g.count)
            lines.append(f"  kept {g.count:>4} {tensors} {human_size(g.bytes):>9}: {g.reason} ({examples})")
        if len(groups) > _GROUPS_SHOWN:
            lines.append(f"  ... and {len(groups) - _GROUPS_SHOWN} more reasons; the JSON report lists every tensor")
        if self.input_fails_checker:
            lines.append(f"warning: the input already fails onnx.checker, so the output does too: "
                         f"{self.input_fails_checker}")
        if self.seconds is not None:
            lines.append(f"time: {self.seconds:.2f} s")
        return "\n".join(lines)


def _record(c: Converted) -> TensorRecord:
    d, stats = c.definition, c.stats
    after = d.size * (4 if c.widened == "none" else 2)  # "none": storage float32, rounded in place
    return TensorRecord(
        d.name, c.stored_name, d.kind, list(d.tensor.dims), d.size * 4, after, c.widened, d.scope.label,
        stats.max_abs_error, stats.max_rel_error, stats.nan_count, stats.inf_count, stats.saturated_count,
        stats.overflow_count,
    )
