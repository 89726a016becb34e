"""A conversion the pass refuses stops `olive run` (exit != 0, the reason on one line, no model).

Olive 0.13 re-raises only user-error types from a pass (ValueError among them); anything else is
logged and the run exits 0 without an output model. These run the real `olive run`.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from olive.model import ONNXModelHandler
from olive.passes.olive_pass import create_pass_from_dict

from helpers import embedding_mlp, save
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.olive.passes import OnnxFloatToBFloat16

OLIVE = str(Path(sys.executable).parent / "olive")


def _missing_data(folder: Path) -> Path:
    model = save(embedding_mlp(vocab=256, hidden=64), folder / "model.onnx", external=True)
    (folder / "model.onnx.data").unlink()
    return model


def _escaping_data(folder: Path) -> Path:
    """External data named '../outside.data': the file exists, but outside the model's folder."""
    model = save(embedding_mlp(vocab=256, hidden=64), folder / "model.onnx", external=True)
    (folder / "model.onnx.data").rename(folder.parent / "outside.data")
    proto = onnx.load(model, load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    onnx.save(proto, model)
    return model


REFUSED = {
    "missing-data": (_missing_data, "the file is missing"),
    "escaping-data": (_escaping_data, "inside the model's folder"),
}


def _olive_run(tmp_path: Path, model: Path) -> subprocess.CompletedProcess:
    cpu = [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]
    recipe = {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": cpu}},
        "passes": {"bf16": {"type": "OnnxFloatToBFloat16"}},
        "host": "local_system",
        "target": "local_system",
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "clean_cache": True,
    }
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OLIVE_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1")
    return subprocess.run([OLIVE, "run", "--config", str(tmp_path / "recipe.json")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSED))
def test_olive_run_fails_loudly_on_a_refused_model(tmp_path, case):
    make, reason = REFUSED[case]
    (tmp_path / "m").mkdir()
    result = _olive_run(tmp_path, make(tmp_path / "m"))
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("olive_bf16_pass.errors.ConversionError: OnnxFloatToBFloat16: ") and reason in last
    assert not list((tmp_path / "out").rglob("*.onnx"))  # no model in the output folder (or no folder)


def _run_pass(tmp_path: Path, model: Path, **config):
    p = create_pass_from_dict(OnnxFloatToBFloat16, config, disable_search=True)
    return p.run(ONNXModelHandler(str(model)), str(tmp_path / "out"))


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_pass_raises_a_one_line_value_error(tmp_path, case):
    make, reason = REFUSED[case]
    (tmp_path / "m").mkdir()
    with pytest.raises(ValueError, match=reason) as info:  # ValueError: Olive re-raises it
        _run_pass(tmp_path, make(tmp_path / "m"))
    assert isinstance(info.value, ConversionError) and "\n" not in str(info.value)
    assert not list((tmp_path / "out").rglob("*"))


@pytest.mark.parametrize(
    "code, way_out", [(errno.ENOSPC, "free some space"), (errno.EACCES, "choose a folder you can write to")]
)
def test_os_errors_in_the_pass_become_value_errors_with_the_way_out(tmp_path, monkeypatch, code, way_out):
    from olive_bf16_pass.olive import passes

    def failing(src, dst, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(passes, "convert_file", failing)
    model = save(embedding_mlp(vocab=256, hidden=64), tmp_path / "model.onnx")
    with pytest.raises(ValueError) as info:
        _run_pass(tmp_path, model)
    message = str(info.value)
    assert message.startswith("OnnxFloatToBFloat16: ") and os.strerror(code) in message and way_out in message
    assert message.endswith("nothing was written") and "\n" not in message
