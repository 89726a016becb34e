"""Writing a model: the .onnx (pieces from serializer.py) and its external data, under temporaries.

The skeleton's tensors that are still on disk are streamed from their sources (converted on the
way when the caller says so) into temporary files beside the destination; only when both are
complete and checked are they renamed into place, data first. Every handle is closed before a
rename: Windows cannot replace a file that is still open.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from olive_bf16_pass import lean_onnx as onnx
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.io import serializer
from olive_bf16_pass.io.destination import Destination, default_data_name
from olive_bf16_pass.io.model_file import write_pieces
from olive_bf16_pass.io.positional import Output
from olive_bf16_pass.io.serializer import clear_external
from olive_bf16_pass.io.source import location_parts
from olive_bf16_pass.io.streamer import Conversion, Streamer
from olive_bf16_pass.io.wire import verbatim_field
from olive_bf16_pass.traversal import Skeleton, iter_tensors

__all__ = ["DEFAULT_SIZE_THRESHOLD", "PROTOBUF_LIMIT", "ExternalDataSpec", "Staged", "Written", "stage_model",
           "write_model"]

Checked = TypeVar("Checked")

logger = logging.getLogger(__name__)

DEFAULT_SIZE_THRESHOLD = 1024  # bytes, as onnx.save and Olive's size_threshold default
PROTOBUF_LIMIT = 2**31 - 1  # a single-file model must serialize below 2 GB
_ALIGN = 4096  # external data offsets: page-aligned, so runtimes may map them
# Non-float tensors under this many bytes stay in the .onnx whatever size_threshold says:
# ONNX Runtime cannot shape-infer through external shape/axes tensors ("Cannot parse data from
# external tensors", e.g. Slice starts), so size_threshold=0 would give a model it refuses.
_SHAPE_LIKE_BYTES = 1024
_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
)


@dataclass
class ExternalDataSpec:
    """How the output stores its tensors outside the .onnx file."""

    size_threshold: int = DEFAULT_SIZE_THRESHOLD  # tensors with fewer bytes stay inline
    convert_attribute: bool = False  # Constant values and other attribute tensors go out too


@dataclass
class Written(Generic[Checked]):
    files: list[Path]  # model last
    checked: Checked | None  # what ``check`` returned


@dataclass
class Staged:
    """The output's temporaries, complete and not yet checked: ``place`` renames them into place.

    ``stage_model`` hands it out as a context manager: any failure inside (a refused check, Ctrl-C)
    removes them, so a caller can drop the model it wrote from, and so its memory, before the checker runs."""

    temps: list[tuple[Path, Path]]  # (temporary, final), model last
    destination: Destination
    unchanged: bool = False  # the output is one file of exactly the bytes of ``stage_model``'s ``source``

    @property
    def model(self) -> Path:
        """The temporary .onnx, to be checked before it is placed."""
        return self.temps[-1][0]

    @property
    def files(self) -> list[Path]:
        return [final for _, final in self.temps]

    @property
    def nbytes(self) -> int:
        return sum(tmp.stat().st_size for tmp, _ in self.temps)

    def place(self) -> None:
        self.destination.put_in_place(self.temps)



def write_model(
    skeleton: Skeleton,
    destination: Destination,
    streamer: Streamer,
    conversions: dict[int, Conversion],
    external: ExternalDataSpec | None,
    check: Callable[[Path], Checked] | None = None,
) -> Written[Checked]:
    """Write the skeleton's model to ``destination`` atomically; return the files written and ``check``'s answer.

    ``check`` gets the written temporary .onnx before anything is renamed into place."""
    with stage_model(skeleton, destination, streamer, conversions, external) as staged:
        checked = check(staged.model) if check is not None else None
        staged.place()
    return Written(staged.files, checked)


@contextlib.contextmanager
def stage_model(
    skeleton: Skeleton,
    destination: Destination,
    streamer: Streamer,
    conversions: dict[int, Conversion],
    external: ExternalDataSpec | None,
    source: Path | None = None,
) -> Iterator[Staged]:
    """Write the skeleton's model into temporaries beside ``destination``; nothing is in place yet.

    ``source``: the model file it was read from, when nothing was converted; ``Staged.unchanged`` then
    says whether the output is that file's bytes again (told from the bytes written around the
    tensors streamed as they were, which land where they were or not at all).

    One try covers writing them and the caller's block, so no moment (a signal between the two
    included) leaves a temporary behind.

    ``conversions`` (keyed by ``id`` of the tensor message) names the tensors still on disk that
    become BF16 on the way; every other external tensor is copied as it is.
    """
    model, all_scopes = skeleton.model, skeleton.scopes
    dst = destination.model
    folder = destination.folder
    if not folder.is_dir():
        if folder.exists():
            raise ConversionError(f"{dst}: {folder} is not a folder. Choose an output path inside a folder.")
        raise ConversionError(f"{dst}: the folder {folder} does not exist. Create it first.")
    if dst.is_dir():
        raise ConversionError(f"{dst}: is a directory. Give an output file name ending in .onnx.")
    if dst.exists() and not dst.is_file():
        raise ConversionError(f"{dst}: exists and is not a regular file (a pipe or a device); choose another path.")
    temps: list[tuple[Path, Path]] = []  # (temporary, final)
    created: list[Path] = []  # every temporary, registered as soon as it exists
    unchanged = False
    try:
        external_tensors = [t for t in iter_tensors(model, all_scopes) if t.data_location == onnx.TensorProto.EXTERNAL]
        streamer.total = sum(streamer.locate(t)[2] for t in external_tensors)
        if external is None:
            pieces, size = serializer.pieces(model, streamer, conversions, all_scopes=all_scopes)
            if size >= PROTOBUF_LIMIT:
                logger.warning("%s: the output would exceed 2 GB; writing its tensors as external data.", dst)
                external = ExternalDataSpec()
            else:
                same_size = source is not None and size == source.stat().st_size
                tmp, unchanged = write_pieces(pieces, destination, streamer, created, source if same_size else None)
                temps.append((tmp, dst))
            del pieces
        if external is not None:
            temps.extend(_write_with_external_data(skeleton, destination, external, streamer, conversions, created))
        streamer.close()  # an in-place write replaces the very file it read from
        # this frame lets go of the model (the streamer reads through it), so the caller can free it
        del skeleton, model, all_scopes, conversions, external_tensors
        streamer = None
        yield Staged(temps, destination, unchanged)
    except BaseException:
        if streamer is not None:
            streamer.close()
        _remove(created)
        raise


def _remove(temporaries: list[Path]) -> None:
    for tmp in temporaries:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:  # Windows: still open elsewhere; say so rather than hide the real error
            logger.warning("could not remove the temporary %s (%s); delete it by hand.", tmp, exc.strerror)


# --- external data ---------------------------------------------------------------------------


def _write_with_external_data(
    skeleton: Skeleton,
    destination: Destination,
    spec: ExternalDataSpec,
    streamer: Streamer,
    conversions: dict[int, Conversion],
    created: list[Path],
) -> list[tuple[Path, Path]]:
    model, all_scopes, dst = skeleton.model, skeleton.scopes, destination.model
    name = destination.data_name or default_data_name(dst.name)
    if location_parts(name) != [name]:
        raise ConversionError(f"external data name {name!r} must be a plain file name, without folders.")
    if name == dst.name:
        raise ConversionError(f"external data name {name!r} is the model's own file name; choose another.")
    data = destination.data
    if data.exists() and not data.is_file():
        raise ConversionError(f"{data}: exists and is not a regular file (a pipe, a device or a folder); "
                              "choose another external data name.")
    data_out, data_tmp = destination.new_temporary(".data", created)
    offset = 0
    written: dict[int, onnx.TensorProto] = {}  # tensors now referring to the data file (kept alive: ids stay theirs)
    small: list[tuple[int, tuple[str, tuple[Path, int, int], Conversion | None]]] = []  # (offset, located): batched

    def write_small() -> None:
        for (at, _), data in zip(small, streamer.small_located([located for _, located in small])):
            target.pwrite(data, at)
        small.clear()

    with data_out:
        target = Output(data_tmp)
        try:
            for scope in all_scopes:
                outside = list(scope.initializers)
                if spec.convert_attribute:
                    outside += scope.attribute_tensors
                for tensor in outside:
                    conversion = conversions.get(id(tensor))
                    on_disk = tensor.data_location == onnx.TensorProto.EXTERNAL
                    if on_disk and verbatim_field(tensor) is not None:
                        continue  # integers in a varint field, not raw bytes: they stay in the .onnx as they came
                    threshold = spec.size_threshold
                    if tensor.data_type not in _FLOAT_TYPES:  # shapes, axes, starts: shape inference reads them
                        threshold = max(threshold, _SHAPE_LIKE_BYTES)
                    nbytes = streamer.out_nbytes(tensor, conversion) if on_disk else len(tensor.raw_data)
                    if nbytes < threshold or (not on_disk and not tensor.HasField("raw_data")):
                        continue  # stays in the .onnx: streamed there if it is on disk
                    offset += -offset % _ALIGN  # the gap is a hole: reads as zeros
                    if on_disk and streamer.batched(nbytes):  # located now: the message is repointed below
                        small.append((offset, (tensor.name, streamer.locate(tensor), conversion)))
                        if len(small) >= 4096:
                            write_small()
                    elif on_disk:
                        streamer.copy(tensor, target, offset, conversion)
                    else:
                        target.pwrite(tensor.raw_data, offset)
                        tensor.ClearField("raw_data")
                    clear_external(tensor)
                    tensor.data_location = onnx.TensorProto.EXTERNAL
                    for key, value in (("location", name), ("offset", offset), ("length", nbytes)):
                        tensor.external_data.add(key=key, value=str(value))
                    written[id(tensor)] = tensor
                    offset += nbytes
            write_small()
            streamer.flush()
        finally:
            streamer.drain()
            target.close()
        data_out.truncate(offset)  # the file ends where the last tensor does
        os.fsync(data_out.fileno())
    # what stays in the .onnx (small tensors, attribute tensors) streams there from its source
    pieces, _ = serializer.pieces(model, streamer, conversions, frozenset(written), all_scopes)
    return [(data_tmp, data), (write_pieces(pieces, destination, streamer, created)[0], dst)]
