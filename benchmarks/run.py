"""The benchmark command: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

Builds (once, cached in bench-out/models) the three models, converts each with every tool in a
fresh subprocess measured from outside, loads every result in a fresh ONNX Runtime CPU session
(also measured from outside), prints one table per model and the targets checked from it.
See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import floor, shapes  # noqa: E402
from benchmarks.build import MODELS, ensure_built, model_path  # noqa: E402
from benchmarks.measure import mem_available, run_measured  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000
GB = 1_000_000_000

TOOLS = {
    # key: label
    "core": "olive-bf16 (core)",
    "pass": "olive-bf16 (Olive pass)",
    "naive": "naive loop (seed article)",
    "fp16": "Olive OnnxFloatToFloat16",
    "quark-with-cast": "AMD Quark --format with_cast",
    "quark-bf16": "AMD Quark --format bf16",
}
DEFAULT_TOOLS = ",".join(TOOLS)
PAIRED = ("fp32", "core", "fp32_ext", "core_ext", "core_ext_fp32_matmul", "fp32_ext_mmap", "core_ext_mmap")
# glibc raises its mmap threshold when a mapped block is freed; ONNX Runtime frees folded weights
# while it builds a BF16 session, so later prepacked buffers land on the heap (+5 MB of
# fragments). A fixed threshold, for FP32 and BF16 alike, shows the model without that artefact.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # rows whose sessions get --rounds, alternating


@dataclass
class RowSpec:
    key: str  # unique within a model
    label: str
    tool: str | None  # None: the FP32 source itself (reference row)
    src: str  # model folder under bench-out/models
    external: bool  # ask the tool for external data
    ref: str  # the reference row (FP32) this row's fidelity and runtime compare against
    options: dict | None = None  # ConversionOptions for our converter, when not the defaults
    session_env: dict | None = None  # extra environment of the ONNX Runtime session's process


def rows_for(model: str, tools: list[str]) -> list[RowSpec]:
    folder = {"minilm": "minilm", "bce": "bce", "large": "large"}[model]
    ext = model == "large"  # the 2.2 GB model is external data; the output mirrors it
    rows = [RowSpec("fp32", "FP32 source (reference)" + (", external data" if ext else ""), None, folder, ext, "fp32")]
    if model == "bce":
        rows.append(RowSpec("fp32_ext", "FP32 source, external data", None, "bce_ext", True, "fp32_ext"))
        rows.append(RowSpec("fp32_ext_mmap", "FP32 source, ext. data, fixed malloc mmap threshold", None, "bce_ext",
                            True, "fp32_ext_mmap", session_env=FIXED_MMAP_THRESHOLD))
    for t in tools:
        rows.append(RowSpec(t, TOOLS[t], t, folder, ext, "fp32"))
        if t == "core" and model == "bce":
            rows.append(RowSpec("core_ext", TOOLS[t] + ", external data", t, "bce_ext", True, "fp32_ext"))
            # the trade-off for external-data deployments on the CPU EP: MatMul/Gemm weights stay
            # FP32 (no folded FP32 copy at load), embedding tables still BF16
            rows.append(RowSpec("core_ext_fp32_matmul", TOOLS[t] + ", ext. data, MatMul/Gemm FP32", t, "bce_ext",
                                True, "fp32_ext", {"op_block_list": ["MatMul", "Gemm"]}))
            rows.append(RowSpec("core_ext_mmap", TOOLS[t] + ", ext. data, fixed malloc mmap threshold", t, "bce_ext",
                                True, "fp32_ext_mmap", session_env=FIXED_MMAP_THRESHOLD))
    return rows


@dataclass
class Row:
    spec: RowSpec
    convs: list = field(default_factory=list)  # Measured.to_dict() + worker result, per repetition
    error: str | None = None
    wall_s: float | None = None
    inner_s: float | None = None
    peak_rss: int | None = None
    out_bytes: int | None = None
    output: str | None = None
    cos: float | None = None
    cos_min: float | None = None
    ort: dict | None = None  # outside measurement + worker result of the session
    ort_error: str | None = None
    paired: dict | None = None  # latency against the reference row, both in one process

    @property
    def latency_ratio(self):
        """Latency over the reference row's: the paired measurement when there is one."""
        return self.paired["ratio"] if self.paired else None

    @property
    def ort_rss(self):
        return self.ort["peak_rss"] if self.ort else None

    @property
    def p50_ms(self):
        return self.ort["p50_s"] * 1000 if self.ort else None

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "spec"}
        d.update(key=self.spec.key, label=self.spec.label, tool=self.spec.tool, src=self.spec.src,
                 external=self.spec.external, ref=self.spec.ref)
        return d


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_bytes(onnx_path: Path) -> int:
    """The .onnx file plus the external data files it names (or, failing that, its folder's .data files)."""
    total = onnx_path.stat().st_size
    ours = {".txt", ".json", ".maxrss", ".npy", ".npz"}  # the benchmark's own files beside a model
    if not any(p.is_file() and p != onnx_path and p.suffix not in ours for p in onnx_path.parent.iterdir()):
        return total  # a single file: no need to parse it
    try:
        import onnx

        m = onnx.load(str(onnx_path), load_external_data=False)
        locs = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
        total += sum((onnx_path.parent / loc).stat().st_size for loc in locs)
    except Exception:
        total += sum(p.stat().st_size for p in onnx_path.parent.glob("*.data"))
    return total


def warm_cache(folder: Path) -> None:
    """Read a source model once so that no tool pays the first disk read and the next does not."""
    for p in sorted(folder.iterdir()):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(1 << 24):
                    pass


class Bench:
    def __init__(self, args):
        self.a = args
        self.out = Path(args.out).resolve()
        self.runs = self.out / "runs"
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OLIVE_DISABLE_TELEMETRY="1",
                        PYTHONWARNINGS="ignore", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.mem_cap = int(args.mem_cap_gb * 2**30) if args.mem_cap_gb else int(min(0.8 * mem_available(), 20 * 2**30))
        self.impl = {"core": self._impl("convert.py"), "pass": self._impl("olive/passes.py")}
        self.quark_python = args.quark_python or (sys.executable if importlib.util.find_spec("quark") else None)

    def _impl(self, rel: str) -> str:
        if self.a.impl != "auto":
            return self.a.impl
        return "real" if (REPO / "olive_bf16_pass" / rel).exists() else "standin"

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # ---- one conversion -------------------------------------------------------------------
    def convert_once(self, model: str, spec: RowSpec, rep: int) -> dict:
        src = model_path(self.out, spec.src)
        d = self.runs / model / spec.key
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        dst = d / "model.onnx"
        result = d / "result.json"
        py = [sys.executable, "-m", "benchmarks.worker", "convert"]
        if spec.tool in ("core", "pass", "fp16", "naive"):
            cmd = py + [spec.tool, str(src), str(dst), "--result", str(result)]
            if spec.external:
                cmd.append("--external")
            if spec.options:
                cmd += ["--options", json.dumps(spec.options)]
            if spec.tool in self.impl and self.impl[spec.tool] == "standin":
                cmd.append("--standin")
            cwd = REPO
        else:  # AMD Quark's own command, as its users run it
            if not self.quark_python:
                raise RuntimeError("skipped: amd-quark is not installed (pip install amd-quark, or --quark-python)")
            fmt = spec.tool.split("-", 1)[1].replace("-", "_")
            cmd = [self.quark_python, "-m", "quark.onnx.tools.convert_fp32_to_bf16", "--input", str(src),
                   "--output", str(dst), "--format", fmt]
            if spec.external:
                cmd.append("--save_as_external_data")
            cwd = d
        m = run_measured(cmd, d / f"log-{rep}.txt", env=self.env, cwd=cwd, timeout_s=self.a.tool_timeout, mem_cap=self.mem_cap)
        rec = m.to_dict()
        if result.exists():
            rec["worker"] = json.loads(result.read_text())
        if not m.ok:
            rec["error"] = m.error_line()
            return rec
        out = Path(rec.get("worker", {}).get("output") or dst)
        if not out.exists():
            rec["error"] = f"no output at {out}"
            return rec
        rec["output"] = str(out)
        rec["out_bytes"] = model_bytes(out)
        return rec

    def convert_row(self, model: str, row: Row, reps: int) -> None:
        for rep in range(reps):
            rec = self.convert_once(model, row.spec, rep)
            row.convs.append(rec)
            if "error" in rec:
                row.error = rec["error"]
                return
        row.wall_s = statistics.median(r["wall_s"] for r in row.convs)
        inner = [r["worker"]["inner_s"] for r in row.convs if "inner_s" in r.get("worker", {})]
        row.inner_s = statistics.median(inner) if inner else None
        row.peak_rss = max(r["peak_rss"] for r in row.convs)
        row.output = row.convs[-1]["output"]
        row.out_bytes = row.convs[-1]["out_bytes"]

    # ---- one session ---------------------------------------------------------------------
    def session(self, model: str, row: Row, onnx_path: str, rnd: int = 0) -> None:
        d = self.runs / model / row.spec.key
        d.mkdir(parents=True, exist_ok=True)
        inputs = model_path(self.out, row.spec.src).parent / "inputs.npz"
        emb, result = d / f"emb-{rnd}.npy", d / f"ort-{rnd}.json"
        for p in (emb, result):
            p.unlink(missing_ok=True)
        runs = self.a.runs or (10 if model == "large" else 20)
        cmd = [sys.executable, "-m", "benchmarks.worker", "ort", onnx_path, str(inputs), "--emb", str(emb),
               "--runs", str(runs), "--warmup", str(self.a.warmup), "--result", str(result)]
        env = dict(self.env, **(row.spec.session_env or {}))
        m = run_measured(cmd, d / f"log-ort-{rnd}.txt", env=env, cwd=REPO, timeout_s=self.a.tool_timeout, mem_cap=self.mem_cap)
        if not m.ok or not result.exists():
            row.ort_error = m.error_line()
            return
        ort = m.to_dict()
        ort.update(json.loads(result.read_text()))
        ort["emb"] = str(emb)
        if row.ort is None:
            row.ort = dict(ort, rounds=[])
        row.ort["rounds"].append({k: ort[k] for k in ("peak_rss", "p50_s", "load_s", "wall_s")})
        if len(row.ort["rounds"]) > 1:  # the row's figures: medians over the rounds
            row.ort["p50_s"] = statistics.median(r["p50_s"] for r in row.ort["rounds"])
            row.ort["peak_rss"] = statistics.median(r["peak_rss"] for r in row.ort["rounds"])

    def paired_latency(self, model: str, row: Row, ref: Row) -> None:
        d = self.runs / model / row.spec.key
        result = d / "paired.json"
        result.unlink(missing_ok=True)
        inputs = model_path(self.out, row.spec.src).parent / "inputs.npz"
        cmd = [sys.executable, "-m", "benchmarks.worker", "paired", ref.output, row.output, str(inputs),
               "--result", str(result)]
        env = dict(self.env, **(row.spec.session_env or {}))
        m = run_measured(cmd, d / "log-paired.txt", env=env, cwd=REPO, timeout_s=self.a.tool_timeout, mem_cap=self.mem_cap)
        if m.ok and result.exists():
            row.paired = json.loads(result.read_text())
        else:
            self.log(f"{model}: paired latency of {row.spec.label} failed: {m.error_line()}")

    def fidelity(self, row: Row, ref: Row) -> None:
        import numpy as np

        if not (row.ort and ref.ort):
            return
        a = np.load(row.ort["emb"]).astype(np.float64)
        b = np.load(ref.ort["emb"]).astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        row.cos, row.cos_min = float(np.mean(cos)), float(np.min(cos))

    # ---- one model -----------------------------------------------------------------------
    def bench_model(self, model: str, tools: list[str]) -> list[Row]:
        rows = [Row(s) for s in rows_for(model, tools)]
        for r in rows:
            if self.impl.get(r.spec.tool) == "standin":
                r.spec.label += " [stand-in]"
        # the speed targets are ratios of single conversions on a noisy machine: medians of 3 for
        # the two sides of them on the big models (ours, and the naive loop on BCE), 1 elsewhere
        def reps_for(row: Row) -> int:
            if self.a.repeat:
                return self.a.repeat
            if model == "minilm" or row.spec.tool == "core" or (model == "bce" and row.spec.tool == "naive"):
                return 3
            return 1

        for folder in {r.spec.src for r in rows}:
            warm_cache(model_path(self.out, folder).parent)
        for row in rows:
            if row.spec.tool is None:
                row.out_bytes = model_bytes(model_path(self.out, row.spec.src))
                row.output = str(model_path(self.out, row.spec.src))
                continue
            reps = reps_for(row)
            self.log(f"{model}: converting with {row.spec.label} ({reps}x)")
            try:
                self.convert_row(model, row, reps)
            except Exception as e:  # a tool's failure goes in its row
                row.error = f"{type(e).__name__}: {e}" if not str(e).startswith("skipped") else str(e)
            if row.error:
                self.log(f"{model}: {row.spec.label}: {row.error}")
            else:
                self.log(f"{model}: {row.spec.label}: {row.wall_s:.2f} s, {row.peak_rss / MB:.0f} MB peak")
        if not self.a.no_runtime:
            by_key = {r.spec.key: r for r in rows}
            for row in rows:
                if row.output and not row.error:
                    self.log(f"{model}: ORT CPU session on {row.spec.label}")
                    self.session(model, row, row.output)
                    self.fidelity(row, by_key[row.spec.ref])
                    if row.ort_error:
                        self.log(f"{model}: {row.spec.label}: session failed: {row.ort_error}")
            # latency targets: ours against its FP32 reference, interleaved in one process
            for row in rows:
                ref = by_key[row.spec.ref]
                if row.spec.key in PAIRED and row is not ref and row.ort and ref.ort:
                    self.log(f"{model}: paired latency of {row.spec.label} against {ref.spec.label}")
                    self.paired_latency(model, row, ref)
            # the runtime targets compare ours with FP32 within 5%: more rounds, alternating, for those rows
            paired = [by_key[k] for k in PAIRED if k in by_key and by_key[k].ort]
            rounds = self.a.rounds if self.a.rounds is not None else (3 if model == "bce" else 1)
            for rnd in range(1, rounds):
                for row in paired:
                    self.log(f"{model}: ORT CPU session on {row.spec.label} (round {rnd + 1}/{rounds})")
                    self.session(model, row, row.output, rnd)
        if not self.a.keep_outputs:  # outputs are large; the figures are kept
            for row in rows:
                if row.spec.tool:
                    for p in (self.runs / model / row.spec.key).glob("**/*"):
                        if p.is_file() and (p.suffix in (".onnx", ".data") or p.name.endswith(".onnx.data")):
                            p.unlink()
        return rows


# ---- tables and targets ------------------------------------------------------------------
def _f(v, fmt, none="-"):
    return none if v is None else format(v, fmt)


def table(model: str, rows: list[Row]) -> str:
    naive = next((r for r in rows if r.spec.key == "naive" and not r.error), None)
    head = ["tool", "conv wall s", "in-proc s", "conv peak RSS MB", "output MB", "cos mean (min)", "ORT RSS MB",
            "p50 ms", "vs naive: time / mem"]
    lines = []
    for r in rows:
        if r.spec.tool is None:
            conv = ["-", "-", "-"]
        elif r.error:
            lines.append([r.spec.label, "ERROR: " + r.error])
            continue
        else:
            conv = [_f(r.wall_s, ".2f"), _f(r.inner_s, ".2f"), _f(r.peak_rss and r.peak_rss / MB, ".0f")]
        if r.ort_error:
            rt = ["session failed: " + r.ort_error]
        elif r.ort:
            cos = "1 (ref)" if r.spec.tool is None else f"{r.cos:.6f} ({r.cos_min:.6f})" if r.cos is not None else "-"
            rt = [cos, _f(r.ort_rss / MB, ".0f"), _f(r.p50_ms, ".1f")]
        else:
            rt = ["-", "-", "-"]
        if naive and r.spec.tool and r.spec.key != "naive" and r.wall_s:
            ratio = f"{r.wall_s / naive.wall_s:.2f}x / {r.peak_rss / naive.peak_rss:.2f}x"
        else:
            ratio = "1 / 1" if r.spec.key == "naive" else "-"
        if len(rt) == 1:
            lines.append([r.spec.label, *conv, _f(r.out_bytes and r.out_bytes / MB, ".0f"), rt[0]])
        else:
            lines.append([r.spec.label, *conv, _f(r.out_bytes and r.out_bytes / MB, ".0f"), *rt, ratio])
    widths = [max([len(head[i])] + [len(l[i]) for l in lines if len(l) == len(head)]) for i in range(len(head))]

    def fmt(cells):
        if len(cells) < len(head):  # an error spans the rest of the line
            fixed = [cells[i].ljust(widths[i]) for i in range(len(cells) - 1)]
            return "| " + " | ".join(fixed + [cells[-1]])
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([f"## {model}", fmt(head), sep] + [fmt(l) for l in lines])


@dataclass
class Target:
    model: str
    text: str
    value: float | None
    limit: float
    op: str  # "<=", ">=", "<"
    detail: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "N/A"
        ok = {"<=": self.value <= self.limit, ">=": self.value >= self.limit, "<": self.value < self.limit}[self.op]
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        v = "-" if self.value is None else f"{self.value:.6f}" if "cosine" in self.text else f"{self.value:.3f}"
        return f"  [{self.status:4}] {self.model}: {self.text}: {v} (target {self.op} {self.limit:g}){' ' + self.detail if self.detail else ''}"

    def to_dict(self):
        return {**self.__dict__, "status": self.status}


def _ok(r):
    return r is not None and not r.error and r.wall_s is not None


def _div(a, b):
    return None if a is None or b in (None, 0) else a / b


def targets(results: dict[str, list[Row]]) -> list[Target]:
    ts = []
    get = {m: {r.spec.key: r for r in rows} for m, rows in results.items()}
    if "bce" in get:
        g = get["bce"]
        core, naive, fp32 = g.get("core"), g.get("naive"), g.get("fp32")
        cn = _ok(core) and _ok(naive)
        ts.append(Target("bce", "naive wall / ours wall", _div(naive.wall_s, core.wall_s) if cn else None, 6, ">="))
        ts.append(Target("bce", "ours peak RSS / naive peak RSS", _div(core.peak_rss, naive.peak_rss) if cn else None, 0.45, "<="))
        ts.append(Target("bce", "ours output size / FP32 size", _div(core.out_bytes, fp32.out_bytes) if _ok(core) else None, 0.501, "<="))
        rt = core is not None and core.ort and fp32.ort
        ts.append(Target("bce", "single file: BF16 session peak RSS / FP32's", _div(core.ort_rss, fp32.ort_rss) if rt else None, 0.55, "<="))
        ts.append(Target("bce", "single file: BF16 p50 latency / FP32's (paired)", core.latency_ratio if rt else None, 1.05, "<="))
        ts.append(Target("bce", "single file: mean cosine of first-token embedding", core.cos if rt else None, 0.9999, ">="))
        ce, fe = g.get("core_ext"), g.get("fp32_ext")
        rte = ce is not None and ce.ort and fe is not None and fe.ort
        ts.append(Target("bce", "external data: BF16 session peak RSS / FP32's", _div(ce.ort_rss, fe.ort_rss) if rte else None, 1.0, "<="))
        ts.append(Target("bce", "external data: BF16 p50 latency / FP32's (paired)", ce.latency_ratio if rte else None,
                         1.05, "<=", "(no worse, within 5% timing noise)"))
        cx, fx = g.get("core_ext_mmap"), g.get("fp32_ext_mmap")
        rtx = cx is not None and cx.ort and fx is not None and fx.ort
        ts.append(Target("bce", "external data, fixed malloc mmap threshold (both): session peak RSS / FP32's",
                         _div(cx.ort_rss, fx.ort_rss) if rtx else None, 1.0, "<="))
        ts.append(Target("bce", "external data, fixed malloc mmap threshold (both): p50 latency / FP32's (paired)",
                         cx.latency_ratio if rtx else None, 1.05, "<="))
        cm = g.get("core_ext_fp32_matmul")
        rtm = cm is not None and cm.ort and fe is not None and fe.ort
        ts.append(Target("bce", "external data, MatMul/Gemm kept FP32: session peak RSS / FP32's",
                         _div(cm.ort_rss, fe.ort_rss) if rtm else None, 1.0, "<="))
        ts.append(Target("bce", "external data, MatMul/Gemm kept FP32: p50 latency / FP32's (paired)",
                         cm.latency_ratio if rtm else None, 1.05, "<="))
    if "large" in get:
        g = get["large"]
        core, naive, fp32 = g.get("core"), g.get("naive"), g.get("fp32")
        cn = _ok(core) and _ok(naive)
        ts.append(Target("large", "naive wall / ours wall", _div(naive.wall_s, core.wall_s) if cn else None, 6, ">="))
        ts.append(Target("large", "ours peak RSS / FP32 model size", _div(core.peak_rss, fp32.out_bytes) if _ok(core) else None, 0.5, "<"))
        b = get.get("bce", {}).get("core")
        if _ok(core) and _ok(b):
            per_large = core.wall_s / (fp32.out_bytes / GB)
            per_bce = b.wall_s / (get["bce"]["fp32"].out_bytes / GB)
            ts.append(Target("large", "ours s/GB on 2.2 GB / s/GB on 1.1 GB", per_large / per_bce, 1.0, "<=",
                             f"({per_large:.2f} vs {per_bce:.2f} s/GB)"))
        else:
            ts.append(Target("large", "ours s/GB on 2.2 GB / s/GB on 1.1 GB", None, 1.0, "<=", "(needs --models bce,large)"))
    return ts


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "?")
        info["mem_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    for mod in ("onnx", "onnxruntime", "numpy", "olive", "torch", "ml_dtypes"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="Benchmark FP32 -> BF16 converters on three models.")
    ap.add_argument("--models", default="minilm,bce,large", help="comma list of minilm,bce,large (default: all)")
    ap.add_argument("--tools", default=None, help=f"comma list of {DEFAULT_TOOLS} (default: all; Quark only when installed)")
    ap.add_argument("--repeat", type=int, default=0, help="conversions per tool (default: 3 for minilm, for our rows and for the naive loop on bce; 1 otherwise; median time, max RSS)")
    ap.add_argument("--runs", type=int, default=0, help="timed ORT runs per session (median = p50; default 20, 10 for the large model)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="sessions per row for the FP32 and olive-bf16 (core) rows, alternating; median of their p50 "
                         "and RSS (default 3 for bce, whose runtime targets are within 5%%; 1 elsewhere)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed ORT runs before those (default 3)")
    ap.add_argument("--json", help="write every figure to this JSON file")
    ap.add_argument("--out", default=str(REPO / "bench-out"), help="cache and work folder (default: bench-out/, gitignored)")
    ap.add_argument("--no-runtime", action="store_true", help="skip the ORT session columns")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the converted models in bench-out/runs")
    ap.add_argument("--impl", choices=["auto", "real", "standin"], default="auto",
                    help="our converter: the real package, the benchmark's stand-in, or auto (real when it exists)")
    ap.add_argument("--quark-python", help="a Python interpreter with amd-quark installed (default: this one, if it has quark)")
    ap.add_argument("--mem-cap-gb", type=float, default=0, help="kill a tool whose RSS passes this (default: 80%% of available memory, at most 20)")
    ap.add_argument("--tool-timeout", type=float, default=600, help="kill a tool or session running longer (s, default 600)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the models even when cached")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--shapes", default="tiny100k,constant,if_branch,float_data,small98mb",
                    help="cases of benchmarks/shapes.py to run after the models, against onnx.load + onnx.save "
                         "(default: all; '' for none)")
    ap.add_argument("--floor", default="bce",
                    help="models (of --models) whose single file is also converted against cp + sync and onnx.load + "
                         "onnx.save + sync, alternating (benchmarks/floor.py; default bce; '' for none)")
    ap.add_argument("--floor-pairs", type=int, default=5, help="alternating rounds of that comparison (default 5)")
    a = ap.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    a.floor = [m for m in a.floor.split(",") if m and m in a.models]
    a.tools_default = a.tools is None
    a.tools = [t for t in (a.tools or DEFAULT_TOOLS).split(",") if t]
    for m in a.models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for t in a.tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {DEFAULT_TOOLS}")
    for case in filter(None, a.shapes.split(",")):
        if case not in shapes.CASES:
            ap.error(f"unknown shapes case {case!r}; choose from {', '.join(shapes.CASES)}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    bench = Bench(a)
    build_s = ensure_built(a.models, bench.out, force=a.rebuild, log=bench.log)
    tools = a.tools
    if a.tools_default and not bench.quark_python:  # Quark is optional: its rows need amd-quark
        tools = [t for t in tools if not t.startswith("quark")]
        bench.log("amd-quark not found: no Quark rows (see benchmarks/README.md, extra 'quark')")
    t_bench = time.perf_counter()
    bench.log(f"our converter: core={bench.impl['core']}, pass={bench.impl['pass']}; memory cap {bench.mem_cap / 2**30:.1f} GiB")
    results: dict[str, list[Row]] = {}
    for model in a.models:
        results[model] = bench.bench_model(model, tools)
        print(table(model, results[model]), flush=True)
        print(flush=True)
    if a.shapes:
        bench.log(f"shapes: {a.shapes}")
        print("## shapes (benchmarks/shapes.py: against onnx.load + onnx.save, medians of 3 runs)")
        print(shapes.render([row for case in a.shapes.split(",") if case
                             for row in shapes.bench_case(case, Path(a.out) / "shapes", runs=3)]), flush=True)
        print(flush=True)
    floors = {}
    if a.floor:
        print(f"## floor (benchmarks/floor.py: each command + sync of its output, {a.floor_pairs} alternating rounds; "
              "ratios are medians of the per-round ratios)")
        rows = []
        for model in a.floor:
            bench.log(f"floor: {model}")
            src = model_path(bench.out, model)
            floors[model] = floor.measure(src, bench.out / "runs" / "floor", a.floor_pairs, log=bench.log)
            rows += floor.table_rows(model, src, floors[model])
        print(floor.render(rows), flush=True)
        print(flush=True)
    ts = targets(results)
    for model, figures in floors.items():  # issue 16: a conversion at the cost of a copy
        ts.append(Target(model, "ours (convert + sync) / cp + sync, paired median", floor.ratio(figures, floor.OURS, floor.CP),
                         1.0, "<=", f"({a.floor_pairs} rounds, portable path)"))
    print("## targets")
    for t in ts:
        print(t.line())
    took = time.perf_counter() - t_bench
    notes = []
    if "standin" in bench.impl.values():
        notes.append("rows marked [stand-in] ran the benchmark's stand-in converter (benchmarks/standin.py), not olive_bf16_pass")
    print(f"\nbenchmark {took:.0f} s" + (f", model build {sum(build_s.values()):.0f} s" if build_s else " (models from cache)"))
    for n in notes:
        print("note: " + n)
    if a.json:
        doc = {
            "date": _dt.datetime.now().isoformat(timespec="seconds"), "args": {k: v for k, v in vars(a).items()},
            "machine": machine_info(), "impl": bench.impl, "quark_python": bench.quark_python,
            "mem_cap": bench.mem_cap, "build_s": build_s, "bench_s": took,
            "models": {m: [r.to_dict() for r in rows] for m, rows in results.items()},
            "targets": [t.to_dict() for t in ts],
            "floor": {m: floor.to_dict(f) for m, f in floors.items()},
        }
        Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"results written to {a.json}")
    return 1 if a.strict and any(t.status == "FAIL" for t in ts) else 0


if __name__ == "__main__":
    sys.exit(main())
