"""Gathering where one ONNX Runtime session ran: profiling, the Vitis AI EP's report and log.

placement.py reads those figures; this module switches them on around a session's creation and
collects them afterwards, so that the evaluator's check needs no second session (and no second
NPU compile).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.evaluation.placement import (
    DEFAULT_REPORT_NAME,
    REPORT_ENV,
    Placement,
    PlacementFormatError,
    check_placement,
    parse_vitisai_log,
    read_profile,
    read_vitisai_report,
    vitisai_report_path,
)
from olive_bf16_pass.providers import VITISAI

__all__ = ["PlacementProbe", "captured_native_output", "report_enabled"]

logger = logging.getLogger(__name__)

_INFO_LINE = re.compile(r"^\s*\[[VI]:onnxruntime:")


@contextlib.contextmanager
def report_enabled():
    """Set ``XLNX_ONNX_EP_REPORT_FILE`` (the EP writes its report only then) while a session is made."""
    if os.environ.get(REPORT_ENV):
        yield
        return
    os.environ[REPORT_ENV] = DEFAULT_REPORT_NAME
    try:
        yield
    finally:
        os.environ.pop(REPORT_ENV, None)


@contextlib.contextmanager
def captured_native_output(keep=lambda line: True):
    """Capture file descriptors 1 and 2 (native code's output: the EP's log) into the yielded list;
    the lines ``keep`` accepts go on to stderr afterwards. Best effort: else nothing is captured."""
    sink: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            saved = [os.dup(1), os.dup(2)]
        except (OSError, ValueError, AttributeError):
            yield sink
            return
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield sink
        finally:
            with contextlib.suppress(Exception):
                import ctypes

                ctypes.CDLL(None).fflush(None)  # C stdio buffers of the native code (POSIX)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", errors="replace"))
            shown = "".join(line for line in sink[0].splitlines(keepends=True) if keep(line))
            if shown:
                sys.stderr.write(shown)
                sys.stderr.flush()


class PlacementProbe:
    """Profiles one session from its creation to :meth:`measure` (call it before timing runs:
    ORT stops profiling at ``end_profiling()``, with no second session and so no second NPU
    compile), and for the Vitis AI EP also gathers the EP's report and log while the session is made.
    """

    def __init__(self, requested: str, provider_options: dict | None = None):
        self.requested = requested
        self.provider_options = provider_options or {}
        self.vitisai = requested == VITISAI
        self.log = ""
        self._started = 0.0
        self._session = None
        self._keep_profile = False
        self._raised_verbosity = False

    def settings(self, inference_settings: dict) -> dict:
        """Olive inference settings with profiling on (and, for the Vitis AI EP, INFO logging,
        at which Ryzen AI >= 1.6 prints its operator counts)."""
        session_options = dict(inference_settings.get("session_options") or {})
        self._keep_profile = bool(session_options.get("enable_profiling"))
        session_options["enable_profiling"] = True
        if self.vitisai and session_options.get("log_severity_level") is None:
            session_options["log_severity_level"] = 1
            self._raised_verbosity = True
        return {**inference_settings, "session_options": session_options}

    @contextlib.contextmanager
    def creating(self):
        self._started = time.time()
        try:
            if not self.vitisai:
                yield
                return
            quiet = self._raised_verbosity  # then show only what would have shown without INFO
            with report_enabled(), captured_native_output(lambda s: not (quiet and _INFO_LINE.match(s))) as out:
                yield
            self.log = out[0] if out else ""
        except BaseException:  # ORT opened its (empty) profile before the session failed
            for path in Path.cwd().glob("onnxruntime_profile_*.json"):
                with contextlib.suppress(OSError):
                    if path.stat().st_size == 0 and path.stat().st_mtime >= self._started - 1:
                        path.unlink()
            raise

    def attach(self, session) -> None:
        self._session = session

    def measure(self) -> Placement | None:
        """End profiling and count; the EP's own figures win over the profiler's, except that a
        profile with no node on the requested EP proves a total fallback whatever the EP logged."""
        profiled = self._end_profiling()
        if not self.vitisai:
            return profiled
        own = parse_vitisai_log(self.log, self.requested)
        report = vitisai_report_path(self.provider_options)
        if report is not None and (own is None or report.stat().st_mtime >= self._started - 2):
            try:  # an older report (of an earlier compile) only where the log has no figures
                own = read_vitisai_report(report, self.requested)
            except PlacementFormatError as e:
                logger.warning("ignoring the Vitis AI EP report: %s", e)
        if own is None or (profiled is not None and profiled.on_requested == 0):
            return profiled
        if profiled is not None:
            own.fallback_ops = own.fallback_ops or profiled.fallback_ops
            own.npu_subgraphs = profiled.npu_subgraphs if own.npu_subgraphs is None else own.npu_subgraphs
        return own

    def metrics(self, min_share: float | None) -> dict[str, float]:
        """:meth:`measure` as evaluator metrics; an EvaluationError where the EP ran too little, or
        where ``min_share`` is set and nothing says where the model ran."""
        try:
            placement = self.measure()
        except PlacementFormatError as e:
            logger.warning("cannot tell where the model ran: %s", e)
            placement = None
        if placement is None:
            if min_share is not None:
                raise EvaluationError(
                    f"min_ep_op_share is set but no placement figures could be read for {self.requested}"
                )
            return {}
        return check_placement(placement, min_share)

    def close(self) -> None:
        """Stop profiling (and drop its file) where :meth:`measure` was never reached."""
        with contextlib.suppress(Exception):
            self._end_profiling()

    def _end_profiling(self) -> Placement | None:
        session, self._session = self._session, None
        path = session.end_profiling() if session is not None else ""
        if not path:
            return None
        try:
            return read_profile(path, self.requested)
        except PlacementFormatError as e:
            logger.warning("ignoring the ONNX Runtime profile: %s", e)
            return None
        finally:
            if not self._keep_profile:  # Olive offers no profile_file_prefix: it lands in the cwd
                with contextlib.suppress(OSError):
                    os.unlink(path)
