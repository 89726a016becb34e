"""The evaluation package needs no Olive, and importing the package itself costs nothing.

Checked in fresh interpreters: a module imported earlier in the test session would hide an import.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

from olive_bf16_pass import evaluation

MODULES = sorted(f"{evaluation.__name__}.{m.name}" for m in pkgutil.iter_modules(evaluation.__path__))

PROBE = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("olive", "numpy"))))
"""


def _loaded(*modules) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OLIVE_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_every_module_is_checked():
    names = {m.rsplit(".", 1)[1] for m in MODULES}
    assert {"agreement", "corpus", "errors", "placement", "probe", "sessions", "table"} <= names


def test_no_evaluation_module_imports_olive():
    loaded = _loaded(*MODULES)
    assert "numpy" in loaded  # the probe sees what the modules import
    assert not {m for m in loaded if m.split(".")[0] == "olive"}


def test_the_olive_evaluators_do_import_olive():
    """The same probe on the Olive adapter: what the check above looks for does show up."""
    assert "olive" in _loaded("olive_bf16_pass.olive.evaluators")


def test_the_package_and_its_exception_import_nothing_heavy():
    assert not _loaded("olive_bf16_pass.evaluation", "olive_bf16_pass.evaluation.errors")
