"""Filters that match nothing: a typo in --exclude or --op-block silently changes nothing, so say so.

Pure functions over names; the converter logs what ``unmatched_filters`` returns.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from olive_bf16_pass.options import ConversionOptions

__all__ = ["suggest", "unmatched_filters"]

# option -> (what its entries name, which of the model's name sets they are matched against)
_FILTERS = (
    ("op_block_list", "op type", "op_types"),
    ("op_include_list", "op type", "op_types"),
    ("node_block_list", "node", "node_names"),
    ("node_include_list", "node", "node_names"),
    ("include_initializers", "tensor", "tensor_names"),
    ("exclude_initializers", "tensor", "tensor_names"),
)


def unmatched_filters(
    options: ConversionOptions,
    tensor_names: Iterable[str],
    node_names: Iterable[str],
    op_types: Iterable[str],
) -> list[str]:
    """One warning line per filter entry that names nothing in the model, with the nearest name if any."""
    known = {
        "tensor_names": frozenset(tensor_names),
        "node_names": frozenset(n for n in node_names if n),
        "op_types": frozenset(op_types),
    }
    warnings = []
    for option, what, names in _FILTERS:
        entries = getattr(options, option) or ()
        for entry in dict.fromkeys(entries):  # each entry once, in the order given
            if entry in known[names]:
                continue
            hint = suggest(entry, known[names])
            warnings.append(
                f"{option} {entry!r} matches no {what} in the model, so it changes nothing"
                + (f"; did you mean {hint!r}?" if hint else "; check the spelling (names are case-sensitive)")
            )
    return warnings


def suggest(entry: str, names: Iterable[str]) -> str | None:
    """The name ``entry`` most likely meant: same letters in another case first, then the closest spelling."""
    names = sorted(names)  # the same answer whatever order the model lists them in
    folded = entry.casefold()
    same_case_folded = [n for n in names if n.casefold() == folded]
    if same_case_folded:
        return same_case_folded[0]
    by_folded: dict[str, str] = {}
    for n in names:
        by_folded.setdefault(n.casefold(), n)
    close = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None
