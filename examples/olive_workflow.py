"""The quickstart flow from Python: MiniLM -> ONNX -> BF16 -> fidelity metrics, with Olive's API.

    python examples/olive_workflow.py            # from the repository root, offline
"""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")

from olive.workflows import run as olive_run  # noqa: E402

import olive_bf16_pass.olive.evaluators  # noqa: E402,F401  (registers the evaluators; the plugin does it for `olive run`)

config = json.loads(Path("recipes/quickstart.json").read_text())
config["output_dir"] = "outputs/example_api"
config["evaluators"]["fidelity"]["corpus_limit"] = 100  # a faster check than the recipe's full corpus

workflow_output = olive_run(config)

best = workflow_output.get_best_candidate()
print("BF16 model:", best.model_path)
for name, metric in best.metrics_value.items():
    print(f"  {name}: {metric['value']:.6g}")
