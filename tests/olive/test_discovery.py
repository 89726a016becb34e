"""A plain `olive run` finds the pass: in subprocesses, against the installed package."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import onnx
import pytest

from helpers import embedding_mlp, save
from olive_bf16_pass.olive.discovery import PLUGIN_PASSES, merged_package_config

OLIVE = str(Path(sys.executable).parent / "olive")
ROOT = Path(__file__).resolve().parents[2]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package only
    env.update(OLIVE_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", **extra)
    return env


def _recipe(tmp_path, host="local_system", extra_systems=None):
    src = save(embedding_mlp(vocab=256, hidden=64), tmp_path / "model.onnx")
    cpu = [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]
    recipe = {
        "input_model": {"type": "ONNXModel", "model_path": str(src)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": cpu}, **(extra_systems or {})},
        "passes": {
            "peephole": {"type": "OnnxPeepholeOptimizer"},  # a built-in pass in the same recipe
            "bf16": {"type": "OnnxFloatToBFloat16"},
        },
        "host": host,
        "target": "local_system",
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "clean_cache": True,
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


def _olive_run(tmp_path, recipe, *args, **env):
    return subprocess.run([OLIVE, "run", "--config", str(recipe), *args], cwd=tmp_path, env=_env(**env),
                          capture_output=True, text=True, timeout=600)


def _assert_bf16_output(tmp_path):
    model = onnx.load(tmp_path / "out" / "model.onnx")
    assert sum(t.data_type == onnx.TensorProto.BFLOAT16 for t in model.graph.initializer) == 3


def test_the_hook_is_installed_from_a_wheel_not_the_source_tree(tmp_path):
    site = Path(sysconfig.get_paths()["purelib"])
    assert (site / "olive_bf16_pass.pth").read_text().strip() == "import _olive_bf16_pass_startup"
    probe = "import sys, olive_bf16_pass; print(olive_bf16_pass.__file__); print('olive_bf16_pass' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", "import sys; print('olive_bf16_pass' in sys.modules)"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # start-up imports nothing of ours
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         check=True)
    assert Path(out.stdout.splitlines()[0]).is_relative_to(site)  # a non-editable install


@pytest.mark.slow
def test_plain_olive_run_finds_the_pass_beside_builtin_passes(tmp_path):
    result = _olive_run(tmp_path, _recipe(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_bf16_output(tmp_path)


@pytest.mark.slow
def test_passes_run_in_a_python_environment_system_find_it_too(tmp_path):
    py_env = {"py_env": {"type": "PythonEnvironment", "python_environment_path": str(Path(sys.executable).parent),
                         "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}}
    result = _olive_run(tmp_path, _recipe(tmp_path, host="py_env", extra_systems=py_env))
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_bf16_output(tmp_path)


@pytest.mark.slow
def test_switched_off_it_fails_and_the_package_config_route_works(tmp_path):
    recipe = _recipe(tmp_path)
    result = _olive_run(tmp_path, recipe, OLIVE_BF16_PASS_DISCOVERY="0")
    assert result.returncode != 0 and "onnxfloattobfloat16' not found" in result.stdout + result.stderr
    config = tmp_path / "olive_config.json"
    subprocess.run([str(Path(sys.executable).parent / "olive-bf16"), "package-config", "-o", str(config)],
                   env=_env(), check=True, capture_output=True)
    result = _olive_run(tmp_path, recipe, "--package-config", str(config), OLIVE_BF16_PASS_DISCOVERY="0")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_bf16_output(tmp_path)


def test_merged_package_config_keeps_every_builtin_pass_and_never_shadows_one(monkeypatch):
    from olive.package_config import OlivePackageConfig

    builtin = json.loads(Path(OlivePackageConfig.get_default_config_path()).read_text())
    merged = merged_package_config()
    assert {k: v for k, v in merged["passes"].items() if k in builtin["passes"]} == builtin["passes"]
    assert merged["passes"]["OnnxFloatToBFloat16"] == PLUGIN_PASSES["OnnxFloatToBFloat16"]
    monkeypatch.setitem(PLUGIN_PASSES, "OnnxFloatToFloat16", {"module_path": "somewhere.Else"})
    assert merged_package_config()["passes"]["OnnxFloatToFloat16"] == builtin["passes"]["OnnxFloatToFloat16"]


def test_the_lookup_falls_back_only_for_unknown_types(monkeypatch):
    from olive.package_config import OlivePackageConfig

    config = OlivePackageConfig.load_default_config()
    assert config.get_pass_module_config("OnnxFloatToBFloat16").module_path.startswith("olive_bf16_pass.")
    assert config.get_pass_module_config("my.module.OnnxFloatToBFloat16").module_path.startswith("olive_bf16_pass.")
    assert config.get_pass_module_config("OnnxFloatToFloat16").module_path.startswith("olive.passes.")
    with pytest.raises(ValueError, match="not found"):
        config.get_pass_module_config("NoSuchPass")


def test_the_startup_hook_watches_exactly_the_modules_discovery_extends():
    """The hook cannot import the package at start-up, so the two lists are kept in step here."""
    from olive_bf16_pass.olive import startup_hook
    from olive_bf16_pass.olive.discovery import EXTENSIONS

    assert set(startup_hook.TARGETS) == set(EXTENSIONS)


# --- an Olive outside the tested range, and a plugin that fails, leave Olive as it was -------


def _fake_package_config_class():
    """A pydantic model shaped like Olive's OlivePackageConfig (``passes``), fresh per test."""
    from olive.passes import PassModuleConfig
    from pydantic import BaseModel

    class FakePackageConfig(BaseModel):
        passes: dict[str, PassModuleConfig] = {}

    return FakePackageConfig


_FakePackageConfig = _fake_package_config_class()


def _fake_package_config_module():
    import types

    return types.SimpleNamespace(__name__="olive.package_config", OlivePackageConfig=_FakePackageConfig)


def test_an_untested_olive_is_left_alone_with_one_clear_warning(monkeypatch):
    import importlib.metadata

    from olive_bf16_pass.olive import discovery

    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.14.2" if name == "olive-ai" else real_version(name)
    )
    monkeypatch.setattr(discovery, "_warned", set())
    module = _fake_package_config_module()
    with pytest.warns(RuntimeWarning, match=r"tested with olive-ai >=0\.13,<0\.14.*has 0\.14\.2.*OLIVE_BF16_PASS_DISCOVERY=0"):
        discovery.extend(module)
    assert _FakePackageConfig().passes == {}  # not extended
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        discovery.extend(module)  # once is enough


def test_the_tested_olive_is_extended(monkeypatch):
    from olive_bf16_pass.olive import discovery
    from olive_bf16_pass.optional import untested_olive_message

    assert untested_olive_message() is None  # the Olive the tests run with is in range
    cls = _fake_package_config_class()
    import types

    discovery.extend(types.SimpleNamespace(__name__="olive.package_config", OlivePackageConfig=cls))
    assert cls().passes["onnxfloattobfloat16"].module_path.endswith("OnnxFloatToBFloat16")
    assert cls(passes={"onnxfloattobfloat16": {"module_path": "theirs.Pass"}}).passes[
        "onnxfloattobfloat16"].module_path == "theirs.Pass"  # never shadows what the config has


def test_a_failing_plugin_never_breaks_the_olive_module_it_extends(monkeypatch):
    import importlib.util

    from olive_bf16_pass.olive import discovery

    hook_file = Path(discovery.__file__).with_name("startup_hook.py")
    spec = importlib.util.spec_from_file_location("_hook_under_test", hook_file)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)  # registers nothing new: install() is idempotent

    def broken(module):
        raise AttributeError("'OlivePackageConfig' has no attribute 'get_pass_module_config'")

    monkeypatch.setattr(discovery, "extend", broken)
    module = _fake_package_config_module()
    with pytest.warns(RuntimeWarning, match="could not extend olive.package_config.*OLIVE_BF16_PASS_DISCOVERY=0"):
        hook._extend(module)
    hook._extend(module)  # a second failure: no exception either
    assert hook._failed == ["olive.package_config", "olive.package_config"]


def test_olive_lists_the_pass_and_its_packages(tmp_path):
    result = subprocess.run([OLIVE, "run-pass", "--list-passes"], cwd=tmp_path, env=_env(PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=300)
    assert "onnxfloattobfloat16" in result.stdout.lower(), result.stdout[-2000:] + result.stderr[-2000:]
    recipe = _recipe(tmp_path)
    result = _olive_run(tmp_path, recipe, "--list_required_packages", PYTHONPATH=str(ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "olive_requirements.txt").is_file()


def test_a_typo_in_another_pass_type_is_olives_own_error_without_our_frames():
    import traceback

    from olive.package_config import OlivePackageConfig

    config = OlivePackageConfig.parse_file_or_obj(OlivePackageConfig.get_default_config_path())
    with pytest.raises(ValueError, match="Package configuration for pass of type 'onnxpeepholeoptimiser' not found") as info:
        config.import_pass_module("OnnxPeepholeOptimiser")
    frames = [f.filename for f in traceback.extract_tb(info.value.__traceback__)]
    assert not any("olive_bf16_pass" in f for f in frames), frames
