"""Where a model actually ran: operators per execution provider or NPU device.

``session.get_providers()`` is no proof: AMD's Vitis AI EP lists itself first even when its
VAIML compiler rejected (part of) the graph and ORT ran that on the CPU EP (RyzenAI-SW issues
#197, #324, #374). The figures, best first ("source" of a :class:`Placement`):

``vitisai_report``  the EP's operator-assignment report, ``{"deviceStat": [{"name": "all"|"CPU"|"NPU",
    "nodeNum": N, "supportedOpType": ["::Add", ...]}, ...]}``, written to ``<cache_dir>/<cache_key>/``
    when ``XLNX_ONNX_EP_REPORT_FILE`` names it (amd/ryzen-ai-documentation docs/modelrun.rst).
``vitisai_log``  the EP's ``[Vitis AI EP] No. of Operators :   CPU     2    NPU   398`` and
    ``No. of Subgraphs :   NPU     1 Actually running on NPU     1`` lines, on one line or (Ryzen
    AI >= 1.6, through ORT's logger at INFO) one count a line (docs/inst.rst, docs/getstartex.rst).
``profiler``  ORT's profile: a ``"cat": "Node"`` event per kernel run, with ``args.provider`` and
    ``args.op_name``. A compiled Vitis AI subgraph is one fused node there, so the profiler counts
    it as one operator and understates the NPU's share; the EP's figures win when they exist.

Share = operators on the requested EP / all operators. In the Vitis AI figures every device
without "CPU" in its name (NPU, IPU, VAIML) is the EP; CPU and VITIS_EP_CPU are not.

This module reads and decides; probe.py gathers the figures from a live session.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from olive_bf16_pass.evaluation.errors import EvaluationError
from olive_bf16_pass.providers import CPU, VITISAI

__all__ = [
    "DEFAULT_REPORT_NAME",
    "REPORT_ENV",
    "Placement",
    "PlacementFormatError",
    "check_placement",
    "fallback_failure",
    "parse_profile",
    "parse_vitisai_log",
    "parse_vitisai_report",
    "read_profile",
    "read_vitisai_report",
    "vitisai_report_path",
]

logger = logging.getLogger(__name__)

REPORT_ENV = "XLNX_ONNX_EP_REPORT_FILE"
DEFAULT_REPORT_NAME = "vitisai_ep_report.json"


class PlacementFormatError(ValueError):
    """A profile or report that is not in the format this module reads."""


@dataclass
class Placement:
    """Operator counts of one session, and which part of them the requested provider ran."""

    requested: str
    ops_by_device: dict[str, int]  # provider or Vitis AI device name -> operators
    on_requested: int
    source: str  # "vitisai_report", "vitisai_log" or "profiler"
    npu_subgraphs: int | None = None
    fallback_ops: dict[str, int] = field(default_factory=dict)  # op type -> count (0: count unknown)

    @property
    def total(self) -> int:
        return sum(self.ops_by_device.values())

    @property
    def ep_op_share(self) -> float:
        return self.on_requested / self.total if self.total else 0.0

    def describe(self) -> str:
        """One line: how much fell back, to what, and which op types."""
        fell = self.total - self.on_requested
        if not fell:
            return f"all {self.total} operators ran on {self.requested} (figures: {self.source})"
        where = ", ".join(f"{d} {n}" for d, n in self.ops_by_device.items() if n and not _on_ep(d, self))
        ops = ", ".join(f"{op} x{n}" if n else op for op, n in _most_common(self.fallback_ops)) or "op types unknown"
        return (
            f"{fell} of {self.total} operators did not run on {self.requested} ({where}): {ops}"
            f" (figures: {self.source})"
        )


def _most_common(counts: dict[str, int], limit: int = 12):
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return items[:limit] + ([("...", 0)] if len(items) > limit else [])


def _on_ep(device: str, placement: Placement) -> bool:
    return device == placement.requested if placement.source == "profiler" else _is_npu_device(device)


def _is_npu_device(name: str) -> bool:
    return "CPU" not in name.upper() and name.lower() != "all"


# --------------------------------------------------------------------------- ONNX Runtime profile


def parse_profile(events: list | dict, requested: str) -> Placement:
    """Distinct nodes per provider; a node has an event per run (and fence events in some
    builds): it counts once, by its ``_kernel_time`` event."""
    if isinstance(events, dict):  # the Chrome trace "object" form
        events = events.get("traceEvents", [])
    if not isinstance(events, list):
        raise PlacementFormatError("an ONNX Runtime profile is a JSON list of events")
    nodes: dict[tuple, tuple[str, str]] = {}
    for e in events:
        if not (isinstance(e, dict) and e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")):
            continue
        args = e.get("args") or {}
        provider, op = args.get("provider"), args.get("op_name")
        if not provider or not op:
            continue
        nodes[(e["name"], args.get("node_index"), op, provider)] = (provider, op)
    if not nodes:
        raise PlacementFormatError("the profile has no node events (was a run profiled?)")
    by_provider = Counter(p for p, _ in nodes.values())
    fallback = Counter(op for p, op in nodes.values() if p != requested)
    on_ep = by_provider.get(requested, 0)
    subgraphs = on_ep if requested == VITISAI else None  # each of its nodes is a compiled subgraph
    return Placement(requested, dict(by_provider), on_ep, "profiler", subgraphs, dict(fallback))


def read_profile(path: str | Path, requested: str) -> Placement:
    return parse_profile(_load_json(path, "the ONNX Runtime profile"), requested)


def _load_json(path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PlacementFormatError(f"cannot read {what} {path}: {e}") from e


# --------------------------------------------------------------------------- Vitis AI EP figures

_ORT_LOG_PREFIX = re.compile(r"^\s*\[[VIWEF]:onnxruntime:[^\]]*\]\s?")
_STAT_HEAD = re.compile(r"\[Vitis AI EP\]\s*No\. of (Operators|Subgraphs)\s*:(.*)")
_COUNT = re.compile(r"(Actually running on \w+|[A-Za-z]\w*)\s+(\d+)(?!\s*\.?\d*%)")  # "99.50%" is no count


def parse_vitisai_log(text: str, requested: str = VITISAI) -> Placement | None:
    """Placement from the EP's ``No. of Operators`` / ``No. of Subgraphs`` lines; None when the
    text has none. The last summary wins (a log may hold several sessions: the last is ours)."""
    operators: dict[str, int] | None = None
    subgraphs: dict[str, int] | None = None
    current: dict[str, int] | None = None
    for raw in text.splitlines():
        line = _ORT_LOG_PREFIX.sub("", raw).strip()
        head = _STAT_HEAD.search(line)
        if head:
            current = {}
            if head.group(1) == "Operators":
                operators = current
            else:
                subgraphs = current
            line = head.group(2)
        elif current is None or not _COUNT.fullmatch(line):
            current = None  # a multi-line summary goes on with lines that are "NAME  N" and nothing else
            continue
        for name, count in _COUNT.findall(line):
            current[name] = int(count)
    if not operators:
        return None
    on_ep = sum(n for d, n in operators.items() if _is_npu_device(d))
    return Placement(requested, operators, on_ep, "vitisai_log", _npu_subgraphs(subgraphs))


def _npu_subgraphs(counts: dict[str, int] | None) -> int | None:
    if not counts:
        return None
    running = [n for d, n in counts.items() if d.startswith("Actually running on")]
    if running:
        return running[-1]
    npu = [n for d, n in counts.items() if _is_npu_device(d)]
    return sum(npu) if npu else 0


def parse_vitisai_report(report: object, requested: str = VITISAI) -> Placement:
    """Placement from a parsed operator-assignment report (``deviceStat`` list)."""
    stats = report.get("deviceStat") if isinstance(report, dict) else None
    if not isinstance(stats, list) or not stats:
        raise PlacementFormatError("a Vitis AI EP report is a JSON object with a non-empty 'deviceStat' list")
    counts: dict[str, int] = {}
    fallback: dict[str, int] = {}
    for entry in stats:
        name, num = (entry.get("name"), entry.get("nodeNum")) if isinstance(entry, dict) else (None, None)
        if not isinstance(name, str) or isinstance(num, bool) or not isinstance(num, int):
            raise PlacementFormatError(f"deviceStat entry without a 'name' string and a 'nodeNum' integer: {entry!r}")
        if name.lower() == "all":
            continue
        counts[name] = num
        if not _is_npu_device(name) and num:
            for op in entry.get("supportedOpType") or []:
                fallback[str(op).rsplit("::", 1)[-1]] = 0  # the report lists types, not counts per type
    if not counts:
        raise PlacementFormatError("the Vitis AI EP report's deviceStat has no device other than 'all'")
    on_ep = sum(n for d, n in counts.items() if _is_npu_device(d))
    return Placement(requested, counts, on_ep, "vitisai_report", None, fallback)


def read_vitisai_report(path: str | Path, requested: str = VITISAI) -> Placement:
    return parse_vitisai_report(_load_json(path, "the Vitis AI EP report"), requested)


def vitisai_report_path(provider_options: dict | None) -> Path | None:
    """``<cache_dir>/<cache_key>/<XLNX_ONNX_EP_REPORT_FILE or vitisai_ep_report.json>`` (an absolute
    name as it is; no cache_key: the newest in any subfolder), None where there is none."""
    name = os.environ.get(REPORT_ENV) or DEFAULT_REPORT_NAME
    if os.path.isabs(name):
        return Path(name) if os.path.isfile(name) else None
    opts = provider_options or {}
    cache_dir, key = opts.get("cache_dir") or opts.get("cacheDir"), opts.get("cache_key") or opts.get("cacheKey")
    if not cache_dir:
        return None
    if key:
        path = Path(cache_dir) / str(key) / name
        return path if path.is_file() else None
    found = sorted(Path(cache_dir).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# --------------------------------------------------------------------------- decision


def fallback_failure(placement: Placement, min_share: float | None) -> str | None:
    """The error message when the requested EP ran too little, else None. ``min_share`` None: a
    non-CPU EP must run some operators (share > 0), the CPU EP is not checked; a number: share >= it."""
    share = placement.ep_op_share
    if min_share is None:
        if placement.requested == CPU or share > 0:
            return None
        bound = "> 0"
    elif share >= float(min_share):
        return None
    else:
        bound = f">= {min_share}"
    return (
        f"{placement.requested} ran {share:.1%} of the model's operators (placement-ep_op_share = {share:.4g},"
        f" required {bound}): {placement.describe()}. ONNX Runtime fell back silently, so the BF16 numbers"
        f" would describe another device. Check the EP's log ('[Vitis AI EP] No. of Operators' with"
        f" session_options log_severity_level 1) or its operator-assignment report ({REPORT_ENV}="
        f"{DEFAULT_REPORT_NAME}, written in <cache_dir>/<cache_key>), and the vaiml config_file; or lower"
        f" the evaluator's min_ep_op_share."
    )


def check_placement(placement: Placement, min_share: float | None) -> dict[str, float]:
    """The placement metrics, or an EvaluationError when the target EP ran too little of the model."""
    logger.info("placement: %s", placement.describe())
    failure = fallback_failure(placement, min_share)
    if failure:
        raise EvaluationError(failure)
    metrics = {"placement-ep_op_share": placement.ep_op_share}
    if placement.npu_subgraphs is not None:
        metrics["placement-npu_subgraphs"] = placement.npu_subgraphs
    return metrics
