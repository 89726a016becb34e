"""The Vitis AI cache key: it must change with the model and with the EP's versions, and stay put otherwise."""

import builtins
import hashlib
import sys

import pytest

from olive_bf16_pass.vitisai import cache_key as vitisai
from olive_bf16_pass.vitisai.cache_key import (
    has_vitisai_cache_key,
    model_fingerprint,
    names_vitisai,
    runtime_versions,
    versioned_cache_key,
    with_versioned_cache_keys,
)

VAI_SETTINGS = {
    "execution_provider": ["VitisAIExecutionProvider"],
    "provider_options": [{"config_file": "vaiml_config.json", "cache_dir": "cache", "cache_key": "bce"}],
}


def test_key_carries_model_and_versions():
    key = versioned_cache_key("bce", "0123456789ab", {"ort": "1.20.1", "vai": "1.20.1.dev20250401", "voe": "1.5.0"})
    assert key == "bce-m0123456789ab-ort1.20.1-vai1.20.1.dev20250401-voe1.5.0"


def test_key_changes_with_each_part():
    base = versioned_cache_key("bce", "0123456789ab", {"ort": "1.20.1", "vai": "1.20.1"})
    assert versioned_cache_key("bce", "ba9876543210", {"ort": "1.20.1", "vai": "1.20.1"}) != base
    assert versioned_cache_key("bce", "0123456789ab", {"ort": "1.21.0", "vai": "1.20.1"}) != base
    assert versioned_cache_key("bce", "0123456789ab", {"ort": "1.20.1", "vai": "1.21.0"}) != base
    assert versioned_cache_key("bce", "0123456789ab", {"ort": "1.20.1", "vai": "1.20.1"}) == base


def test_key_is_a_safe_folder_name_and_versioning_twice_does_not_stack():
    key = versioned_cache_key("bce", "0123456789ab", {"ort": "1.20.1+vitisai-dev/2:x"})
    assert key == "bce-m0123456789ab-ort1.20.1+vitisai_dev_2_x"
    again = versioned_cache_key(key, "ffffffffffff", {"ort": "1.21.0", "vai": "1.21.0"})
    assert again == "bce-mffffffffffff-ort1.21.0-vai1.21.0"


def test_fingerprint_is_a_content_hash(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"x" * 10_000)
    b.write_bytes(b"x" * 9_999 + b"y")
    assert model_fingerprint([a], chunk=4096) == hashlib.sha256(a.read_bytes()).hexdigest()[:12]
    assert model_fingerprint([a]) != model_fingerprint([b])
    assert model_fingerprint([a, b]) != model_fingerprint([a])


def test_runtime_versions_reads_onnxruntime_and_skips_missing_ep_packages(monkeypatch):
    import onnxruntime

    def version(dist):
        if dist == "onnxruntime-vitisai":
            return "1.20.1"
        raise vitisai.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(vitisai.metadata, "version", version)
    assert runtime_versions() == {"ort": onnxruntime.__version__, "vai": "1.20.1"}


def test_runtime_versions_without_onnxruntime(monkeypatch):
    real_import = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime here")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_ort)
    assert runtime_versions()["ort"] == "none"


def test_settings_get_versioned_keys_and_stay_unshared():
    out = with_versioned_cache_keys(VAI_SETTINGS, "0123456789ab", {"ort": "1.20.1"})
    assert out["provider_options"][0]["cache_key"] == "bce-m0123456789ab-ort1.20.1"
    assert out["provider_options"][0]["cache_dir"] == "cache"
    assert VAI_SETTINGS["provider_options"][0]["cache_key"] == "bce"  # the recipe's dict is not modified


@pytest.mark.parametrize(
    "settings",
    [
        None,
        {"execution_provider": ["VitisAIExecutionProvider"], "provider_options": [{"config_file": "c.json"}]},
        {"execution_provider": ["CPUExecutionProvider"], "provider_options": [{"cache_key": "not-vitis"}]},
        {"execution_provider": ["VitisAIExecutionProvider"]},
    ],
    ids=["none", "no-key", "other-ep", "no-options"],
)
def test_no_key_is_added_where_none_was_given(settings):
    assert not has_vitisai_cache_key(settings)
    assert with_versioned_cache_keys(settings, "0123456789ab", {"ort": "1"}) == settings


def test_options_pair_with_providers_by_position():
    settings = {
        "execution_provider": ["CPUExecutionProvider", ("VitisAIExecutionProvider", {})],
        "provider_options": [{"cache_key": "cpu"}, {"cache_key": "npu"}],
    }
    assert has_vitisai_cache_key(settings) and names_vitisai(settings)
    out = with_versioned_cache_keys(settings, "0123456789ab", {"ort": "1"})
    assert [o["cache_key"] for o in out["provider_options"]] == ["cpu", "npu-m0123456789ab-ort1"]
    assert not names_vitisai({"execution_provider": ["CPUExecutionProvider"]})
