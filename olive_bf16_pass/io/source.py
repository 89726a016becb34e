"""Reading a model as a skeleton, and where each of its tensors' bytes really are.

External data is a path written by whoever made the model, so it is judged before any byte is
read: a plain relative location inside the model's folder, the same on every platform (``\\``
separates as ``/`` does; drive letters, UNC, rooted paths and ``..`` are refused), not leading
out of the folder through a link, long enough for the tensor's shape.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass import strict_text, validation
from olive_bf16_pass.dtypes import expected_nbytes
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.io.wire import (
    LIFTED,
    PROTOBUF_DEPTH,
    VARINT_FIELDS,
    SkeletonScanner,
    TooDeep,
    nesting_depth,
    verbatim_field,
)
from olive_bf16_pass.protowire import Truncated
from olive_bf16_pass.traversal import Scope, Skeleton, iter_tensors
from olive_bf16_pass.typed_data import main_initializers_are_untyped

__all__ = ["INLINE_LIMIT", "SourceModel", "external_info", "location_parts", "read_model", "resolve_external"]

INLINE_LIMIT = 1024  # raw_data of at least this many bytes stays on disk in the skeleton
_SEPARATORS = re.compile(r"[\\/]")


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def location_parts(location: str) -> list[str] | None:
    """The folder names of a relative external-data location, or None when it may leave the folder.

    Judged the same on every platform: files written on Windows may carry ``\\``, so both
    separators split, and drive letters, UNC and rooted paths, ``..`` and NUL are refused
    everywhere (a ``..\\`` escape is a traversal on Linux too once the file reaches Windows).
    """
    if not location or "\0" in location or ":" in location or location[0] in "/\\":
        return None
    parts = [p for p in _SEPARATORS.split(location) if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


@dataclass
class SourceModel:
    """A model read for conversion: its skeleton, and where each of its tensors' bytes is (found once)."""

    skeleton: Skeleton
    path: Path  # the model file, as given
    file: Path  # the model file itself, links resolved
    locations: dict[tuple[str, str, str], tuple[Path, int, int]] = field(default_factory=dict)
    files: frozenset[Path] = field(default_factory=frozenset)  # every file read, resolved

    @property
    def model(self) -> onnx.ModelProto:
        return self.skeleton.model

    @property
    def scopes(self) -> list[Scope]:
        return self.skeleton.scopes

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def where(self, tensor: onnx.TensorProto) -> tuple[Path, int, int]:
        """The checked (file, offset, length) of an external tensor's bytes, as found when the model was read.

        Looked up by the reference's value, not the message's identity, so the copies an opset upgrade
        makes find their bytes too."""
        try:
            return self.locations[_reference(tensor)]
        except KeyError:
            raise ConversionError(
                f"tensor {tensor.name!r}: its external data reference was not in the model that was read; this is "
                "a bug in the converter: please report it."
            ) from None


def _reference(tensor: onnx.TensorProto) -> tuple[str, str, str]:
    info = external_info(tensor)
    return info.get("location", ""), info.get("offset", "0"), info.get("length", "")


def _check_input_path(path: Path) -> Path:
    """The model file with links resolved, or a one-line refusal."""
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        if path.is_symlink():
            raise ConversionError(f"{path}: a link to a file that does not exist. Point it at the model.") from None
        raise ConversionError(f"{path}: no such file. Check the path of the input model.") from None
    except (RuntimeError, OSError) as exc:  # a link loop (RuntimeError before Python 3.13)
        raise ConversionError(
            f"{path}: cannot follow the path ({exc}); a symbolic link loops or is broken. Point the link at the "
            "model file, or give the model's own path."
        ) from exc
    if resolved.is_dir():
        raise ConversionError(f"{path}: is a directory. Give the .onnx file inside it.")
    if not resolved.is_file():
        raise ConversionError(f"{path}: not a regular file. Give the .onnx file of the model.")
    if resolved.stat().st_size == 0:
        raise ConversionError(f"{path}: the file is empty, not an ONNX model. Export the model again.")
    return resolved


def read_model(path: str | os.PathLike) -> SourceModel:
    """Read ``path`` as a skeleton; every external-data reference is checked before use."""
    path = Path(path)
    resolved = _check_input_path(path)
    not_onnx = f"{path}: not a valid ONNX model (the file is truncated or not ONNX). Re-export or re-download it."
    try:
        with open(resolved, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            scanner = SkeletonScanner(buf, INLINE_LIMIT)
            raw = scanner.scan()
        text_is_utf8 = strict_text.all_text_is_utf8(raw)  # before the real parse: the two never hold memory at once
        untyped = main_initializers_are_untyped(raw)
        model = onnx.ModelProto()
        model.ParseFromString(raw)
    except UnicodeDecodeError as exc:  # protobuf runtimes that validate strings while parsing
        raise ConversionError(f"{path}: {strict_text.not_utf8('', exc.object[exc.start:exc.end])}") from exc
    except TooDeep as exc:
        raise ConversionError(_too_deep(path, _depth_of(resolved) or exc.depth)) from None
    except (Truncated, DecodeError, ValueError, OSError) as exc:
        if isinstance(exc, PermissionError):
            raise ConversionError(f"{path}: cannot read the file ({exc.strerror}).") from exc
        depth = _depth_of(resolved) if isinstance(exc, DecodeError) else 0
        if depth > PROTOBUF_DEPTH:
            raise ConversionError(_too_deep(path, depth)) from exc
        raise ConversionError(not_onnx) from exc
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ConversionError(not_onnx)
    skeleton = Skeleton.read(model)  # every tensor left is one the walk finds
    if not text_is_utf8:  # before any name is used: locations are names too
        strict_text.check_names(model, skeleton.scopes, f"{path}: ")
        strict_text.check_text(model, f"{path}: ")
    validation.check_inline_data(skeleton.scopes, f"{path}: ", untyped)
    validation.check_single_definitions(skeleton.scopes, f"{path}: ")
    validation.check_sparse_inline(skeleton.scopes, f"{path}: ")
    lifted = frozenset(scanner.spans)  # (offset, length) of raw_data the scanner left in the model file
    locations: dict[tuple[str, str, str], tuple[Path, int, int]] = {}
    for tensor in iter_tensors(model, skeleton.scopes):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        reference = _reference(tensor)  # each tensor is checked against its own shape, tied ones too
        span = _span(reference)
        if span in lifted and reference[0] == LIFTED:
            field = verbatim_field(tensor)  # a packed varint field, carried as it is
            problem = (validation.size_problem(tensor, "raw_data", span[1]) if field is None
                       else validation.count_problem(tensor, VARINT_FIELDS[field], scanner.values[span]))
            if problem:
                raise ConversionError(f"{path}: {validation.describe(skeleton.scopes, tensor)}: {problem}")
            locations[reference] = (resolved, *span)
        else:
            locations[reference] = resolve_external(path.parent, tensor, also_inside=resolved.parent)
    files = frozenset({resolved, *(file for file, _, _ in locations.values())})
    return SourceModel(skeleton, path, resolved, locations, files)


def _too_deep(path: Path, depth: int) -> str:
    return (
        f"{path}: the model nests its subgraphs {depth} messages deep; protobuf (and with it onnx and ONNX Runtime) "
        f"reads at most {PROTOBUF_DEPTH}, so no ONNX tool can load it. Flatten the nested If / Loop / Scan "
        "subgraphs (or inline the functions that nest them) and export it again."
    )


def _depth_of(file: Path) -> int:
    """The model's nesting depth, or 0 when its bytes are malformed (a truncated file)."""
    try:
        with open(file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return nesting_depth(buf)
    except (Truncated, OSError, ValueError):
        return 0


def _span(reference: tuple[str, str, str]) -> tuple[int, int] | None:
    try:
        return int(reference[1]), int(reference[2])
    except ValueError:
        return None


def resolve_external(
    base_dir: Path, tensor: onnx.TensorProto, expected: int | None = None, also_inside: Path | None = None
) -> tuple[Path, int, int]:
    """Where an external tensor's bytes are: (file, offset, length), refusing paths outside base_dir.

    ``also_inside``: the folder the model file itself resolves into. A Hugging Face cache keeps
    ``snapshots/REV/model.onnx`` and its data as links into ``blobs/``: data that lands beside
    the model's own bytes is the model's, not an escape.
    """
    info = external_info(tensor)
    location = info.get("location", "")
    where = f"tensor {tensor.name!r}: external data location {location!r}"
    if "\0" in location:
        raise ConversionError(
            f"{where} contains a NUL byte, which no file name can hold; the file is corrupt. Re-export the model "
            "with its external data."
        )
    parts = location_parts(location)
    if parts is None:
        raise ConversionError(
            f"{where} is not a plain relative path inside the model's folder; refusing to read it. "
            "Keep external data files beside the model."
        )
    bases = {base_dir.resolve(), *([also_inside.resolve()] if also_inside is not None else [])}
    try:
        target = base_dir.joinpath(*parts).resolve()
    except (RuntimeError, OSError) as exc:  # a link loop (RuntimeError before Python 3.13)
        raise ConversionError(_loops(where, exc)) from exc
    if not any(target.is_relative_to(base) for base in bases):
        raise ConversionError(
            f"{where} resolves outside the model's folder (through a link); refusing to read it. If the model "
            "comes from the Hugging Face cache, copy its files out of the cache into one folder (or download "
            "with huggingface_hub's local_dir) and convert that copy."
        )
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # Python 3.13+ resolves a loop without raising
            raise ConversionError(_loops(where, exc)) from exc
        raise ConversionError(
            f"{where}: the file is missing. Copy the model together with its external data files."
        ) from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device"
        raise ConversionError(
            f"{where}: is {kind}, not a data file; refusing to read it. Point the location at the tensor's data file."
        )
    try:
        offset = int(info.get("offset", 0))
        size = target.stat().st_size
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError as exc:
        raise ConversionError(f"{where}: offset or length is not a number.") from exc
    if offset < 0 or length < 0 or offset + length > size:
        raise ConversionError(
            f"{where}: the file is shorter ({size} bytes) than the tensor needs "
            f"(offset {offset} + length {length}); the external data is truncated."
        )
    expected = expected_nbytes(tensor) if expected is None else expected
    if expected is not None and expected != length:
        raise ConversionError(f"{where}: holds {length} bytes but the tensor's shape needs {expected}.")
    return target, offset, length


def _loops(where: str, exc: Exception) -> str:
    return (
        f"{where}: cannot follow the path ({exc}); a symbolic link loops. Replace the link with the data file "
        "(or point it at the file)."
    )
