"""The one exception type users see: a message that names the problem and the way out.

``ConversionError`` is a ``ValueError`` so that hosts which re-raise only user errors (Olive's
engine re-raises ``ValueError`` and logs the rest as a warning, then exits 0 with no model) stop
on it. So an ``except ValueError`` around code that may raise it swallows a refusal: catch
``ConversionError`` first there.
"""

from __future__ import annotations

import errno

__all__ = ["ConversionError", "one_line", "os_error_line"]


class ConversionError(ValueError):
    """A model or a path that cannot be converted; the message says why and what to do."""


def one_line(message: object) -> str:
    """``message`` on one line, whatever it held (checker output, wrapped text)."""
    return " ".join(str(message).split())


def os_error_line(exc: OSError, where: object = None) -> str:
    """An OSError in a person's words: ``where: reason``, with the way out for full or read-only disks."""
    where = where if where is not None else exc.filename
    reason = exc.strerror or str(exc)
    message = f"{where}: {reason}" if where else reason
    if exc.errno == errno.ENOSPC:
        message += "; free some space (the output needs about half the input's size) and run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        message += "; choose a folder you can write to"
    return one_line(message)
