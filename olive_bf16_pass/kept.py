"""What a plan keeps as it is, and why: ``KeepKind``, ``Kept``, and ``KeptTensors``, the plan's list of them.

A model may keep 100,000 tiny tensors. Those the tensor's own rules keep (too small, another
dtype, a name filter) are held as a few numbers each, where they are in the model and why, and
become ``Kept`` records only when read; groups and counts are worked out from the numbers. The
few that the nodes reading them keep are held as records.
"""

from __future__ import annotations

import enum
import functools
from array import array
from dataclasses import dataclass

from olive_bf16_pass.columns import Columns
from olive_bf16_pass.dtypes import data_type_name, type_nbytes
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.traversal import Definition, Scope

__all__ = ["KeepKind", "Kept", "KeptTensors", "sized_reason"]


class KeepKind(enum.Enum):
    """Why a tensor stays as it is. The value is the stable name in the JSON report; ``group`` is the
    summary line's words for it ({} takes the kind's group detail: a dtype, a threshold)."""

    ALREADY_BF16 = ("already_bfloat16", "already bfloat16")
    OTHER_DTYPE = ("dtype", "dtype {} (only float32 converts)")
    CONSTANTS_OFF = ("constants_off", "Constant node value (convert_constants is off)")
    NOT_INCLUDED = ("not_in_include_initializers", "not in include_initializers")
    EXCLUDED = ("in_exclude_initializers", "in exclude_initializers")
    TOO_SMALL = ("too_small", "fewer than min_elements={}")
    GRAPH_INPUT = (
        "graph_input", "also a graph input, overridable at run time (convert_graph_input_initializers is off)"
    )
    GRAPH_OUTPUT = ("graph_output", "a graph output: its value is returned as it is")
    UNUSED = ("unused", "not used by any node")
    OP_BLOCKED = ("op_block_list", "input of an op_block_list node")
    OP_NOT_INCLUDED = ("not_in_op_include_list", "input of a node whose op type is not in op_include_list")
    NODE_BLOCKED = ("node_block_list", "input of a node_block_list node")
    NODE_NOT_INCLUDED = ("not_in_node_include_list", "input of a node not in node_include_list")
    FLOAT32_INPUT = ("float32_input", "an input that must stay float32 (scales, roi)")

    def __init__(self, key: str, group: str):
        self.key, self.group = key, group


@dataclass(eq=False, slots=True)  # not frozen: a frozen dataclass costs twice as much to make, 100,000 times
class Kept:
    """A tensor that stays as it is: why (``kind``), and the detail that varies (node, count, dtype)."""

    definition: Definition
    kind: KeepKind
    detail: str = ""  # the words this tensor adds to its kind's: the reading node (a count is worded by reason)
    group_detail: str = ""  # what fills the kind's {} in the summary: a dtype, the min_elements threshold

    @property
    def reason(self) -> str:
        """The per-tensor sentence of the JSON report (stable wording)."""
        if self.kind is KeepKind.TOO_SMALL:  # worded when asked: a model may keep 100,000 tiny tensors
            return sized_reason(self.definition.size, self.group)
        return self.detail or self.group

    @property
    def group(self) -> str:
        return self.kind.group.format(self.group_detail)


def sized_reason(size: int, group: str) -> str:
    """A too-small tensor's sentence: its size, then its group's words."""
    return f"{size} elements, {group}"


_KINDS = list(KeepKind)
_CODES = {kind: code for code, kind in enumerate(_KINDS)}
_HELD = 255  # a kind code: the record is held as it is


class KeptTensors(Columns):
    """The kept tensors of a plan, in model order, read as ``Kept`` records (made when read, for most)."""

    def __init__(self, all_scopes: list[Scope], min_elements: int):
        self._scopes, self._min_elements = all_scopes, min_elements
        self._code = bytearray()  # the KeepKind's place in _KINDS, or _HELD
        self._scope = array("l")  # the scope's place in all_scopes
        self._place = array("q")  # the initializer's place among its scope's
        self._size = array("q")  # elements
        self._type = array("l")  # data type
        self._held: dict[int, Kept | None] = {}  # place in this list -> a record kept by the nodes reading it

    def add_decided(self, kind: KeepKind, scope: int, place: int, size: int, data_type: int) -> None:
        """An initializer kept by its own rules: the ``place``-th of ``self._scopes[scope]``'s.

        Places hold because no edit adds or removes an initializer (graph.py retypes and renames in
        place); a Constant's node is moved by the Casts inserted before it, so constants go to ``add``."""
        self._code.append(_CODES[kind])
        self._scope.append(scope)
        self._place.append(place)
        self._size.append(size)
        self._type.append(data_type)

    def add(self, definition: Definition, kind: KeepKind) -> None:
        """A tensor kept by its own rules, held as a record (a Constant's value)."""
        detail = self._group_detail(kind, definition.tensor.data_type)
        self.fill(self.reserve(), Kept(definition, kind, group_detail=detail))

    def reserve(self) -> int:
        """A place for a tensor the nodes reading it decide (``fill``), so the list stays in model order."""
        self._held[len(self._code)] = None
        self._code.append(_HELD)
        for column in (self._scope, self._place, self._size, self._type):
            column.append(0)
        return len(self._code) - 1

    def fill(self, place: int, kept: Kept | None) -> None:
        """The record for a reserved place; None: the tensor converts, and ``finish`` drops the place."""
        self._held[place] = kept

    def finish(self) -> None:
        """Drop the places of tensors that convert."""
        if all(kept is not None for kept in self._held.values()):
            return
        keep = [i for i in range(len(self._code)) if self._code[i] != _HELD or self._held[i] is not None]
        held = {new: self._held[old] for new, old in enumerate(keep) if self._code[old] == _HELD}
        self._code = bytearray(self._code[i] for i in keep)
        for name in ("_scope", "_place", "_size", "_type"):
            column = getattr(self, name)
            setattr(self, name, array(column.typecode, (column[i] for i in keep)))
        self._held = held

    def __len__(self) -> int:
        return len(self._code)

    def _record(self, index: int) -> Kept:
        code = self._code[index]
        if code == _HELD:
            return self._held[index]
        scope, place, data_type = self._scopes[self._scope[index]], self._place[index], self._type[index]
        tensor = scope.body.initializer[place]
        if tensor.data_type != data_type:
            raise ConversionError(f"initializer {place} of {scope.label} is not the tensor the plan kept; this is a bug "
                                  "in the converter: please report it.")
        kind = _KINDS[code]
        definition = Definition(tensor.name, tensor, scope, size=self._size[index], index=place)
        return Kept(definition, kind, group_detail=self._group_detail(kind, data_type))

    def _group_detail(self, kind: KeepKind, data_type: int) -> str:
        if kind is KeepKind.OTHER_DTYPE:
            return data_type_name(data_type)
        return threshold(self._min_elements) if kind is KeepKind.TOO_SMALL else ""

    def kinds(self) -> set[KeepKind]:
        return {_KINDS[code] for code in set(self._code) - {_HELD}} | {k.kind for k in self._held.values()}

    def types(self, kind: KeepKind) -> set[int]:
        """The data types of the tensors kept for ``kind``."""
        code = _CODES[kind]
        decided = {t for c, t in zip(self._code, self._type) if c == code}
        return decided | {k.definition.tensor.data_type for k in self._held.values() if k.kind is kind}

    def groups(self) -> list[tuple[KeepKind, str, int, int]]:
        """(kind, group detail, count, bytes) of every (kind, detail) kept, without a record each."""
        tally: dict[tuple, list[int]] = {}
        for code, size, data_type in zip(self._code, self._size, self._type):
            if code == _HELD:
                continue
            kind = _KINDS[code]
            key = (kind, data_type if kind is KeepKind.OTHER_DTYPE else None)
            entry = tally.get(key) or tally.setdefault(key, [0, 0, data_type])
            entry[0] += 1
            entry[1] += type_nbytes(data_type, size) or 0
        found = [(kind, self._group_detail(kind, entry[2]), entry[0], entry[1]) for (kind, _), entry in tally.items()]
        for k in self._held.values():
            d = k.definition
            found.append((k.kind, k.group_detail, 1, type_nbytes(d.tensor.data_type, d.size) or 0))
        return found


@functools.lru_cache(maxsize=8)
def threshold(min_elements: int) -> str:
    """One string for every tensor kept as too small."""
    return str(min_elements)
