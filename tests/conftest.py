import os
import sys
from pathlib import Path

# the model builders in helpers.py are shared by tests in every folder
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import no_posix  # noqa: E402

# before any test module imports the package: see no_posix.py
_STRIPPED = no_posix.strip() if no_posix.requested() else []


def pytest_report_header(config):
    if no_posix.requested():
        return f"olive-bf16: POSIX-only os functions removed: {', '.join(_STRIPPED) or 'none were present'}"
    return None
