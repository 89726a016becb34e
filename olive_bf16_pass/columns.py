"""A sequence of records held as columns and made when read: what a plan keeps, what a report skipped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["Columns"]


class Columns(Sequence):
    """A subclass says how many records it holds (``__len__``) and makes the one at a place (``_record``)."""

    def _record(self, index: int):
        raise NotImplementedError

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._record(index)

    def __iter__(self) -> Iterator:
        return map(self._record, range(len(self)))
