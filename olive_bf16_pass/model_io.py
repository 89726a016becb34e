"""Reading and writing models: the only module that touches the file system.

A model is read as a *skeleton*: a ``ModelProto`` whose large tensors are left on disk and
described by ONNX's own external-data fields (``location``, ``offset``, ``length``). For a
single-file model the location is the model file itself, found by scanning the protobuf wire
format, so a 1 GB model costs kilobytes of memory until it is written. Writing streams each
large tensor from its source, converting it on the way when the graph edits marked it, into
temporary files beside the destination that are renamed into place only when complete.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import mmap
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.rounding import RoundingStats, float32_to_bfloat16_bits

logger = logging.getLogger(__name__)

# A tensor marked by the graph edits: stored FP32 at its source, written as BF16.
CONVERT_MARK = "olive_bf16_pass.source_type"
INLINE_LIMIT = 1024  # raw_data of at least this many bytes stays on disk in the skeleton
PROTOBUF_LIMIT = 2**31 - 1  # a single-file model must serialize below 2 GB
_ALIGN = 4096  # external data offsets: page-aligned, so runtimes may map them
# Non-float tensors under this many bytes stay in the .onnx whatever size_threshold says:
# ONNX Runtime cannot shape-infer through external shape/axes tensors ("Cannot parse data from
# external tensors", e.g. Slice starts), so size_threshold=0 would give a model it refuses.
_SHAPE_LIKE_BYTES = 1024
_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
)
_CHUNK_BYTES = 16 << 20

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LEN = 2  # wire type of length-delimited fields


# --- protobuf wire format -------------------------------------------------------------------


def _read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Truncated


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(field: int, length: int) -> bytes:
    """Tag and length prefix of a length-delimited field."""
    return _varint(field << 3 | _LEN) + _varint(length)


class _Truncated(Exception):
    pass


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (field, wire_type, field_start, value_start, value_end) of a message's fields."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos, end)
            value_start = pos
        elif wire == 1:
            value_start, pos = pos, pos + 8
        elif wire == _LEN:
            length, value_start = _read_varint(buf, pos, end)
            pos = value_start + length
        elif wire == 5:
            value_start, pos = pos, pos + 4
        else:
            raise _Truncated
        if pos > end or field == 0:
            raise _Truncated
        yield field, wire, field_start, value_start, pos


# --- reading ---------------------------------------------------------------------------------


@dataclass
class SourceModel:
    """A model read for conversion: its skeleton and where its tensors' bytes live."""

    model: onnx.ModelProto
    path: Path
    base_dir: Path
    files: frozenset[Path]  # the .onnx file and the external data files it reads, resolved

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise ConversionError(f"{path}: no such file. Check the path of the input model.")
    if path.is_dir():
        raise ConversionError(f"{path}: is a directory. Give the .onnx file inside it.")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path}: the file is empty, not an ONNX model. Export the model again.")


def read_model(path: str | os.PathLike) -> SourceModel:
    """Read ``path`` as a skeleton; every external-data reference is checked before use."""
    path = Path(path)
    _check_input_path(path)
    not_onnx = f"{path}: not a valid ONNX model (the file is truncated or not ONNX). Re-export or re-download it."
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            skeleton, refs = _scan_skeleton(buf, INLINE_LIMIT)
        model = onnx.ModelProto()
        model.ParseFromString(skeleton)
    except (_Truncated, DecodeError, ValueError, OSError) as exc:
        if isinstance(exc, PermissionError):
            raise ConversionError(f"{path}: cannot read the file ({exc.strerror}).") from exc
        raise ConversionError(not_onnx) from exc
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ConversionError(not_onnx)
    for index, offset, length in refs:
        tensor = model.graph.initializer[index]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", path.name), ("offset", offset), ("length", length)):
            tensor.external_data.add(key=key, value=str(value))
    base_dir = path.parent
    files = {path.resolve()}
    for tensor in iter_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            files.add(_resolve_external(base_dir, tensor)[0])
    return SourceModel(model, path, base_dir, frozenset(files))


def _scan_skeleton(buf, inline_limit: int) -> tuple[bytes, list[tuple[int, int, int]]]:
    """Copy the model's bytes except large initializer raw_data; return (bytes, [(index, offset, length)])."""
    parts: list[bytes] = []
    refs: list[tuple[int, int, int]] = []
    graph_done = False
    for field, wire, fstart, vstart, vend in _fields(buf, 0, len(buf)):
        if field != _MODEL_GRAPH or wire != _LEN or graph_done:
            parts.append(buf[fstart:vend])
            continue
        graph_done = True  # a second graph field would merge; its initializers stay inline
        graph_parts: list[bytes] = []
        index = 0
        for gfield, gwire, gfstart, gvstart, gvend in _fields(buf, vstart, vend):
            if gfield != _GRAPH_INITIALIZER or gwire != _LEN:
                graph_parts.append(buf[gfstart:gvend])
                continue
            kept, raw = [], None
            for tfield, twire, tfstart, tvstart, tvend in _fields(buf, gvstart, gvend):
                if tfield == _TENSOR_RAW_DATA and twire == _LEN and tvend - tvstart >= inline_limit:
                    raw = (tvstart, tvend - tvstart)
                else:
                    kept.append(buf[tfstart:tvend])
            if raw is None:
                graph_parts.append(buf[gfstart:gvend])
            else:
                body = b"".join(kept)
                graph_parts.append(_len_field(_GRAPH_INITIALIZER, len(body)) + body)
                refs.append((index, *raw))
            index += 1
        body = b"".join(graph_parts)
        parts.append(_len_field(_MODEL_GRAPH, len(body)) + body)
    return b"".join(parts), refs


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph in its node attributes (If, Loop, Scan, custom ops)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_graphs(sub)


def iter_attribute_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Tensors held in node attributes (Constant values and the like), in every graph."""
    for graph in iter_graphs(model.graph):
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def iter_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that can hold data: initializers of every graph, then attribute tensors."""
    for graph in iter_graphs(model.graph):
        yield from graph.initializer
    yield from iter_attribute_tensors(model)


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


_SEPARATORS = re.compile(r"[\\/]")


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


def _resolve_external(base_dir: Path, tensor: onnx.TensorProto) -> tuple[Path, int, int]:
    """Where an external tensor's bytes are: (file, offset, length), refusing paths outside base_dir."""
    info = external_info(tensor)
    location = info.get("location", "")
    where = f"tensor {tensor.name!r}: external data location {location!r}"
    parts = location_parts(location)
    if parts is None:
        raise ConversionError(
            f"{where} is not a plain relative path inside the model's folder; refusing to read it. "
            "Keep external data files beside the model."
        )
    base = base_dir.resolve()
    target = base_dir.joinpath(*parts).resolve()
    if not target.is_relative_to(base):
        raise ConversionError(f"{where} resolves outside the model's folder (through a link); refusing to read it.")
    if not target.is_file():
        raise ConversionError(f"{where}: the file is missing. Copy the model together with its external data files.")
    try:
        offset = int(info.get("offset", 0))
        size = target.stat().st_size
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError as exc:
        raise ConversionError(f"{where}: offset or length is not a number.") from exc
    expected = expected_nbytes(tensor) if CONVERT_MARK not in info else int(np.prod(tensor.dims, dtype=np.int64)) * 4
    if offset < 0 or length < 0 or offset + length > size:
        raise ConversionError(
            f"{where}: the file is shorter ({size} bytes) than the tensor needs "
            f"(offset {offset} + length {length}); the external data is truncated."
        )
    if expected is not None and expected != length:
        raise ConversionError(f"{where}: holds {length} bytes but the tensor's shape needs {expected}.")
    return target, offset, length


def expected_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of the tensor's data for fixed-size types (4-bit types packed two to a byte), else None."""
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    elements = int(np.prod(tensor.dims, dtype=np.int64))
    if tensor.data_type in _FOUR_BIT:
        return (elements + 1) // 2
    try:
        return elements * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):  # strings, undefined, types newer than this onnx
        return None


_FOUR_BIT = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
}

def read_external_bytes(base_dir: Path, tensor: onnx.TensorProto) -> bytes:
    """The whole data of one external tensor, for the few tensors that must be in memory."""
    path, offset, length = _resolve_external(base_dir, tensor)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# --- writing ---------------------------------------------------------------------------------


@dataclass
class ExternalDataSpec:
    """How the output stores its tensors outside the .onnx file."""

    name: str | None = None  # file name beside the model; default "<model file>.data"
    size_threshold: int = 1024  # tensors with fewer bytes stay inline


Progress = Callable[[int, int], None]


class _Streamer:
    """Copies tensor bytes from their sources to known offsets of outputs, converting marked ones.

    Every output offset is known before anything is written, so each chunk is an independent
    task: positional read, conversion, positional write. Two workers run them, keeping both
    cores busy (file I/O and numpy loops release the GIL); chunk buffers come from a small ring,
    and a slot is reused only once its task is done. Positional I/O goes through
    :class:`_Handles`, so it runs the same on Windows, which has no ``os.pread``/``pwrite``.
    """

    WORKERS = 2
    SLOTS = 4

    def __init__(self, base_dir: Path, rounding: str, saturate: bool, stats: dict[str, RoundingStats]):
        self.base_dir, self.rounding, self.saturate, self.stats = base_dir, rounding, saturate, stats
        self._sources = _Handles("rb")
        self._where: dict[str, tuple[Path, int, int]] = {}  # stored name -> checked (file, offset, length)
        self._in = [bytearray(_CHUNK_BYTES) for _ in range(self.SLOTS)]
        self._out = [np.empty(_CHUNK_BYTES // 4, dtype=np.uint16) for _ in range(self.SLOTS)]
        self._busy: list[Future | None] = [None] * self.SLOTS
        self._slot = 0
        self._stats_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="olive-bf16-chunk")
        self.done = 0
        self.total = 0
        self.progress: Progress | None = None

    def where(self, tensor: onnx.TensorProto) -> tuple[Path, int, int]:
        """The checked (file, offset, length) of an external tensor, resolved once per conversion."""
        key = tensor.name
        if key not in self._where:
            self._where[key] = _resolve_external(self.base_dir, tensor)
        return self._where[key]

    def out_nbytes(self, tensor: onnx.TensorProto) -> int:
        length = self.where(tensor)[2]
        return length // 2 if external_info(tensor).get(CONVERT_MARK) else length

    def flush(self) -> None:
        """Wait until every queued chunk is written; raise the first error."""
        pending, self._busy = self._busy, [None] * self.SLOTS
        for future in pending:
            if future is not None:
                future.result()

    def drain(self) -> None:
        """Wait for queued chunks, ignoring their errors: the output is being abandoned anyway."""
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the error that made us abandon it is already raising
            self._busy = [None] * self.SLOTS

    def _take_slot(self) -> int:
        slot, self._slot = self._slot, (self._slot + 1) % self.SLOTS
        if self._busy[slot] is not None:
            self._busy[slot].result()  # raises a failed chunk here, not later
            self._busy[slot] = None
        return slot

    def copy(self, tensor: onnx.TensorProto, out: _Output, position: int) -> int:
        """Queue the tensor's (converted) bytes for ``out`` at ``position``; return their size."""
        path, offset, length = self.where(tensor)
        convert = bool(external_info(tensor).get(CONVERT_MARK))
        stats = self.stats.setdefault(tensor.name, RoundingStats()) if convert else None
        for start in range(0, length, _CHUNK_BYTES):
            n = min(_CHUNK_BYTES, length - start)
            at = position + (start // 2 if convert else start)
            slot = self._take_slot()
            self._busy[slot] = self._pool.submit(self._chunk, slot, path, offset + start, n, out, at, stats, tensor.name)
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)
        return length // 2 if convert else length

    def _chunk(self, slot, path, offset, n, out, at, stats, name) -> None:
        view = memoryview(self._in[slot])[:n]
        if self._sources.read_into(path, view, offset) < n:
            raise ConversionError(f"tensor {name!r}: its data ended early; the file is truncated.")
        if stats is None:
            out.pwrite(view, at)
            return
        local = RoundingStats()
        values = np.frombuffer(self._in[slot], dtype=np.float32, count=n // 4)
        bits = float32_to_bfloat16_bits(values, self.rounding, self.saturate, self._out[slot][: n // 4], local)
        out.pwrite(bits.data, at)
        with self._stats_lock:
            stats.merge(local)

    def close(self) -> None:
        """Stop the workers and close the sources: Windows cannot replace a file still open."""
        self._pool.shutdown()
        self._sources.close()


class _Handles:
    """Positional I/O that runs everywhere: one unbuffered file object per (thread, file).

    ``seek`` + ``readinto``/``write`` on a handle no other thread uses is as positional as
    ``os.pread``/``os.pwrite``, which Windows lacks, and measured as fast on 16 MB chunks.
    """

    def __init__(self, mode: str):
        self._mode = mode
        self._open: dict[tuple[int, Path], object] = {}
        self._lock = threading.Lock()

    def _get(self, path: Path):
        key = (threading.get_ident(), path)
        handle = self._open.get(key)
        if handle is None:
            handle = open(path, self._mode, buffering=0)  # noqa: SIM115 - closed by close()
            with self._lock:
                self._open[key] = handle
        return handle

    def read_into(self, path: Path, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset``; return the bytes read (fewer only at the end of the file)."""
        handle = self._get(path)
        handle.seek(offset)
        filled = 0
        while filled < len(view):
            got = handle.readinto(view[filled:])
            if not got:
                break
            filled += got
        return filled

    def write(self, path: Path, data, at: int) -> None:
        handle = self._get(path)
        handle.seek(at)
        view = memoryview(data).cast("B")
        while len(view):
            view = view[handle.write(view) :]

    def close(self) -> None:
        with self._lock:
            handles, self._open = list(self._open.values()), {}
        for handle in handles:
            handle.close()


class _Output:
    """Positional writes into one file, from any thread."""

    def __init__(self, path: Path):
        self.path = path
        self._handles = _Handles("r+b")

    def pwrite(self, data, at: int) -> None:
        self._handles.write(self.path, data, at)

    def close(self) -> None:
        self._handles.close()


class _MemoryOutput(_Output):
    """Positional writes into memory, for the few tensors that must be inline."""

    def __init__(self, size: int):
        self.data = bytearray(size)

    def close(self) -> None:
        pass

    def pwrite(self, data, at: int) -> None:
        view = memoryview(data).cast("B")
        self.data[at : at + len(view)] = view


def _inline_tensor(tensor: onnx.TensorProto, streamer: _Streamer) -> None:
    """Bring one external tensor's (converted) bytes into the proto."""
    buf = _MemoryOutput(streamer.out_nbytes(tensor))
    streamer.copy(tensor, buf, 0)
    streamer.flush()
    _clear_external(tensor)
    tensor.raw_data = bytes(buf.data)


def _clear_external(tensor: onnx.TensorProto) -> None:
    del tensor.external_data[:]
    tensor.ClearField("data_location")


def write_model(
    model: onnx.ModelProto,
    dst: Path,
    base_dir: Path | None,
    *,
    rounding: str,
    saturate: bool,
    external: ExternalDataSpec | None,
    stats: dict[str, RoundingStats],
    check: Callable[[onnx.ModelProto], None] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write ``model`` to ``dst`` atomically; return the files written.

    Tensors still on disk (external in the skeleton) are streamed from ``base_dir``; those the
    graph edits marked are converted to BF16 on the way. ``check`` runs on the written
    skeleton before anything is renamed into place.
    """
    dst = Path(dst)
    folder = dst.parent if str(dst.parent) else Path(".")
    if not folder.is_dir():
        if folder.exists():
            raise ConversionError(f"{dst}: {folder} is not a folder. Choose an output path inside a folder.")
        raise ConversionError(f"{dst}: the folder {folder} does not exist. Create it first.")
    if dst.is_dir():
        raise ConversionError(f"{dst}: is a directory. Give an output file name ending in .onnx.")
    streamer = _Streamer(base_dir or Path("."), rounding, saturate, stats)
    streamer.progress = progress
    temps: list[tuple[Path, Path]] = []  # (temporary, final)
    created: list[Path] = []  # every temporary, registered as soon as it exists
    try:
        streamed = [t for t in iter_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
        streamer.total = sum(streamer.where(t)[2] for t in streamed)
        if external is None and _single_file_size(model, streamer) >= PROTOBUF_LIMIT:
            logger.warning("%s: the output would exceed 2 GB; writing its tensors as external data.", dst)
            external = ExternalDataSpec()
        if external is None:
            temps.append((_write_single_file(model, dst, streamer, created), dst))
        else:
            temps.extend(_write_with_external_data(model, dst, external, streamer, created))
        streamer.close()  # an in-place write replaces the very file it read from
        if check is not None:
            check(_reread_for_check(temps, dst))
        if len(temps) > 1 and any(final.exists() for _, final in temps if final != dst) and dst.exists():
            # an old model beside a data file about to be replaced would read the new bytes at its
            # old offsets: remove it first, so an interruption leaves no model rather than a wrong one
            _replace_or_explain(dst.unlink, dst)
        for tmp, final in sorted(temps, key=lambda pair: pair[1] == dst):  # data first
            _replace_or_explain(lambda: os.replace(tmp, final), final)
        return [final for _, final in temps]
    except BaseException:
        streamer.close()
        for tmp in created:
            try:
                tmp.unlink(missing_ok=True)
            except OSError as exc:  # Windows: still open elsewhere; say so rather than hide the real error
                logger.warning("could not remove the temporary %s (%s); delete it by hand.", tmp, exc.strerror)
        raise


def _replace_or_explain(action: Callable[[], None], final: Path) -> None:
    """Run a rename or delete of ``final``; on Windows one fails while any process has it open."""
    try:
        action()
    except PermissionError as exc:
        raise ConversionError(
            f"{final}: cannot replace it ({exc.strerror}): another program probably has it open (an ONNX "
            "Runtime session, Olive, an editor or a virus scanner on Windows). Close it and run again, "
            "or write to another output path."
        ) from exc


_SHORT_NAME = 64  # longer output names are shortened in temporaries (NAME_MAX 255, Windows MAX_PATH 260)


def _temp_prefix(dst: Path) -> str:
    """``.OUT.``, or for a long OUT its start and a hash, so temporaries stay within name limits."""
    name = dst.name
    if len(name) > _SHORT_NAME:
        name = f"{name[:40]}~{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"
    return f".{name}."


def temporaries_of(dst: Path) -> list[Path]:
    """Temporary files a write into ``dst`` makes (left behind only by a killed run)."""
    folder = dst.parent if str(dst.parent) else Path(".")
    try:
        return sorted(folder.glob(f"{glob.escape(_temp_prefix(dst))}*.tmp"))
    except OSError:
        return []


def _temp_beside(dst: Path, suffix: str, created: list[Path]) -> tuple[object, Path]:
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(dst), suffix=suffix + ".tmp", dir=dst.parent)
    created.append(Path(name))
    out = os.fdopen(fd, "wb")
    os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; the output gets a plain file's mode
    return out, Path(name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _single_file_size(model: onnx.ModelProto, streamer: _Streamer) -> int:
    external = (t for t in iter_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL)
    return model.ByteSize() + sum(streamer.out_nbytes(t) + 16 for t in external)


def _tensors_not_streamed(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Tensors a single-file write keeps in memory: all but the main graph's initializers."""
    for graph in list(iter_graphs(model.graph))[1:]:
        yield from graph.initializer
    yield from iter_attribute_tensors(model)


def _write_single_file(model: onnx.ModelProto, dst: Path, streamer: _Streamer, created: list[Path]) -> Path:
    """Stream a single-file model: model fields, graph fields, then initializers with raw_data."""
    for tensor in _tensors_not_streamed(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _inline_tensor(tensor, streamer)
    graph = model.graph
    plan = []  # (bytes before the streamed data, tensor to stream or None, streamed bytes)
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            header = onnx.TensorProto()
            header.CopyFrom(tensor)
            _clear_external(header)
            nbytes = streamer.out_nbytes(tensor)
            head = header.SerializeToString() + _len_field(_TENSOR_RAW_DATA, nbytes)
            plan.append((_len_field(_GRAPH_INITIALIZER, len(head) + nbytes) + head, tensor, nbytes))
        else:
            body = tensor.SerializeToString()
            plan.append((_len_field(_GRAPH_INITIALIZER, len(body)) + body, None, 0))
    rest = onnx.GraphProto()
    rest.CopyFrom(graph)
    del rest.initializer[:]
    rest_bytes = rest.SerializeToString()
    graph_len = len(rest_bytes) + sum(len(prefix) + nbytes for prefix, _, nbytes in plan)
    top = onnx.ModelProto()
    top.CopyFrom(model)
    top.ClearField("graph")
    out, tmp = _temp_beside(dst, "", created)
    with out:
        target = _Output(tmp)
        try:
            head = top.SerializeToString() + _len_field(_MODEL_GRAPH, graph_len) + rest_bytes
            target.pwrite(head, 0)
            position = len(head)
            for prefix, tensor, nbytes in plan:
                target.pwrite(prefix, position)
                position += len(prefix)
                if tensor is not None:
                    streamer.copy(tensor, target, position)
                    position += nbytes
            streamer.flush()
        finally:
            streamer.drain()  # no chunk may still be written when the file closes
            target.close()
        os.fsync(out.fileno())
    return tmp


def _write_with_external_data(
    model: onnx.ModelProto, dst: Path, spec: ExternalDataSpec, streamer: _Streamer, created: list[Path]
) -> list[tuple[Path, Path]]:
    name = spec.name or f"{dst.name}.data"
    if location_parts(name) != [name]:
        raise ConversionError(f"external data name {name!r} must be a plain file name, without folders.")
    if name == dst.name:
        raise ConversionError(f"external data name {name!r} is the model's own file name; choose another.")
    data_out, data_tmp = _temp_beside(dst, ".data", created)
    offset = 0
    with data_out:
        target = _Output(data_tmp)
        try:
            for tensor in iter_attribute_tensors(model):  # Constant values and the like stay in the .onnx
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    _inline_tensor(tensor, streamer)
            for tensor in (t for g in iter_graphs(model.graph) for t in g.initializer):
                external = tensor.data_location == onnx.TensorProto.EXTERNAL
                threshold = spec.size_threshold
                if tensor.data_type not in _FLOAT_TYPES:  # shapes, axes, starts: shape inference reads them
                    threshold = max(threshold, _SHAPE_LIKE_BYTES)
                if not external and (not tensor.HasField("raw_data") or len(tensor.raw_data) < threshold):
                    continue
                if external and streamer.out_nbytes(tensor) < threshold:
                    _inline_tensor(tensor, streamer)
                    continue
                offset += -offset % _ALIGN  # the gap is a hole: reads as zeros
                if external:
                    length = streamer.copy(tensor, target, offset)
                else:
                    length = len(tensor.raw_data)
                    target.pwrite(tensor.raw_data, offset)
                    tensor.ClearField("raw_data")
                _clear_external(tensor)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", name), ("offset", offset), ("length", length)):
                    tensor.external_data.add(key=key, value=str(value))
                offset += length
            streamer.flush()
        finally:
            streamer.drain()
            target.close()
        data_out.truncate(offset)  # the file ends where the last tensor does
        os.fsync(data_out.fileno())
    model_out, model_tmp = _temp_beside(dst, ".onnx", created)
    with model_out:
        model_out.write(model.SerializeToString())
        model_out.flush()
        os.fsync(model_out.fileno())
    return [(data_tmp, dst.parent / name), (model_tmp, dst)]


def _reread_for_check(temps: list[tuple[Path, Path]], dst: Path) -> onnx.ModelProto:
    """Scan the written model back (headers only) so the check sees what landed on disk."""
    model_tmp = next(tmp for tmp, final in temps if final == dst)
    with open(model_tmp, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        skeleton, _ = _scan_skeleton(buf, INLINE_LIMIT)
    model = onnx.ModelProto()
    model.ParseFromString(skeleton)
    return model


def structure_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for onnx.checker in which tensors whose data is elsewhere become typed graph inputs.

    The checker resolves external data against the working directory when given a proto, and
    reading it back would cost the model's size in memory. Shape inference is unaffected: the
    tensors it reads (shapes, axes) are small and stay inline.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    # the main graph's inputs: a subgraph's inputs are its formal parameters (an If branch has
    # none), so a subgraph's stripped tensor becomes an outer-scope input, which it may read
    inputs = {v.name for v in copy.graph.input}
    for graph in iter_graphs(copy.graph):
        kept = []
        for tensor in graph.initializer:
            stripped = tensor.data_location == onnx.TensorProto.EXTERNAL or (
                not tensor.raw_data and _has_no_typed_data(tensor) and expected_nbytes(tensor)
            )
            if not stripped:
                kept.append(tensor)
            elif tensor.name not in inputs:
                inputs.add(tensor.name)
                copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
        if len(kept) != len(graph.initializer):
            copies = [onnx.TensorProto() for _ in kept]
            for c, t in zip(copies, kept):
                c.CopyFrom(t)
            del graph.initializer[:]
            graph.initializer.extend(copies)
    return copy


def _has_no_typed_data(tensor: onnx.TensorProto) -> bool:
    return not (
        tensor.float_data or tensor.int32_data or tensor.int64_data or tensor.double_data or tensor.uint64_data
    )
