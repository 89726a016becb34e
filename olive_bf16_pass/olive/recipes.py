"""The workflow recipes, shipped with the package: list them, write a runnable copy anywhere.

The wheel carries the repository's ``recipes/`` folder as ``olive_bf16_pass/recipes`` (see
pyproject.toml). Two kinds of recipe live there:

- the front door: ``recipes/NAME.json`` (``quickstart``, ``bce_ryzenai``, ...);
- the catalog, in Olive's recipe layout (microsoft/olive-recipes): ``recipes/<org>-<model>/<target>/``
  with an ``info.yml`` (``arch``, ``recipes: [{name, file, devices, eps}]``, and this project's
  ``olive_bf16`` block: the Hugging Face model, pooling, prefixes, the real shape), the workflow
  JSON, a README and a requirements.txt. A catalog recipe is named ``<org>-<model>/<target>``.

The recipes name their files relative to a repository checkout (``recipes/encoder_export.py``)
and write to ``cache`` / ``outputs/...`` under the current directory, so they run from the
repository root only. :func:`write_recipe` writes a copy whose paths are absolute: the scripts
and Vitis AI configs it uses are the installed ones, its cache and outputs go under the folder it
is written to, and its CPU twin is written beside it.

Used by ``olive-bf16 recipes``. Imports neither Olive nor onnx (PyYAML, an Olive dependency, only
when the catalog is read).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CatalogEntry", "catalog", "describe", "e5_query_corpus", "list_recipes", "prefixed_corpus", "recipes_dir",
    "write_recipe",
]

_PREFIX = "recipes/"
_SUPPORT = ("vaiml_config",)  # JSON files in the folder that are not workflows
TARGETS = {"cpu": "runs here", "vitisai": "checked up to the EP"}  # catalog target folder -> status


def recipes_dir() -> Path:
    """The installed recipes (``olive_bf16_pass/recipes``), else the source tree's ``recipes/``."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "recipes", package.parent / "recipes"):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise FileNotFoundError(f"no recipes found beside {package}; reinstall olive-bf16-pass")


def _workflows(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if not p.stem.startswith(_SUPPORT))


@dataclass(frozen=True)
class CatalogEntry:
    """One workflow of the catalog, as its folder's info.yml lists it."""

    name: str  # '<org>-<model>/<target>' ('.../<file stem>' where a folder lists several)
    model_folder: str  # '<org>-<model>'
    target: str  # 'cpu' or 'vitisai'
    path: Path  # the workflow JSON
    info: dict = field(hash=False, compare=False)  # the folder's whole info.yml
    recipe: dict = field(hash=False, compare=False)  # its entry under 'recipes'

    @property
    def status(self) -> str:
        """'runs here' (CPU: run end to end in CI) or 'checked up to the EP' (Vitis AI)."""
        return TARGETS.get(self.target, "untested")

    @property
    def model(self) -> dict:
        """The ``olive_bf16`` block: hf_model, task, pooling, normalize, prefixes, shape."""
        return self.info.get("olive_bf16") or {}

    def load(self) -> dict:
        return json.loads(self.path.read_text(encoding="utf-8"))


def catalog(root: Path | None = None) -> list[CatalogEntry]:
    """Every workflow that an ``info.yml`` under ``recipes/<org>-<model>/<target>/`` lists, sorted by name."""
    import yaml  # an Olive dependency; the catalog is for Olive users

    root = root or recipes_dir()
    entries = []
    for info_path in sorted(root.glob("*/*/info.y*ml")):
        info = yaml.safe_load(info_path.read_text(encoding="utf-8")) or {}
        listed = info.get("recipes") or []
        for item in listed:
            path = info_path.parent / item["file"]
            folder, target = info_path.parent.parent.name, info_path.parent.name
            name = f"{folder}/{target}" + (f"/{path.stem}" if len(listed) > 1 else "")
            entries.append(CatalogEntry(name, folder, target, path, info, item))
    return sorted(entries, key=lambda e: e.name)


def describe(recipe: dict) -> str:
    """'PyTorchModel -> OnnxConversion -> OnnxFloatToBFloat16 on CPUExecutionProvider'."""
    chain = [recipe.get("input_model", {}).get("type", "?")]
    chain += [p.get("type", "?") for p in (recipe.get("passes") or {}).values()]
    target = (recipe.get("systems") or {}).get(recipe.get("target"), {})
    eps = [ep for acc in (target.get("config") or target).get("accelerators") or [] for ep in
           acc.get("execution_providers") or []]
    return " -> ".join(chain) + (f" on {', '.join(eps)}" if eps else "")


def _all_recipes() -> dict[str, Path]:
    """name -> workflow file: the front door first (sorted), then the catalog (sorted)."""
    source = recipes_dir()
    found = {p.stem: p for p in _workflows(source)}
    try:
        found.update((e.name, e.path) for e in catalog(source))
    except ImportError:  # no PyYAML (Olive not installed): the front door only
        pass
    return found


def list_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every workflow recipe: the front door, then the catalog."""
    return [(name, describe(json.loads(p.read_text(encoding="utf-8")))) for name, p in _all_recipes().items()]


def _resolve(value: Any, source: Path) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, source) for v in value]
    if isinstance(value, str) and value.startswith(_PREFIX) and (source / value[len(_PREFIX):]).exists():
        return str(source / value[len(_PREFIX):])
    return value


def _lookup(name: str) -> tuple[str, Path]:
    known = _all_recipes()
    key = name.removesuffix(".json")
    key = key.removeprefix(_PREFIX)  # 'recipes/X.json' as a cpu_twin names it
    if key in known:
        return key, known[key]
    by_path = {str(p.relative_to(recipes_dir()).with_suffix("")).replace("\\", "/"): (n, p) for n, p in known.items()}
    if key in by_path:
        return by_path[key]
    raise ValueError(f"no recipe named {name!r}; the recipes are: {', '.join(known)}")


def write_recipe(name: str, destination: str | Path) -> Path:
    """Write recipe ``name`` into ``destination``, runnable from anywhere.

    ``name`` is a front-door recipe (``quickstart`` or ``quickstart.json``), a catalog recipe
    (``BAAI-bge-small-en-v1.5/cpu``) or a workflow's path under ``recipes/``. Returns the written
    file (named as the workflow file). Its files are the installed ones, its ``cache_dir`` and
    ``output_dir`` sit under ``destination`` (Olive's cache is kept between runs: a second run is
    fast), and a ``cpu_twin`` is written beside it and pointed to.
    """
    source = recipes_dir()
    _, path = _lookup(name)
    stem = path.stem
    destination = Path(destination).resolve()
    destination.mkdir(parents=True, exist_ok=True)
    recipe = _resolve(json.loads(path.read_text(encoding="utf-8")), source)
    recipe["cache_dir"] = str(destination / str(recipe.get("cache_dir") or "cache"))
    recipe["output_dir"] = str(destination / str(recipe.get("output_dir") or f"outputs/{stem}"))
    for pass_config in (recipe.get("passes") or {}).values():  # the EP's compile cache beside Olive's
        for options in (pass_config.get("inference_settings") or {}).get("provider_options") or []:
            if options and options.get("cache_dir") and not Path(options["cache_dir"]).is_absolute():
                options["cache_dir"] = str(destination / options["cache_dir"])
    for evaluator in (recipe.get("evaluators") or {}).values():
        twin = evaluator.get("cpu_twin")
        if twin:
            twin_path = Path(twin)
            twin_name = str(twin_path.relative_to(source).with_suffix("")) if twin_path.is_absolute() else twin
            evaluator["cpu_twin"] = str(write_recipe(twin_name, destination))
    out = destination / f"{stem}.json"
    out.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- prefixed corpora
# Kept for workflows written before the fidelity evaluators had ``query_prefix`` / ``passage_prefix``
# (which the catalog's recipes use now, and which score queries against passages where they differ):
# a corpus whose every text carries one prefix, for ``"corpus": "module:function"``.


def prefixed_corpus(prefix: str, source: str | Path | None = None) -> str:
    """The corpus (the shipped one by default) with ``prefix`` before every text, as a JSON-lines
    file in the temporary folder (written once per content); returns its path."""
    if source is None:
        source = Path(__file__).resolve().parent.parent / "data" / "corpus.jsonl"
    rows = []
    for line in Path(source).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = {"text": line.strip()}
        row["text"] = prefix + row["text"]
        rows.append(json.dumps(row, ensure_ascii=False))
    text = "\n".join(rows) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / "olive_bf16_pass" / f"corpus-{digest}.jsonl"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(f".{digest}.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(out)
    return str(out)


def e5_query_corpus() -> str:
    """The shipped corpus with e5's ``"query: "`` prefix, which its card asks for on both sides of a
    symmetric task (the evaluators compare the corpus with itself). For ``"corpus"`` in a recipe."""
    return prefixed_corpus("query: ")
