"""Which NPU this machine has, where it tells: its PCI hardware ID, read as AMD says to.

Source: amd/ryzen-ai-documentation ``docs/app_development.rst`` (stored commit 00f22c3), "APU
Types": vendor 0x1022, device 0x1502 rev 0x00 is PHX or HPT (no BF16); device 0x17F0 rev 0x00,
0x10, 0x11 is STX and rev 0x20 KRK (BF16 from STX/KRK on). Linux shows PCI devices under
/sys/bus/pci/devices; Windows lists them with ``pnputil /enum-devices /bus PCI /deviceids``
(AMD's quicktest reads the same IDs). Anything unreadable means "not known", never a guess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

__all__ = ["BF16_GENERATIONS", "detect_npu", "npu_from_ids"]

_AMD = 0x1022
_TABLE = {(0x1502, 0x00): "PHX/HPT", (0x17F0, 0x00): "STX", (0x17F0, 0x10): "STX", (0x17F0, 0x11): "STX",
          (0x17F0, 0x20): "KRK"}
BF16_GENERATIONS = frozenset({"STX", "KRK"})
_WINDOWS_ID = re.compile(r"PCI\\VEN_([0-9A-F]{4})&DEV_([0-9A-F]{4})(?:&[^\s&]*)*?&REV_([0-9A-F]{2})", re.IGNORECASE)


def npu_from_ids(ids) -> str | None:
    """The APU type of the first known ``(vendor, device, revision)``; a later AMD NPU with the BF16
    device ID but an unlisted revision counts as "STX/KRK or later"."""
    ids = list(ids)
    for vendor, device, revision in ids:
        if vendor == _AMD and (device, revision) in _TABLE:
            return _TABLE[(device, revision)]
    for vendor, device, _ in ids:
        if vendor == _AMD and device == 0x17F0:
            return "STX/KRK or later"
    return None


def _linux_ids():
    for dev in Path("/sys/bus/pci/devices").glob("*"):
        try:
            yield tuple(int((dev / f).read_text().strip(), 16) for f in ("vendor", "device", "revision"))
        except (OSError, ValueError):
            continue


def _windows_ids():
    try:
        text = subprocess.run(["pnputil", "/enum-devices", "/bus", "PCI", "/deviceids"], capture_output=True,
                              text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for vendor, device, revision in _WINDOWS_ID.findall(text):
        yield int(vendor, 16), int(device, 16), int(revision, 16)


def detect_npu() -> str | None:
    """"PHX/HPT", "STX", "KRK", "STX/KRK or later", or None when this machine does not tell."""
    try:
        return npu_from_ids(_windows_ids() if sys.platform == "win32" else _linux_ids())
    except Exception:  # noqa: BLE001 - a check must not fail on a machine it cannot read
        return None
