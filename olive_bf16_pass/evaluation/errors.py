"""The one exception type of an evaluation. Imports nothing, so the Olive evaluators import it at once."""

from __future__ import annotations

__all__ = ["EvaluationError"]


class EvaluationError(ValueError):
    """An evaluation that cannot run, cannot mean anything, or whose result misses a threshold.

    A ``ValueError`` on purpose: Olive's engine lets ``ValueError`` through to the command line
    (non-zero exit) but only logs most other exceptions and then exits 0 with no output model.
    """
