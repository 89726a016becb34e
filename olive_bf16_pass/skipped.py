"""The tensors a conversion left as they were: one record each, for the JSON report and the summary's groups.

A model may keep 100,000 tiny tensors. ``SkippedRecords`` holds their records as columns (a name
each, the rest shared words and numbers) and makes each ``SkippedRecord`` when it is read: a
tenth of the memory of 100,000 records.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from olive_bf16_pass.columns import Columns
from olive_bf16_pass.dtypes import expected_nbytes, type_nbytes
from olive_bf16_pass.kept import KeepKind, sized_reason

if TYPE_CHECKING:
    from olive_bf16_pass.kept import Kept, KeptTensors

__all__ = ["SkipGroup", "SkippedRecord", "SkippedRecords", "group_kept", "group_skipped"]


@dataclass
class SkippedRecord:
    name: str
    reason: str  # this tensor's sentence: "input of MatMul node 'm' (op type in op_block_list)"
    bytes: int
    scope: str = "graph"
    kind: str = ""  # selection.KeepKind's key: "op_block_list", "too_small", "dtype", ...
    group: str = ""  # the words of its kind in the summary: "fewer than min_elements=1024"

    @classmethod
    def of(cls, kept: Kept) -> SkippedRecord:
        d = kept.definition
        return cls(d.name, kept.reason, expected_nbytes(d.tensor, d.size) or 0, d.scope.label, kept.kind.key,
                   kept.group)


class SkippedRecords(Columns):
    """``SkippedRecord``s held as columns, made when read; ``of`` builds them from a plan's kept tensors.

    Names are held as their UTF-8 bytes end to end, each record's sentence as a number for a word held
    once, and what many records share (scope, kind, group, data type) as a number for that combination:
    100,000 records in about 3 MB."""

    def __init__(self):
        self._names = bytearray()
        self._ends = array("q")  # where each name's bytes end
        self._sizes = array("q")
        self._reasons = array("i")  # a word (-1: "N elements, {group}", worded when read: it names the size)
        self._shared = array("i")  # a combination: (scope, kind, group, data type); a model has a handful
        self._words = _Numbered()
        self._combinations = _Numbered()

    @classmethod
    def of(cls, kept: Iterable[Kept]) -> SkippedRecords:
        records = cls()
        names, ends, sizes, reasons, shared = records._names, records._ends, records._sizes, records._reasons, records._shared
        for k in kept:
            d = k.definition
            names += d.name.encode()
            ends.append(len(names))
            sizes.append(d.size)
            reasons.append(-1 if k.kind is KeepKind.TOO_SMALL else records._words.number(k.reason))
            shared.append(records._combinations.number((d.scope.label, k.kind.key, k.group, d.tensor.data_type)))
        return records

    def __len__(self) -> int:
        return len(self._ends)

    def _record(self, index: int) -> SkippedRecord:
        start = self._ends[index - 1] if index else 0
        name = self._names[start:self._ends[index]].decode()
        scope, kind, group, data_type = self._combinations[self._shared[index]]
        size, reason = self._sizes[index], self._reasons[index]
        reason = sized_reason(size, group) if reason < 0 else self._words[reason]
        return SkippedRecord(name, reason, type_nbytes(data_type, size) or 0, scope, kind, group)

    def groups(self, names: int | None = None) -> list[SkipGroup]:
        """``group_skipped`` of these records, read from the columns (a record is made only for a group's
        reason when it is the record's own words)."""
        groups: dict[tuple[str, str], SkipGroup] = {}
        for index in range(len(self)):
            _, kind, group, data_type = self._combinations[self._shared[index]]
            if group:
                words = group
            else:  # a group of no words: each record's own
                reason = self._reasons[index]
                words = self._words[reason] if reason >= 0 else self[index].reason
            found = groups.get((kind, words))
            if found is None:
                found = groups[(kind, words)] = SkipGroup(words)
            found.count += 1
            found.bytes += type_nbytes(data_type, self._sizes[index]) or 0
            if names is None or len(found.names) < names:
                found.names.append(self[index].name)
        return list(groups.values())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


class _Numbered(list):
    """Values held once each, numbered in the order first seen."""

    def __init__(self):
        super().__init__()
        self._numbers: dict = {}

    def number(self, value) -> int:
        found = self._numbers.get(value)
        if found is None:
            found = self._numbers[value] = len(self)
            self.append(value)
        return found


@dataclass
class SkipGroup:
    reason: str
    count: int = 0
    bytes: int = 0
    names: list[str] = field(default_factory=list)


def group_skipped(skipped: Iterable[SkippedRecord], names: int | None = None) -> list[SkipGroup]:
    """Records grouped by why they were kept (kind, and the dtype or threshold its words name), largest first.
    ``names``: how many names each group keeps (None: all of them)."""
    if isinstance(skipped, SkippedRecords):
        return _sorted(skipped.groups(names))
    groups: dict[tuple[str, str], SkipGroup] = {}
    for s in skipped:
        key = (s.kind, s.group or s.reason)  # a record made without a kind groups by its own words
        group = groups.get(key) or groups.setdefault(key, SkipGroup(key[1]))
        group.count += 1
        group.bytes += s.bytes
        if names is None or len(group.names) < names:
            group.names.append(s.name)
    return _sorted(groups.values())


def _sorted(groups: Iterable[SkipGroup]) -> list[SkipGroup]:
    return sorted(groups, key=lambda g: (-g.bytes, -g.count, g.reason))


def group_kept(kept: KeptTensors) -> list[SkipGroup]:
    """``group_skipped`` of a plan's kept tensors, without a record each (a model may keep 100,000): the
    groups' reasons, counts and bytes; no names."""
    groups: dict[tuple[str, str], SkipGroup] = {}
    for kind, detail, count, nbytes in kept.groups():
        reason = kind.group.format(detail)
        group = groups.get((kind.key, reason)) or groups.setdefault((kind.key, reason), SkipGroup(reason))
        group.count += count
        group.bytes += nbytes
    return _sorted(groups.values())


