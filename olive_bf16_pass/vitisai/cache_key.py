"""What the Vitis AI EP (Ryzen AI NPU) needs from the pass and the compile: a cache key that changes with the
model and the EP version, and a way to tell that a run targets that EP.

The EP keeps a compiled model under ``cache_dir/cache_key`` and reuses it whenever the key
matches. Its default key is a hash of the model; a fixed ``cache_key`` from a recipe would reuse
a stale compile after the model changed, and AMD's documentation says compiled caches must not
be reused across EP or NPU driver versions. So a given ``cache_key`` becomes
``{key}-m{model hash}-ort{onnxruntime version}[-vai{onnxruntime-vitisai version}][-voe{voe version}]``.
The NPU driver's version is not visible from Python; the Ryzen AI Software release, which pins
the EP and the driver it supports, shows up through the EP's package versions.

No Olive import here; onnxruntime is imported only when versions are looked up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from olive_bf16_pass.providers import VITISAI as VITISAI_EP

__all__ = [
    "EP_DISTRIBUTIONS", "has_vitisai_cache_key", "model_fingerprint", "names_vitisai", "runtime_versions", "versioned_cache_key", "with_versioned_cache_keys",
]

# (label in the key, distribution): the vendor ORT build and the Vitis AI runtime of Ryzen AI
EP_DISTRIBUTIONS = (("vai", "onnxruntime-vitisai"), ("voe", "voe"))
_SUFFIX = re.compile(r"-m[0-9a-f]{12}-ort[^-]*(-(vai|voe)[^-]*)*$")


def _clean(version: str) -> str:
    """A version as a folder-name-safe token without the '-' that separates the key's parts."""
    return re.sub(r"[^A-Za-z0-9.+_]", "_", version)


def runtime_versions() -> dict[str, str]:
    """{"ort": onnxruntime.__version__, "vai"/"voe": the EP packages' versions where installed}."""
    try:
        import onnxruntime

        versions = {"ort": str(onnxruntime.__version__)}
    except ImportError:
        versions = {"ort": "none"}  # still a valid key; a later install of ORT changes it
    for label, dist in EP_DISTRIBUTIONS:
        try:
            versions[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def model_fingerprint(paths: Iterable[str | Path], chunk: int = 1 << 22) -> str:
    """First 12 hex digits of the SHA-256 of the model's files' bytes, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()[:12]


def versioned_cache_key(key: str, fingerprint: str, versions: Mapping[str, str]) -> str:
    """``key`` with the model's fingerprint and the runtime versions; a previous suffix is replaced."""
    base = _SUFFIX.sub("", key)
    parts = [base, f"m{fingerprint}", f"ort{_clean(versions.get('ort', 'none'))}"]
    parts += [f"{label}{_clean(versions[label])}" for label, _ in EP_DISTRIBUTIONS if versions.get(label)]
    return "-".join(parts)


def _ep_name(entry: Any) -> str:
    """An execution_provider entry is a name, or (name, options) in some Olive configs."""
    return entry if isinstance(entry, str) else str(entry[0])


def names_vitisai(inference_settings: Mapping[str, Any] | None) -> bool:
    return any(_ep_name(e) == VITISAI_EP for e in (inference_settings or {}).get("execution_provider") or [])


def with_versioned_cache_keys(
    inference_settings: Mapping[str, Any] | None, fingerprint: str, versions: Mapping[str, str]
) -> dict[str, Any] | None:
    """A copy of ``inference_settings`` whose Vitis AI ``cache_key``s carry the model and versions.

    Provider options pair with ``execution_provider`` by position. Settings without a Vitis AI
    ``cache_key`` come back unchanged: no key is added where the user gave none.
    """
    if not inference_settings:
        return inference_settings
    settings = dict(inference_settings)
    providers = settings.get("execution_provider") or []
    options = [dict(o) if o else o for o in settings.get("provider_options") or []]
    for i, entry in enumerate(providers):
        if _ep_name(entry) == VITISAI_EP and i < len(options) and options[i] and options[i].get("cache_key"):
            options[i]["cache_key"] = versioned_cache_key(str(options[i]["cache_key"]), fingerprint, versions)
    if "provider_options" in settings:
        settings["provider_options"] = options
    return settings


def has_vitisai_cache_key(inference_settings: Mapping[str, Any] | None) -> bool:
    """Whether any Vitis AI provider options carry a cache_key (so a fingerprint is worth computing)."""
    settings = inference_settings or {}
    options = settings.get("provider_options") or []
    return any(
        _ep_name(e) == VITISAI_EP and i < len(options) and options[i] and options[i].get("cache_key")
        for i, e in enumerate(settings.get("execution_provider") or [])
    )
