import os
import sys
from pathlib import Path

# the model builders in helpers.py are shared by tests in every folder
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
