"""Where a conversion writes: the model file, its external data file, the temporaries and the lock.

One object knows every path an output may take, so the writer, the converter's refusal to
overwrite its input, and the command line's checks and clean-up hints name the same files.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Destination", "default_data_name"]

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

    def new_temporary(self, suffix: str, created: list[Path]):
        """An open binary file beside the model, registered in ``created`` as soon as it exists."""
        fd, name = tempfile.mkstemp(prefix=self.temp_prefix, suffix=suffix + ".tmp", dir=self.folder)
        created.append(Path(name))
        out = os.fdopen(fd, "wb")
        os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; the output gets a plain file's mode
        return out, Path(name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
