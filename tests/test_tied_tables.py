"""Tied tables: a Gather table that the LM head reads too (issue 9, item 6).

A tied LM head reuses the word-embedding matrix ``E`` as the output projection: ``Gemm(h, E,
transB=1)``, or ``MatMul(h, Transpose(E))``. The default conversion widens a table that the Gemm
reads directly with ONE ``Cast`` that every consumer reads, so ONNX Runtime folds it into a single
FP32 copy; a table read only through Gather and Transpose stays BF16, each reader's output widened
(the Transpose is folded in BF16, then widened once). These tests
build a ~197 MB table, convert it with the defaults, and check in fresh processes that the logits
are right and that the session's peak RSS at load (creation + one run) is not above FP32's.

Measured with onnxruntime 1.31 on Linux, table 48000 x 1024 (196.6 MB FP32), peak RSS in MB,
identical in three runs: Gemm head FP32 433, BF16 433; MatMul-through-Transpose head FP32 617,
BF16 710 with one shared Cast, 523 with the Cast after the Transpose (the default now).
"""

from __future__ import annotations

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import IR_VERSION, bf16_tolerance
from olive_bf16_pass import convert_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="peak RSS is read from /proc/self/status (VmHWM), Linux only"),
]

VOCAB, HIDDEN = 48000, 1024  # 196.6 MB FP32: large enough that a 100 MB copy dwarfs allocator noise
IDS = np.array([0, 1, 7, 4095, 12345, 30000, 47999, 1], dtype=np.int64)
SCALE = 2.0
# The bound on BF16's peak: FP32's peak + 2% + 8 MB. The runs above repeat to the MB; the slack
# covers allocator noise on other machines and runtimes (glibc arena/mmap-threshold decisions,
# thread stacks: a few MB), and stays far below the ~100 MB a second copy of half the table costs.
REL_SLACK, ABS_SLACK_MB = 1.02, 8

# One session in a fresh process: create it, run once, save the logits, print the peak RSS.
_MEASURE = """
import json, sys
import numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
logits = session.run(None, {"ids": np.load(sys.argv[2])})[0]
np.save(sys.argv[3], logits)
with open("/proc/self/status") as fh:
    hwm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": hwm_kb / 1024}))
"""


def table() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((VOCAB, HIDDEN), dtype=np.float32) * 0.05).astype(np.float32)


def tied_model(head: str, e: np.ndarray) -> onnx.ModelProto:
    """ids -> Gather(E) -> Mul(2) -> Gemm(h, E, transB=1) or MatMul(h, Transpose(E)) -> logits."""
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("Mul", ["emb", "scale"], ["h"], name="scale_h"),
    ]
    if head == "gemm":
        nodes.append(helper.make_node("Gemm", ["h", "E"], ["logits"], name="lm_head", transB=1))
    else:
        nodes += [
            helper.make_node("Transpose", ["E"], ["E_t"], name="lm_head_t", perm=[1, 0]),
            helper.make_node("MatMul", ["h", "E_t"], ["logits"], name="lm_head"),
        ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", VOCAB])],
        [numpy_helper.from_array(e, "E"), numpy_helper.from_array(np.array(SCALE, np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def measure(model_path, ids_path, tmp) -> tuple[float, np.ndarray]:
    out = tmp / (model_path.stem + "_logits.npy")
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(model_path), str(ids_path), str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"], np.load(out)


@pytest.fixture(scope="module")
def e() -> np.ndarray:
    return table()


@pytest.fixture(scope="module", params=["gemm", "matmul"])
def tied(request, e, tmp_path_factory):
    """For each head: the converted model, and (peak MB, logits) of the FP32 and BF16 sessions."""
    head = request.param
    tmp = tmp_path_factory.mktemp(f"tied_{head}")
    fp32, bf16, ids = tmp / "fp32.onnx", tmp / "bf16.onnx", tmp / "ids.npy"
    onnx.save(tied_model(head, e), fp32)
    convert_file(fp32, bf16)  # the defaults
    np.save(ids, IDS)
    result = {"head": head, "model": onnx.load(bf16, load_external_data=False),
              "fp32": measure(fp32, ids, tmp), "bf16": measure(bf16, ids, tmp)}
    for path in (fp32, bf16):
        path.unlink()  # 300 MB of temporary files per head
    return result


def test_tied_table_gets_one_cast_shared_by_every_consumer(tied):
    nodes = tied["model"].graph.node
    casts = [n for n in nodes if n.op_type == "Cast"]
    stored = {t.name: t.data_type for t in tied["model"].graph.initializer}
    assert stored["E_bf16"] == TensorProto.BFLOAT16 and "E" not in stored
    if tied["head"] == "gemm":  # the head needs FP32 E: one Cast that every reader shares
        assert [(list(c.input), list(c.output)) for c in casts] == [(["E_bf16"], ["E"])]
        assert {n.name for n in nodes if "E" in n.input} == {"embed", "lm_head"}
    else:  # Gather and Transpose only move values: both read BF16 E, each output is widened
        assert {n.name for n in nodes if "E_bf16" in n.input} == {"embed", "lm_head_t"}
        widened = {c.output[0] for c in casts}
        assert len(casts) == 2 and "E_t" in widened


def test_tied_table_values(tied, e):
    fp32_logits, bf16_logits = tied["fp32"][1], tied["bf16"][1]
    assert bf16_logits.shape == (len(IDS), VOCAB) and bf16_logits.dtype == np.float32
    np.testing.assert_allclose(bf16_logits, fp32_logits, rtol=0, atol=bf16_tolerance(fp32_logits))
    # exact: the FP32 model with E rounded to BF16 (ties to even, as the default rounding)
    rounded = e.astype(ml_dtypes.bfloat16).astype(np.float32)
    reference = (SCALE * rounded[IDS]) @ rounded.T
    np.testing.assert_allclose(bf16_logits, reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))


def test_tied_table_peak_memory_at_load_not_above_fp32(tied):
    fp32_peak, bf16_peak = tied["fp32"][0], tied["bf16"][0]
    bound = fp32_peak * REL_SLACK + ABS_SLACK_MB
    message = f"BF16 session peaks at {bf16_peak:.0f} MB, FP32 at {fp32_peak:.0f} MB (bound {bound:.0f})"
    assert bf16_peak <= bound, message
