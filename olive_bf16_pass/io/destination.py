"""Where a conversion writes: the model file, its external data file, the temporaries and the lock.

One object knows every path an output may take, so the writer, the converter's refusal to
overwrite its input, and the command line's checks and clean-up hints name the same files. It
also puts a finished output in place: the previous model survives a replace that fails.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from olive_bf16_pass.errors import ConversionError

__all__ = ["Destination", "default_data_name"]

logger = logging.getLogger(__name__)

_WINDOWS = os.name == "nt"  # where a rename fails while another process has the file open
_SHORT_NAME = 64  # longer output names are shortened in temporaries (NAME_MAX 255, Windows MAX_PATH 260)


def default_data_name(model_name: str) -> str:
    """The external data file's name when none is given: ONNX's habit, ``<model file>.data``."""
    return f"{model_name}.data"


@dataclass(frozen=True)
class Destination:
    """The output model at ``model``; ``data_name``: its external data file's name, when one was given."""

    model: Path
    data_name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "model", Path(self.model))

    @property
    def folder(self) -> Path:
        return self.model.parent if str(self.model.parent) else Path(".")

    @property
    def data(self) -> Path:
        """The external data file, whether or not this output will have one."""
        return self.folder / (self.data_name or default_data_name(self.model.name))

    @property
    def temp_prefix(self) -> str:
        """``.OUT.``, or for a long OUT its start and a hash, so temporaries stay within name limits."""
        name = self.model.name
        if len(name) > _SHORT_NAME:
            import hashlib  # here: its OpenSSL costs 3.5 MB of every conversion's memory, for a rare long name

            name = f"{name[:40]}~{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"
        return f".{name}."

    @property
    def lock(self) -> Path:
        """Held while a writer renames its files into place (see writer._renaming)."""
        return self.folder / f"{self.temp_prefix}lock"

    def temporaries(self) -> list[Path]:
        """Temporary files a write into this output makes (left behind only by a killed run)."""
        try:
            return sorted(self.folder.glob(f"{glob.escape(self.temp_prefix)}*.tmp"))
        except OSError:
            return []

    def put_in_place(self, temps: list[tuple[Path, Path]]) -> None:
        """Rename each finished (temporary, final) into place, data files before the model.

        With one file this is one atomic replace. With a data file, an old model must never read new
        data at its old offsets, and a failed replace (on Windows, a data file an ONNX Runtime
        session has mapped) must not lose the previous model: the old files are first moved aside,
        and put back if any step fails. One writer at a time does this (a lock file beside OUT), so
        the model and data file that end up there come from the same run.
        """
        with _renaming(self):
            old = [final for _, final in temps if final.exists()] if len(temps) > 1 else []
            aside: list[tuple[Path, Path]] = []  # (final, where it waits)
            try:
                for final in sorted(old, key=lambda path: path != self.model):  # the model first: none, not wrong
                    backup = self.folder / f"{self.temp_prefix}{len(aside)}.previous"
                    _replace_or_explain(lambda: os.replace(final, backup), final)
                    aside.append((final, backup))
                for tmp, final in sorted(temps, key=lambda pair: pair[1] == self.model):  # data first
                    _replace_or_explain(lambda: os.replace(tmp, final), final)
            except BaseException:
                for final, backup in reversed(aside):
                    try:
                        os.replace(backup, final)
                    except OSError as exc:
                        logger.warning("could not put back the previous %s (%s); it is at %s.", final.name,
                                       exc.strerror, backup)
                raise
            for _, backup in aside:
                try:
                    backup.unlink()
                except OSError as exc:
                    logger.warning("could not remove %s, the previous output (%s); delete it by hand.", backup,
                                   exc.strerror)

    def new_temporary(self, suffix: str, created: list[Path]):
        """An open binary file beside the model, registered in ``created`` before it exists: a signal
        between its creation and its registration (mkstemp's way) would leave it behind."""
        while True:
            path = self.folder / f"{self.temp_prefix}{os.urandom(4).hex()}{suffix}.tmp"
            created.append(path)
            try:  # a plain file's mode (0666 less the umask), where mkstemp makes 0600
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                created.remove(path)
                continue
            return os.fdopen(fd, "wb"), path


_LOCK_STALE_SECONDS = 5.0  # renaming takes milliseconds: an older lock was left by a killed run
_LOCK_WAIT_SECONDS = 120.0


@contextlib.contextmanager
def _renaming(destination: Destination):
    """One writer at a time renames its files into OUT's place, so the model and data file that
    end up there always come from the same run (two runs into one OUT could otherwise pair one's
    model with the other's data). A lock file beside OUT, made with O_EXCL, works on every platform."""
    dst, lock = destination.model, destination.lock
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > _LOCK_STALE_SECONDS:
                lock.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise ConversionError(
                    f"{dst}: another conversion into the same output holds {lock.name}; wait for it to finish, "
                    "or delete that file if no conversion is running."
                ) from None
            time.sleep(0.02)
            continue
        os.close(fd)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _replace_or_explain(action: Callable[[], None], final: Path) -> None:
    """Run a rename of ``final``; say why one failed (on Windows, while any process has the file open)."""
    try:
        action()
    except PermissionError as exc:
        if _WINDOWS:
            why = ("another program probably has it open (an ONNX Runtime session, Olive, an editor or a virus "
                   "scanner). Close it and run again")
        else:
            why = "check the permissions of the file and of its folder"
        raise ConversionError(
            f"{final}: cannot replace it ({exc.strerror}): {why}, or write to another output path. The previous "
            "output, if there was one, is kept as it was."
        ) from exc
