"""The cyclic garbage collector, paused while a conversion walks a model.

A graph of 100k nodes becomes several hundred thousand small objects (definitions, uses, protobuf
wrappers), none in a cycle that needs collecting, and every collection would traverse them all: it
doubled the time of the graph walks. The pause lasts one call; the caller's setting comes back.
"""

from __future__ import annotations

import contextlib
import gc

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
