"""The plan: what a conversion of this skeleton with these options will do, decided before anything is edited.

``make_plan`` is the only place the rules are applied: ``convert`` executes a plan, ``inspect``
and the readiness checks print one, so they cannot disagree. A plan reads only the skeleton
(names, dtypes, shapes), never tensor data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass import opset, selection, validation
from olive_bf16_pass.dtypes import expected_nbytes
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.filters import unmatched_filters
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.selection import KeepKind, KeptTensors
from olive_bf16_pass.traversal import Definition, Skeleton, definitions

__all__ = ["Plan", "make_plan"]


@dataclass
class Plan:
    """Which tensors convert, which stay and why, what refuses the model, and the sizes involved."""

    skeleton: Skeleton  # the model the plan is for: the input's, or its opset upgrade
    options: ConversionOptions
    chosen: list[Definition] = field(default_factory=list)
    kept: KeptTensors = field(default_factory=lambda: KeptTensors([], 0))
    refusals: list[str] = field(default_factory=list)  # one line each: the problem and the way out
    warnings: list[str] = field(default_factory=list)  # fields ONNX never reads (dropped), filters that match nothing
    opset_upgrade: list[int] | None = None  # [from, to] when the skeleton is an upgrade of the input
    # every tensor of the skeleton, once, by data type number: how many, and the bytes of their data
    tensor_counts: dict[int, int] = field(default_factory=dict)
    tensor_bytes: dict[int, int] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        """Every tensor's data, before."""
        return sum(self.tensor_bytes.values())

    @property
    def saved_bytes(self) -> int:
        if self.options.storage == "float32":  # rounded in place: still 4 bytes an element
            return 0
        return sum(d.size * 2 for d in self.chosen)  # 4 bytes become 2

    def raise_if_refused(self) -> None:
        if self.refusals:
            more = f" ({len(self.refusals) - 1} more problems: see olive-bf16 inspect)" if len(self.refusals) > 1 else ""
            raise ConversionError(self.refusals[0] + more)


def make_plan(skeleton: Skeleton, options: ConversionOptions) -> Plan:
    """Decide every tensor of ``skeleton``; the upgrade below opset 13 happens here, on the skeleton."""
    refusals = []
    upgrade = None
    try:
        skeleton, upgrade = opset.upgrade(skeleton, options)
    except ConversionError as exc:
        refusals.append(str(exc))  # still planned on the input, so inspect shows what would convert
    all_scopes = skeleton.scopes
    sparse = [repr(t.values.name) if t.values.name else "?" for scope in all_scopes if not scope.is_function
              for t in scope.body.sparse_initializer]
    if sparse:
        refusals.append(
            f"the model has sparse initializers ({', '.join(sparse[:3])}); they are not supported. "
            "Densify them first (onnx.numpy_helper / onnx-ir), then convert."
        )
    selected = selection.select(skeleton.model, all_scopes, options)
    counts, nbytes = _tally(skeleton, selected)
    unknown = [] if counts.keys() <= validation.KNOWN_TYPES else validation.unknown_types(all_scopes)
    if unknown:
        more = f" ({len(unknown) - 1} more tensors have unknown types)" if len(unknown) > 1 else ""
        refusals.append(unknown[0] + more)
    chosen, kept = selected.chosen, selected.kept
    no_fp32 = onnx.TensorProto.FLOAT not in selected.types  # kept ones (too small) count
    if no_fp32 and KeepKind.ALREADY_BF16 not in kept.kinds() and (
        onnx.TensorProto.FLOAT16 in kept.types(KeepKind.OTHER_DTYPE)
    ):  # an all-BF16 model converts to itself; all-FP16 is not where BF16 starts
        refusals.append(
            "the model's weights are float16 and none are float32: BF16 conversion starts from an FP32 model. "
            "Convert the FP32 export instead."
        )
    warnings = [*skeleton.dropped, *_warnings(all_scopes, options)]
    return Plan(skeleton, options, chosen, kept, refusals, warnings, upgrade, counts, nbytes)


def _warnings(all_scopes, options: ConversionOptions) -> list[str]:
    if not options.has_filters:  # the model's names are gathered only to check filters that were given
        return []
    nodes = [node for scope in all_scopes for node in scope.body.node]
    names = (d.name for d in definitions(all_scopes))
    return unmatched_filters(options, names, (n.name for n in nodes), (n.op_type for n in nodes))


def _tally(skeleton: Skeleton, selected: selection.Selection) -> tuple[dict[int, int], dict[int, int]]:
    """Every tensor's count and data bytes by data type: the initializers' from the selection's walk,
    then every attribute tensor (Constant values and the rest)."""
    counts, nbytes = dict(selected.initializer_counts), dict(selected.initializer_bytes)
    for scope in skeleton.scopes:
        for tensor in scope.attribute_tensors:
            data_type = tensor.data_type
            counts[data_type] = counts.get(data_type, 0) + 1
            nbytes[data_type] = nbytes.get(data_type, 0) + (expected_nbytes(tensor) or 0)
    return counts, nbytes
