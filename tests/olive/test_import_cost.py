"""Importing Olive registers the plugin but loads none of the converter: in fresh interpreters.

The start-up hook runs at every ``import olive`` (see olive/discovery.py), so what it imports is
paid by every Olive user, with or without this pass in the recipe. The pass module, and with it
the converter, is imported by Olive itself, only when a recipe names the pass.
"""

import json
import os
import subprocess
import sys

# the modules the start-up hook watches; the last is what `olive run` imports
WATCHED = ("olive.package_config", "olive.evaluator.olive_evaluator", "olive.workflows.run.run")

# everything of this package that importing the watched modules may load
EXPECTED = {
    "olive_bf16_pass",  # __init__: __version__ and lazy names only
    "olive_bf16_pass.optional",  # the tested-Olive-range check (stdlib only)
    "olive_bf16_pass.olive",
    "olive_bf16_pass.olive.discovery",  # the pass lookup patch
    "olive_bf16_pass.olive.evaluators",  # registers the evaluators; their work is imported when they run
    "olive_bf16_pass.olive.fidelity_base",  # the evaluators' base class (Olive and attributes.py only)
    "olive_bf16_pass.evaluation",  # empty: the package of evaluation/errors.py
    "olive_bf16_pass.evaluation.errors",  # EvaluationError, which the evaluators raise (imports nothing)
    "olive_bf16_pass.olive.attributes",
    "olive_bf16_pass.protowire",  # attributes.py reads and appends metadata with it (stdlib only)
    "olive_bf16_pass.olive.provider_check",  # wraps run_engine (olive.workflows.run.run only)
}

# the converter and the evaluators' machinery: none of these may load on import
HEAVY = {
    "olive_bf16_pass.convert", "olive_bf16_pass.traversal", "olive_bf16_pass.selection", "olive_bf16_pass.graph",
    "olive_bf16_pass.io", "olive_bf16_pass.io.source", "olive_bf16_pass.io.streamer", "olive_bf16_pass.io.wire",
    "olive_bf16_pass.io.writer", "olive_bf16_pass.checking", "olive_bf16_pass.rounding", "olive_bf16_pass.report",
    "olive_bf16_pass.options", "olive_bf16_pass.olive.passes", "olive_bf16_pass.olive.pass_config",
    "olive_bf16_pass.vitisai.cache_key", "olive_bf16_pass.evaluation.agreement", "olive_bf16_pass.evaluation.sessions",
    "olive_bf16_pass.evaluation.inputs", "olive_bf16_pass.evaluation.probe",
    "olive_bf16_pass.evaluation.placement", "olive_bf16_pass.evaluation.corpus", "olive_bf16_pass.evaluation.table",
    "olive_bf16_pass.evaluation.thresholds", "olive_bf16_pass.olive.gate",
}

PROBE = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)

def ours():
    return sorted(m for m in sys.modules if m.startswith("olive_bf16_pass"))

out = {"hook": "_olive_bf16_pass_startup" in sys.modules, "loaded": ours()}
if "olive.evaluator.olive_evaluator" in sys.modules:
    from olive.evaluator.registry import Registry

    out["evaluators"] = {
        name: getattr(Registry.get(name), "__module__", None)
        for name in ("EmbeddingFidelityEvaluator", "RerankerFidelityEvaluator")
    }
if "olive.package_config" in sys.modules:
    from olive.package_config import OlivePackageConfig

    config = OlivePackageConfig.load_default_config()
    try:
        out["module_path"] = config.get_pass_module_config("OnnxFloatToBFloat16").module_path
    except ValueError:  # the hook is off
        out["module_path"] = None
    else:
        out["loaded_after_lookup"] = ours()  # naming the pass resolves it without importing it
        out["pass_class"] = config.import_pass_module("OnnxFloatToBFloat16").__name__  # as a recipe using it does
        out["loaded_after_import"] = ours()
print(json.dumps(out))
"""


def _probe(*modules, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OLIVE_BF16_PASS_DISCOVERY")}
    environ.update(OLIVE_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", **env)
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], env=environ, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_olive_registers_the_plugin_without_loading_the_converter():
    out = _probe(*WATCHED)
    assert out["hook"], "the start-up hook is not installed in this interpreter"
    loaded = set(out["loaded"])
    assert loaded == EXPECTED
    assert not loaded & HEAVY
    # Olive validates evaluator types while it parses a recipe: they must be registered already
    assert out["evaluators"] == dict.fromkeys(
        ("EmbeddingFidelityEvaluator", "RerankerFidelityEvaluator"), "olive_bf16_pass.olive.evaluators"
    )
    assert out["module_path"] == "olive_bf16_pass.olive.passes.OnnxFloatToBFloat16"
    assert set(out["loaded_after_lookup"]) == EXPECTED
    # a recipe that uses the pass gets it, and the converter with it
    assert out["pass_class"] == "OnnxFloatToBFloat16"
    assert {"olive_bf16_pass.olive.passes", "olive_bf16_pass.convert"} <= set(out["loaded_after_import"])


def test_plain_import_olive_loads_only_the_registrations():
    out = _probe("olive")
    assert out["hook"]
    # a bare `import olive` imports the package config and the evaluator module, not the run module
    assert set(out["loaded"]) == EXPECTED - {"olive_bf16_pass.olive.provider_check"}
    assert out["evaluators"]["EmbeddingFidelityEvaluator"] == "olive_bf16_pass.olive.evaluators"


def test_switched_off_hook_loads_nothing():
    out = _probe(*WATCHED, OLIVE_BF16_PASS_DISCOVERY="0")
    assert out["loaded"] == []
    assert out["evaluators"] == {"EmbeddingFidelityEvaluator": None, "RerankerFidelityEvaluator": None}
    assert out["module_path"] is None
