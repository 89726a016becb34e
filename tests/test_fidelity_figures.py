"""The three fidelity figures and the miscompile flag, on arrays whose distances are known."""

from __future__ import annotations

import numpy as np
import onnx

from olive_bf16_pass.emulation import EMULATION_KEY
from olive_bf16_pass.fidelity_figures import MISCOMPILE_FACTOR, MISCOMPILE_FLOOR, emulated_model, three_figures
from tests.helpers import embedding_mlp


def _near(a, scale, seed):
    return a + np.random.default_rng(seed).standard_normal(a.shape) * scale * np.abs(a).mean()


REF = np.random.default_rng(0).standard_normal((24, 16))
WEIGHTS, EMULATED = _near(REF, 1e-3, 1), _near(REF, 1e-2, 2)  # gaps (1 - cosine) of about 5e-7 and 5e-5


def test_weight_only_and_emulated_figures_against_fp32():
    out = three_figures(REF, WEIGHTS, EMULATED)
    assert set(out) == {"weight_only", "emulated"}
    assert 1 > out["weight_only"]["cosine_mean"] > out["emulated"]["cosine_mean"] > 0.9999


def test_a_sound_device_passes_and_a_miscompile_is_flagged_with_its_figures():
    sound = _near(EMULATED, 3e-2, 3)  # a few times the emulation's gap: its own kernels' approximations
    out = three_figures(REF, WEIGHTS, EMULATED, sound)
    assert not out["miscompile"]["flagged"], out["miscompile"]
    assert out["device"]["cosine_mean"] < out["emulated"]["cosine_mean"]
    broken = _near(EMULATED, 0.5, 4)
    flag = three_figures(REF, WEIGHTS, EMULATED, broken)["miscompile"]
    assert flag["flagged"] and flag["factor"] == MISCOMPILE_FACTOR
    assert flag["device_gap"] > flag["threshold"] == MISCOMPILE_FACTOR * max(flag["emulated_gap"], MISCOMPILE_FLOOR)
    assert "likely miscompile" in flag["why"]
    assert not three_figures(REF, WEIGHTS, EMULATED, broken, factor=1e6)["miscompile"]["flagged"]


def test_reranker_scores_use_spearman():
    scores = np.random.default_rng(5).standard_normal((6, 8))
    out = three_figures(scores, scores, _near(scores, 1e-3, 6), _near(scores, 1.0, 7), kind="reranker")
    assert out["weight_only"]["spearman"] == 1.0 and "spearman" in out["device_vs_emulated"]


def test_emulated_model_is_made_once(tmp_path):
    onnx.save(embedding_mlp(), str(tmp_path / "m.onnx"))
    path = emulated_model(tmp_path / "m.onnx", tmp_path / "work")
    stamp = path.stat().st_mtime_ns
    assert emulated_model(tmp_path / "m.onnx", tmp_path / "work").stat().st_mtime_ns == stamp
    assert EMULATION_KEY in {p.key for p in onnx.load(str(path)).metadata_props}
