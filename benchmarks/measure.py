"""Run a command in a subprocess and measure it from outside: wall time and peak RSS.

Peak RSS is the larger of two figures:

* the kernel's own high-water mark, ``ru_maxrss`` from ``os.wait4`` on the child (the child's
  VmHWM, and the largest of any descendants it waited for);
* the largest sum of VmRSS over the child and all its live descendants, sampled from /proc every
  ``interval`` seconds (catches helpers running side by side, which ``ru_maxrss`` does not sum).

The poller also enforces a memory cap and a time limit: a run over either is killed (its whole
process group) and reported as such, so that one tool cannot take the shared machine down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    rc: int | None
    wall_s: float
    peak_rss: int  # bytes
    peak_rss_wait4: int
    peak_rss_polled: int
    killed: str | None = None  # why the poller killed it, if it did
    log: str = ""  # path of the combined stdout/stderr
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.killed is None

    def error_line(self) -> str:
        if self.killed:
            return self.killed
        lines = [ln.strip() for ln in _tail(self.log).splitlines() if ln.strip()]
        # the last line that looks like an exception, else the last line
        for ln in reversed(lines):
            if "Error" in ln or "Exception" in ln or ln.startswith("error"):
                return f"rc={self.rc}: {ln}"
        return f"rc={self.rc}: {lines[-1] if lines else 'no output'}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _tail(path: str, n: int = 20000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" that closes the command name
        rest = stat[stat.rfind(b")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(entry.name))
    return kids


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int, with_children: bool = True) -> int:
    total = _rss(root)
    if with_children:
        kids = _children_map()
        stack = list(kids.get(root, ()))
        while stack:
            pid = stack.pop()
            total += _rss(pid)
            stack.extend(kids.get(pid, ()))
    return total


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_measured(
    cmd: list[str],
    log_path: Path,
    *,
    env: dict | None = None,
    cwd: str | Path | None = None,
    timeout_s: float = 600.0,
    mem_cap: int | None = None,
    interval: float = 0.02,
) -> Measured:
    """Run ``cmd``, return its wall time and peak RSS measured from this (the parent) process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak_polled = 0
    killed = None
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        status = rusage = None
        n = 0
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            # scanning /proc for descendants costs ~1 ms; do it every 5th sample
            rss = tree_rss(proc.pid, with_children=(n % 5 == 0))
            n += 1
            peak_polled = max(peak_polled, rss)
            elapsed = time.perf_counter() - t0
            if killed is None and mem_cap and rss > mem_cap:
                killed = f"killed: RSS {rss / 2**30:.1f} GiB passed the cap of {mem_cap / 2**30:.1f} GiB"
            elif killed is None and elapsed > timeout_s:
                killed = f"killed: still running after {timeout_s:.0f} s"
            if killed:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(interval)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_wait4 = rusage.ru_maxrss * 1024  # Linux reports KiB
    return Measured(
        rc=proc.returncode, wall_s=wall, peak_rss=max(peak_wait4, peak_polled), peak_rss_wait4=peak_wait4,
        peak_rss_polled=peak_polled, killed=killed, log=str(log_path),
    )
