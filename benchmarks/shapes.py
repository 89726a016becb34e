"""``python -m benchmarks.shapes``: models whose *shape* is the hard part, against onnx.load + onnx.save.

Three single-file models built here (offline, seeded, cached in ``bench-out/shapes/``):

* ``tiny100k``: 100,000 four-element FP32 initializers feeding a chain of Adds (6 MB): cost per
  tensor and per node, which must stay linear;
* ``constant``: a 400 MB weight held by a Constant node;
* ``if_branch``: a 400 MB initializer inside an If branch;
* ``float_data``: 128 MB of weights in ``float_data`` (onnx.helper.make_tensor's default encoding),
  not ``raw_data``: streamed like raw_data since issue 21 (about 500 MB peak before);
* ``int_data``: 8 million int64 in ``int64_data`` (48 MB of varints): lifted and carried verbatim since issue 21;
* ``small98mb``: 100,000 tensors of 256 floats (98 MB): many tensors each under the reader's 1 KB
  lifting threshold, so they stay in the skeleton; the bound there is the skeleton's size.

Each is converted with ``olive-bf16 convert`` (default options, and ``--min-elements 1`` on
``tiny100k`` so every tensor converts), inspected with ``olive-bf16 inspect``, and loaded and saved
with ``onnx.load`` + ``onnx.save``: the yardstick, run in the same call, alternating with ours. The
two many-tensor cases also get ``onnx.load`` alone, whose peak is the bound for ours there.
Every command is its own process, measured from outside (wall seconds, peak RSS); the table gives
medians and each row's ratio to the yardstick.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.measure import run_measured

MB = 2**20
_SIDE = 10240  # 10240 x 10240 float32: 400 MB
_LOAD_SAVE = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"
_LOAD = "import onnx, sys; onnx.load(sys.argv[1])"


def _big() -> np.ndarray:
    return (np.arange(_SIDE * _SIDE, dtype=np.float32).reshape(_SIDE, _SIDE) % 9973) / np.float32(997.0)


def _io():
    return (helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, _SIDE]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, _SIDE]))


def build_tiny(path: Path, count: int = 100_000) -> None:
    inits, nodes, prev = [], [], "x0"
    for i in range(count):
        inits.append(numpy_helper.from_array(np.full(4, i % 7, np.float32), f"b{i}"))
        nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def build_constant(path: Path) -> None:
    x, y = _io()
    constant = helper.make_node("Constant", [], ["C"], value=numpy_helper.from_array(_big(), "C_value"))
    graph = helper.make_graph([constant, helper.make_node("MatMul", ["x", "C"], ["y"])], "constant", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def build_if_branch(path: Path) -> None:
    x, y = _io()
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "V"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, _SIDE])], [numpy_helper.from_array(_big(), "V")])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, _SIDE])])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(nodes, "if_branch", [x], [y], [numpy_helper.from_array(np.array(0, np.float32), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def build_float_data(path: Path, count: int = 8, side: int = 2048) -> None:
    inits, nodes, prev = [], [], "x"
    for i in range(count):
        w = (np.arange(side * side, dtype=np.float32).reshape(side, side) % (997 + i)) / np.float32(997.0)
        inits.append(helper.make_tensor(f"W{i}", TensorProto.FLOAT, w.shape, w.ravel()))  # float_data
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "float_data", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, side])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def build_small98mb(path: Path, count: int = 100_000, size: int = 256) -> None:
    inits, nodes, prev = [], [], "x0"
    for i in range(count):
        inits.append(numpy_helper.from_array(np.full(size, i % 7, np.float32), f"b{i}"))
        nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [size])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def build_int_data(path: Path, count: int = 8_000_000) -> None:
    """8 million int64 in int64_data (48 MB of varints, onnx.helper.make_tensor's encoding) beside a small FP32 weight."""
    values = (np.arange(count, dtype=np.int64) * 7919) % 100003 - 50000
    w = numpy_helper.from_array((np.arange(4096, dtype=np.float32).reshape(64, 64) % 97) / np.float32(97.0), "w")
    inits = [helper.make_tensor("idx", TensorProto.INT64, [count], values), w]
    nodes = [helper.make_node("ReduceSum", ["idx"], ["s"], keepdims=0), helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "int_data", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("s", TensorProto.INT64, []),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


CASES = {"tiny100k": build_tiny, "constant": build_constant, "if_branch": build_if_branch,
         "float_data": build_float_data, "int_data": build_int_data, "small98mb": build_small98mb}


def commands(case: str, src: Path, work: Path) -> dict[str, list[str]]:
    py = sys.executable
    found = {
        "olive-bf16 convert": [py, "-m", "olive_bf16_pass", "convert", str(src), str(work / "out.onnx"), "-q",
                               "--in-place"],
        "olive-bf16 inspect": [py, "-m", "olive_bf16_pass", "inspect", str(src)],
        "onnx.load + onnx.save": [py, "-c", _LOAD_SAVE, str(src), str(work / "saved.onnx")],
    }
    if case == "tiny100k":
        found["olive-bf16 convert --min-elements 1"] = [*found["olive-bf16 convert"], "--min-elements", "1"]
    if case in ("tiny100k", "small98mb"):  # many tensors: peak memory is held against onnx.load's alone (issue 16)
        found["onnx.load"] = [py, "-c", _LOAD, str(src)]
    return found


def bench_case(case: str, out: Path, runs: int) -> list[list[str]]:
    src = out / f"{case}.onnx"
    if not src.exists():
        out.mkdir(parents=True, exist_ok=True)
        CASES[case](src)
    work = out / "runs"
    work.mkdir(parents=True, exist_ok=True)
    rows = commands(case, src, work)
    figures: dict[str, list] = {label: [] for label in rows}
    for _ in range(runs):  # alternate, so a drift in the machine's speed touches every row alike
        for label, cmd in rows.items():
            measured = run_measured(cmd, work / "log.txt", timeout_s=900)
            if not measured.ok:
                raise SystemExit(f"{case}: {label} failed: {measured.error_line()}")
            figures[label].append(measured)
    base = "onnx.load + onnx.save"
    base_wall = statistics.median(m.wall_s for m in figures[base])
    base_peak = statistics.median(m.peak_rss for m in figures[base])
    table = []
    for label, measured in figures.items():
        wall = statistics.median(m.wall_s for m in measured)
        peak = statistics.median(m.peak_rss for m in measured)
        table.append([f"{case} ({src.stat().st_size / MB:.0f} MB)", label, f"{wall:.2f}", f"{peak / MB:.0f}",
                      f"{wall / base_wall:.2f}x", f"{peak / base_peak:.2f}x"])
    for path in work.glob("*.onnx*"):
        path.unlink()
    return table


def render(rows: list[list[str]]) -> str:
    head = ["model", "command", "wall s", "peak RSS MB", "time vs load+save", "peak vs load+save"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.shapes", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)} (default: all)")
    ap.add_argument("--runs", type=int, default=3, help="runs of every command; the median is shown (default 3)")
    ap.add_argument("--out", default="bench-out/shapes", help="where the models are built and cached")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        if case not in CASES:
            ap.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        rows += bench_case(case, out, args.runs)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
