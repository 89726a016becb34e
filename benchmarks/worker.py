"""What runs inside each measured subprocess: one conversion, or one ONNX Runtime session.

    python -m benchmarks.worker convert TOOL SRC DST [--external] [--standin] --result R.json
    python -m benchmarks.worker ort MODEL INPUTS.npz --emb EMB.npy --runs N --result R.json

The parent measures wall time and peak RSS from outside; the worker writes what only it can
know into R.json: the time of the conversion call itself (``inner_s``, imports excluded; for the
Olive rows that is ``Pass.run``), the converter's report, or the session's load time, latencies
and first-token embeddings. Imports are kept to what each job needs, so that baselines are fair.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from olive_bf16_pass.providers import CPU


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def convert(tool: str, src: str, dst: str, external: bool, standin: bool, options: dict | None = None) -> dict:
    res: dict = {"tool": tool}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if tool == "core":
        if standin:
            from benchmarks.standin import convert_file

            def options():
                return None
        else:
            from olive_bf16_pass import ConversionOptions, convert_file

            chosen = options or {}

            def options():
                return ConversionOptions(**chosen)
        kwargs = {"save_as_external_data": external, "external_data_name": (Path(dst).name + ".data") if external else None}
        t0 = time.perf_counter()
        report = convert_file(src, dst, options(), **kwargs)
        res["inner_s"] = time.perf_counter() - t0
        res["output"] = dst
        try:
            res["report"] = report.to_dict()
            res["summary"] = report.summary()
        except Exception as e:  # a report problem is not a conversion failure
            res["report_error"] = repr(e)
    elif tool in ("pass", "fp16"):
        from olive.model import ONNXModelHandler
        from olive.passes.olive_pass import create_pass_from_dict

        if tool == "fp16":
            from olive.passes.onnx.float16_conversion import OnnxFloatToFloat16 as cls
        elif standin:
            from benchmarks.standin import make_pass_class

            cls = make_pass_class()
        else:
            from olive_bf16_pass.olive.passes import OnnxFloatToBFloat16 as cls
        p = create_pass_from_dict(cls, {"save_as_external_data": external}, disable_search=True)
        out_dir = str(Path(dst).parent / "olive-out")
        t0 = time.perf_counter()
        out = p.run(ONNXModelHandler(model_path=src), out_dir)
        res["inner_s"] = time.perf_counter() - t0
        res["output"] = str(out.model_path)
    elif tool == "naive":
        from benchmarks.naive import convert as naive_convert

        t0 = time.perf_counter()
        res["report"] = naive_convert(src, dst)
        res["inner_s"] = time.perf_counter() - t0
        res["output"] = dst
    else:
        raise SystemExit(f"unknown tool {tool}")
    res["vmhwm_kb"] = _status_kb("VmHWM")
    return res


def evict_from_page_cache(folder: Path) -> None:
    """Drop the folder's files from the page cache, so every model is measured from a cold start.

    ONNX Runtime memory-maps external data; how much of a mapping counts as resident depends on
    what the page cache holds, and a file that was just written is all there. Without this, the
    RSS of external-data models swings by hundreds of MB between runs (the research in issue 4).
    """
    os.sync()  # dirty pages cannot be dropped
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def ort(model: str, inputs: str, emb_path: str, runs: int, warmup: int) -> dict:
    import numpy as np
    import onnxruntime as ort_

    evict_from_page_cache(Path(model).parent)
    data = np.load(inputs)
    ids, mask = data["input_ids"], data["attention_mask"]
    t0 = time.perf_counter()
    sess = ort_.InferenceSession(model, providers=[CPU])
    load_s = time.perf_counter() - t0
    rss_after_load = _status_kb("VmRSS")
    out_name = sess.get_outputs()[0].name
    embs = []
    for i in range(ids.shape[0]):  # batch 1 x 128, one input at a time
        y = sess.run([out_name], {"input_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1]})[0]
        embs.append(np.asarray(y[0, 0, :], dtype=np.float32))
    np.save(emb_path, np.stack(embs))
    feed = {"input_ids": ids[:1], "attention_mask": mask[:1]}
    for _ in range(warmup):
        sess.run([out_name], feed)
    lat = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run([out_name], feed)
        lat.append(time.perf_counter() - t)
    lat.sort()
    return {
        "load_s": load_s, "latencies_s": lat, "p50_s": lat[len(lat) // 2] if len(lat) % 2 else sum(lat[len(lat) // 2 - 1 : len(lat) // 2 + 1]) / 2,
        "output_dtype": str(y.dtype), "vmrss_after_load_kb": rss_after_load, "vmhwm_kb": _status_kb("VmHWM"),
        "ort_version": ort_.__version__, "intra_op_threads_default": os.cpu_count(),
    }


def paired_latency(reference: str, candidate: str, inputs: str, rounds: int, runs: int) -> dict:
    """Latency of ``candidate`` over ``reference``, both loaded in this one process.

    Separate processes on a shared machine drift by 10% between sessions; interleaving the two
    models in short alternating bursts and taking the median of the per-round ratios cancels most
    of that drift (the issue 4 research measured +-4%).
    """
    import statistics

    import numpy as np
    import onnxruntime as ort_

    data = np.load(inputs)
    feed = {"input_ids": data["input_ids"][:1], "attention_mask": data["attention_mask"][:1]}
    sessions = [ort_.InferenceSession(m, providers=[CPU]) for m in (reference, candidate)]
    names = [s.get_outputs()[0].name for s in sessions]
    for s, n in zip(sessions, names):
        for _ in range(3):
            s.run([n], feed)

    def burst(i: int) -> float:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            sessions[i].run([names[i]], feed)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    ratios, ref_p50, cand_p50 = [], [], []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        got = {i: burst(i) for i in order}
        ref_p50.append(got[0])
        cand_p50.append(got[1])
        ratios.append(got[1] / got[0])
    return {"ratio": statistics.median(ratios), "ratios": ratios,
            "reference_p50_s": statistics.median(ref_p50), "candidate_p50_s": statistics.median(cand_p50)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    sub = ap.add_subparsers(dest="job", required=True)
    c = sub.add_parser("convert")
    c.add_argument("tool", choices=["core", "pass", "fp16", "naive"])
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--external", action="store_true")
    c.add_argument("--standin", action="store_true")
    c.add_argument("--options", type=json.loads, default=None, help="ConversionOptions as JSON (core only)")
    c.add_argument("--result", required=True)
    o = sub.add_parser("ort")
    o.add_argument("model")
    o.add_argument("inputs")
    o.add_argument("--emb", required=True)
    o.add_argument("--runs", type=int, default=20)
    o.add_argument("--warmup", type=int, default=3)
    o.add_argument("--result", required=True)
    q = sub.add_parser("paired")
    q.add_argument("reference")
    q.add_argument("candidate")
    q.add_argument("inputs")
    q.add_argument("--rounds", type=int, default=9)
    q.add_argument("--runs", type=int, default=7)
    q.add_argument("--result", required=True)
    a = ap.parse_args(argv)
    if a.job == "convert":
        res = convert(a.tool, a.src, a.dst, a.external, a.standin, a.options)
    elif a.job == "paired":
        res = paired_latency(a.reference, a.candidate, a.inputs, a.rounds, a.runs)
    else:
        res = ort(a.model, a.inputs, a.emb, a.runs, a.warmup)
    Path(a.result).write_text(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
