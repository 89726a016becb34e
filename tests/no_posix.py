"""Windows stand-in for the core's I/O: delete the ``os`` functions Windows does not have.

There is no Windows machine here, so the core's conversion tests run a second time in a
session where these functions are gone (``OLIVE_BF16_NO_POSIX=1``, see conftest.py): any
code path that still needs one fails with AttributeError instead of passing on Linux only.
"""

from __future__ import annotations

import os

ENV = "OLIVE_BF16_NO_POSIX"

# os functions missing from Python on Windows (field notes, section 7) that file code reaches for
POSIX_ONLY = (
    "pread",
    "preadv",
    "pwrite",
    "pwritev",
    "posix_fadvise",
    "posix_fallocate",
    "sendfile",
    "fchmod",  # on Windows only from Python 3.13
    "fchown",
    "fdatasync",
    "sync",
    "fork",
    "forkpty",
    "killpg",
    "statvfs",
    "fstatvfs",
)


def requested() -> bool:
    return os.environ.get(ENV) == "1"


def strip() -> list[str]:
    """Delete the POSIX-only functions from ``os``; return the names deleted."""
    removed = []
    for name in POSIX_ONLY:
        if hasattr(os, name):
            delattr(os, name)
            removed.append(name)
    return removed
