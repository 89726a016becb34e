"""Run a command in a subprocess and measure it from outside: wall time and peak RSS.

Peak RSS is the larger of two figures:

* the kernel's own high-water mark, ``ru_maxrss`` of the command (the largest of its process
  and of any descendants it waited for), taken by a tiny spawner (GNU ``/usr/bin/time -f %M``,
  else a bare ``python -S`` that forks, execs and ``wait4``s). The spawner matters: Linux carries
  the RSS of the process that forked a child into the child's ``ru_maxrss`` across ``exec``, so a
  command started straight from this (large) Python process would report at least this process's
  size; started from a 2-10 MB spawner it reports its own peak;
* the largest sum of VmRSS over the command and all its live descendants, sampled from /proc
  every ``interval`` seconds (catches helpers running side by side, which ``ru_maxrss`` does not
  sum).

The poller also enforces a memory cap and a time limit: a run over either is killed (its whole
process group) and reported as such, so that one tool cannot take the shared machine down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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

    def error_line(self, limit: int = 160) -> str:
        if self.killed:
            return self.killed
        lines = [ln.strip() for ln in _tail(self.log).splitlines() if ln.strip()]
        # the last line that looks like an exception, else the last line
        line = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln or ln.startswith("error")),
                    lines[-1] if lines else "no output")
        for noise in ("onnxruntime.capi.onnxruntime_pybind11_state.", "[ONNXRuntimeError] : 1 : FAIL : "):
            line = line.replace(noise, "")
        line = f"rc={self.rc}: {line}"
        return line if len(line) <= limit else line[: limit - 3] + "..."

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


def descendants(root: int) -> list[int]:
    kids = _children_map()
    out, stack = [], list(kids.get(root, ()))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


_SPAWNER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def _gnu_time() -> str | None:
    path = "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    try:
        r = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True, timeout=10)
        return path if r.returncode == 0 and r.stderr.strip().isdigit() else None
    except (OSError, subprocess.SubprocessError):
        return None


_TIME = _gnu_time()


def spawner_command(cmd: list[str], maxrss_file: Path) -> list[str]:
    if _TIME:
        return [_TIME, "-q", "-f", "%M", "-o", str(maxrss_file), *cmd]
    return [sys.executable, "-S", "-E", "-c", _SPAWNER, str(maxrss_file), *cmd]


def _read_maxrss(path: Path) -> int:
    try:
        lines = [ln for ln in path.read_text().split() if ln.isdigit()]
        return int(lines[-1]) * 1024 if lines else 0  # KiB
    except OSError:
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
    maxrss_file = log_path.with_suffix(".maxrss")
    maxrss_file.unlink(missing_ok=True)
    peak_polled = 0
    killed = None
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(spawner_command(cmd, maxrss_file), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=True)
        status = None
        n = 0
        pids: list[int] = []
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if n % 5 == 0:  # scanning /proc for the process tree costs ~1 ms: refresh it every 5th sample
                pids = descendants(proc.pid)  # the command and its helpers, not the spawner
            n += 1
            rss = sum(_rss(p) for p in pids)
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
                _, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(interval)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_wait4 = _read_maxrss(maxrss_file)  # the command's own, from the spawner (0 if it was killed)
    return Measured(
        rc=proc.returncode, wall_s=wall, peak_rss=max(peak_wait4, peak_polled), peak_rss_wait4=peak_wait4,
        peak_rss_polled=peak_polled, killed=killed, log=str(log_path),
    )
