"""The deploy folder: what an app ships to load a BF16 model precompiled for the Ryzen AI NPU.

``compile_to_folder`` checks the EP is there (at once, one line), compiles in a watched child
process (compile.py) and writes, in OUTDIR:

- ``<model>_ctx.onnx``: the EP-context model (``ep.context_embed_mode`` 1: the compiled context inside);
- the ``config_file`` used, under its own name: the app must pass the same one (app_development.rst);
- ``cache/<cache_key>/``: the EP's cache, which AMD's packaging list names for BF16 models;
- ``manifest.json``: source and output hashes, the versions found, the provider and session options, the key;
- ``README.md``: the lines an app needs.

The cache key carries the model hash and the runtime versions (cache_key.py's versioned_cache_key),
because AMD says compiled caches must not be reused across EP or driver versions.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from olive_bf16_pass import __version__
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.providers import VITISAI
from olive_bf16_pass.vitisai.cache_key import model_fingerprint, runtime_versions, versioned_cache_key
from olive_bf16_pass.vitisai.compile import (
    DEFAULT_TIMEOUT_S,
    context_model_name,
    provider_options,
    require_vitisai,
    run_compile,
    session_config_entries,
)

__all__ = ["MANIFEST", "DeployResult", "build_manifest", "cache_key_for", "compile_to_folder", "readme_text"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
SOURCES = {
    "ep_context": "amd/ryzen-ai-documentation docs/modelrun.rst (ONNX Runtime EP Context Cache)",
    "precompiled_bf16": "amd/ryzen-ai-documentation docs/app_development.rst (Pre-Compiled Models; "
                        "VitisAI EP Provider Options: the same config_file)",
    "cache_rules": "amd/ryzen-ai-documentation docs/modelrun.rst (cache_dir, cache_key)",
}


@dataclass
class DeployResult:
    folder: Path
    context_model: Path
    manifest: dict
    seconds: float


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_key_for(model: Path, key: str | None = None, versions: dict[str, str] | None = None) -> str:
    """``key`` (default: the model's stem) with the model's hash and the runtime versions."""
    return versioned_cache_key(key or model.stem, model_fingerprint([model]),
                               versions if versions is not None else runtime_versions())


def found_versions() -> dict[str, str]:
    """ONNX Runtime and the Ryzen AI packages' versions where installed; the NPU driver's when it can be read."""
    found = {}
    for label, dist in (("onnxruntime", None), ("onnxruntime-vitisai", "onnxruntime-vitisai"), ("voe", "voe")):
        try:
            if dist is None:
                import onnxruntime

                found[label] = str(onnxruntime.__version__)
            else:
                found[label] = metadata.version(dist)
        except (ImportError, metadata.PackageNotFoundError):
            found[label] = "not found"
    found["npu_driver"] = "not read (not visible from Python; see Device Manager or xrt-smi examine)"
    return found


def build_manifest(source: Path, outputs: list[Path], folder: Path, options: dict[str, str],
                   entries: dict[str, str], cache_key: str, seconds: float | None,
                   versions: dict[str, str] | None = None) -> dict:
    """The manifest's content (pure but for hashing the files): paths relative to ``folder``."""

    def rel(path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            return str(path)

    return {
        "format": MANIFEST_FORMAT,
        "made_by": f"olive-bf16-pass {__version__}",
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "source": {"path": str(source), "sha256": sha256(source), "bytes": source.stat().st_size},
        "outputs": [{"path": rel(p), "sha256": sha256(p), "bytes": p.stat().st_size} for p in outputs],
        "versions": versions if versions is not None else found_versions(),
        "execution_provider": VITISAI,
        "provider_options": {k: (rel(Path(v)) if k in ("config_file", "cache_dir") else v) for k, v in options.items()},
        "session_options": {k: (rel(Path(v)) if k == "ep.context_file_path" else v) for k, v in entries.items()},
        "cache_key": cache_key,
        "compile_seconds": None if seconds is None else round(seconds, 1),
        "sources": SOURCES,
    }


def readme_text(manifest: dict) -> str:
    model = next(o["path"] for o in manifest["outputs"] if o["path"].endswith("_ctx.onnx"))
    opts = manifest["provider_options"]
    return f"""# {model}: precompiled for the Ryzen AI NPU

Made by {manifest['made_by']} on {manifest['made_at']} from `{Path(manifest['source']['path']).name}`
(sha256 {manifest['source']['sha256'][:16]}...) with ONNX Runtime {manifest['versions'].get('onnxruntime')}.

The deployment build of the Vitis AI EP does not compile BF16 models on the fly: ship this folder
and load the precompiled model, passing the same `config_file` it was compiled with:

```python
import onnxruntime as ort

session = ort.InferenceSession(
    "{model}",
    providers=["{VITISAI}"],
    provider_options=[{{"config_file": "{opts['config_file']}", "cache_dir": "{opts['cache_dir']}",
                       "cache_key": "{opts['cache_key']}"}}],
)
assert session.get_providers()[0] == "{VITISAI}"
```

Run the paths relative to this folder (or make them absolute). Compile again when ONNX Runtime,
the Vitis AI EP or the NPU driver changes: compiled caches must not be reused across versions
(the cache key carries the versions it was made with; `manifest.json` lists them). Compare the
NPU's outputs with the FP32 model on the CPU once on the target machine (RyzenAI-SW #390).
"""


def compile_to_folder(model: str | Path, outdir: str | Path, config_file: str | Path,
                      cache_key: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, embed: bool = True,
                      command: list[str] | None = None) -> DeployResult:
    """Compile ``model`` for the Vitis AI EP and write the deploy folder ``outdir``; see the module doc.

    Fails at once (:class:`~olive_bf16_pass.vitisai.compile.VitisAIUnavailable`) without the EP.
    ``command``: the compile child's command line (tests only).
    """
    if command is None:
        require_vitisai()
    model, outdir, config_file = Path(model), Path(outdir), Path(config_file)
    if not model.is_file():
        raise ConversionError(f"{model}: no such model file.")
    if not config_file.is_file():
        raise ConversionError(f"{config_file}: no such config_file (the vaiml compile options, e.g. "
                              "recipes/vaiml_config.json).")
    outdir.mkdir(parents=True, exist_ok=True)
    shipped_config = outdir / config_file.name
    if shipped_config.resolve() != config_file.resolve():
        shutil.copyfile(config_file, shipped_config)
    key = cache_key_for(model, cache_key)
    cache_dir = outdir / "cache"
    context = outdir / context_model_name(model)
    options = provider_options(shipped_config.resolve(), cache_dir.resolve(), key)
    entries = session_config_entries(context.resolve(), embed)
    done = run_compile(model.resolve(), context, options, entries, timeout_s, outdir / "compile.log", command)
    outputs = [context, shipped_config]
    manifest = build_manifest(model, outputs, outdir, options, entries, key, done.seconds)
    (outdir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (outdir / "README.md").write_text(readme_text(manifest))
    return DeployResult(outdir, context, manifest, done.seconds)
