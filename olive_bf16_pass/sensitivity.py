"""Which nodes lose fidelity in BF16 compute: one switchable emulation, one session, many cheap runs.

The model is emulated once with a boolean switch per node (emulation.py, ``switches=True``): a
switch on rounds to BF16 the weights and graph inputs that node reads and the results it writes,
off leaves them FP32 (all off is the FP32 model). Each node owns the precision of its results and
its weights, exactly as in the emulation with nodes kept FP32 (bit for bit: tests/test_sensitivity.py). Ops
that only move values (Reshape, Transpose, ...) hand on what they read, and have a switch only where
they read a weight, a graph input or a Constant (a Gather of an embedding table: the table's precision
is the Gather's). So every configuration is one more run of the same session,
never a new model, and the corpus goes through in a few batches. Against the FP32 model's
outputs on the same batches, per configuration: mean and minimum cosine of the pooled outputs.

Runs (each a pass over the corpus batches, one ``session.run`` per batch): 1 FP32 reference, all
switches off (FP32 again, through the switched model: a check), all on (emulated BF16 compute), then per node (K of them) "only
this node in BF16" (the loss) and "all but this node in BF16" (the regain), and the same two per
op type (T) and per layer (L): 3 + 2K + 2T + 2L passes. The target search needs only the regain
ranking (K passes) plus a few more (precision_search.py).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olive_bf16_pass.errors import ConversionError, one_line

__all__ = ["Feeds", "Fidelity", "Switched", "layer_of", "npz_feeds", "rank", "table", "text_feeds"]

_LAYER = re.compile(r"(?:layers?|blocks?|h)[._/](\d+)(?![\d])")


@dataclass
class Feeds:
    """The corpus as model feeds, in batches, with each batch's attention mask (for mean pooling)."""

    batches: list[dict[str, np.ndarray]]
    masks: list[np.ndarray | None]

    @property
    def rows(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches)


def text_feeds(model_path, tokenizer: str, corpus: str | None = None, limit: int = 64, batch_size: int = 32,
               max_length: int = 128) -> Feeds:
    """The corpus (the shipped one by default) tokenized for the model; texts sorted by length so that
    each batch pads little."""
    from olive_bf16_pass.evaluation.corpus import load_corpus
    from olive_bf16_pass.evaluation.inputs import Io, encode, load_tokenizer

    tok = load_tokenizer(tokenizer)
    texts = load_corpus(corpus, limit=limit)
    texts = sorted(texts, key=lambda t: len(tok(t)["input_ids"]))
    io = Io(_input_session(model_path, 0))  # its inputs' names and types: what the tokenizer's output must feed
    batches = [encode(tok, texts[a:a + batch_size], None, io, max_length) for a in range(0, len(texts), batch_size)]
    return Feeds(batches, [b.get("attention_mask") for b in batches])


def npz_feeds(path, batch_size: int = 32) -> Feeds:
    """Feeds from an .npz of arrays named as the model's inputs (first dimension: rows)."""
    data = dict(np.load(path))
    n = len(next(iter(data.values())))
    batches = [{k: v[a:a + batch_size] for k, v in data.items()} for a in range(0, n, batch_size)]
    return Feeds(batches, [b.get("attention_mask") for b in batches])


class Fidelity:
    """Cosine of each row's pooled output against the FP32 model's: (mean, min)."""

    def __init__(self, reference: list[np.ndarray], feeds: Feeds, pooling: str = "mean"):
        self.feeds, self.pooling = feeds, pooling
        self.reference = self._pool(reference)

    def _pool(self, outputs: list[np.ndarray]) -> np.ndarray:
        from olive_bf16_pass.evaluation.agreement import pool

        rows = []
        for out, mask in zip(outputs, self.feeds.masks):
            out = np.asarray(out, np.float64)
            if out.ndim == 3 and self.pooling != "none":
                out = pool(out, mask, self.pooling)
            rows.append(out.reshape(len(out), -1))
        return np.concatenate(rows)

    def cosines(self, outputs: list[np.ndarray]) -> np.ndarray:
        a, b = self.reference, self._pool(outputs)
        cos = (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30, None)
        return np.where(np.isfinite(cos), cos, -1.0)  # a NaN row counts as the worst

    def __call__(self, outputs: list[np.ndarray]) -> tuple[float, float]:
        cos = self.cosines(outputs)
        return float(cos.mean()), float(cos.min())


def run_all(session, feeds: Feeds, output: str | None, extra: dict | None = None) -> list[np.ndarray]:
    name = output or session.get_outputs()[0].name
    return [session.run([name], {**b, **(extra or {})})[0] for b in feeds.batches]


def session_for(path, threads: int = 0, exact: bool = False):
    """A CPU session; ``exact``: no graph optimizations and no prepacked weights, where the switched model and the
    emulation with the same nodes kept compute bit for bit alike (otherwise kept FP32 chains get fused kernels, and
    a MatMul whose weight is a constant, as in the emulation, a prepacked GEMM, which the switched model's weight,
    computed by its switch, never gets: they differ in the last bits)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _input_session(src, threads: int):
    """The input model's CPU session, or a one-line refusal when ONNX Runtime will not load it (two nodes of one
    name, an op it lacks): nothing can be measured on a model that does not run."""
    import onnxruntime as ort

    try:
        return session_for(src, threads)
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.InvalidArgument, ort.capi.onnxruntime_pybind11_state.NotImplemented,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf) as exc:
        raise ConversionError(
            f"{src}: ONNX Runtime (CPU) cannot load the input model ({one_line(exc)}), so its BF16 sensitivity "
            "cannot be measured. Fix the model so that it runs, then measure it."
        ) from exc


def layer_of(node) -> str | None:
    """The layer a node belongs to, where its name (or the exporter's name scopes) shows one: 'layer.3'."""
    texts = [node.name] + [p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"]
    for text in texts:
        found = _LAYER.findall(text)
        if found:
            return f"layer.{found[-1] if text is node.name else found[0]}"
    return None


class Switched:
    """The model emulated once with a switch per node, one session; ``fidelity(on)`` is one corpus pass."""

    def __init__(self, src, feeds: Feeds, pooling: str = "mean", output: str | None = None,
                 workdir: str | None = None, threads: int = 0):
        from olive_bf16_pass.emulation import emulate_file
        from olive_bf16_pass.io.source import read_model

        self.feeds, self.output = feeds, output
        self.runs = 0  # session.run calls
        self.passes = 0  # corpus passes (configurations measured)
        started = time.perf_counter()
        self.reference, self.pooling = _input_session(src, threads), pooling  # first: the input must load at all
        self._tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="bf16-switched-")
        path = Path(self._tmp.name) / "switched.onnx"
        report = emulate_file(src, path, switches=True)
        self.switch_names = [s for s, _ in report.rounding.switches]
        self.nodes = [n for _, n in report.rounding.switches]
        self.ops = list(report.rounding.switch_ops)
        graph_nodes = read_model(src).model.graph.node  # a skeleton: weights stay on disk
        byname = {n.name: n for n in graph_nodes}
        self.graph_order = [n.name for n in graph_nodes if n.op_type not in ("Loop", "If", "Scan")]
        self.layers = [layer_of(byname[n]) if n in byname else None for n in self.nodes]
        self.session = session_for(path, threads, exact=True)
        self.fidelity = Fidelity(run_all(self.reference, feeds, output), feeds, pooling)
        self.runs += len(feeds.batches)
        self.passes += 1
        self.setup_seconds = time.perf_counter() - started

    def subset(self, rows: int) -> Switched:
        """The same session on the first ``rows`` rows of the corpus (a cheaper pass); counts runs into this one."""
        view = object.__new__(Switched)
        view.__dict__.update(self.__dict__)
        batches, left = [], rows
        for b in self.feeds.batches:
            if left <= 0:
                break
            batches.append({k: v[:left] for k, v in b.items()})
            left -= len(next(iter(b.values())))
        view.feeds = Feeds(batches, [b.get("attention_mask") for b in batches])
        view.fidelity = Fidelity(run_all(self.reference, view.feeds, self.output), view.feeds, self.pooling)
        view._parent = self
        return view

    def keep_always(self, nodes) -> None:
        """Nodes kept FP32 in every configuration from now on (a user's node_block_list): their switches stay off."""
        self.always_kept = [n for n in self.nodes if n in set(nodes)]

    def outputs(self, on: np.ndarray) -> list[np.ndarray]:
        kept = set(getattr(self, "always_kept", ()))
        switches = {name: np.array(bool(v) and node not in kept)
                    for name, node, v in zip(self.switch_names, self.nodes, on)}
        counter = getattr(self, "_parent", self)
        counter.runs += len(self.feeds.batches)
        counter.passes += 1
        return run_all(self.session, self.feeds, self.output, switches)

    def measure(self, on: np.ndarray) -> tuple[float, float]:
        return self.fidelity(self.outputs(on))

    def close(self) -> None:
        self.session = self.reference = None
        self._tmp.cleanup()


@dataclass
class Ranking:
    """Fidelity figures of the whole model and, per node / op type / layer, the loss and the regain."""

    all_fp32: tuple[float, float]  # all switches off: FP32 (1.0 up to the kernels' order)
    emulated: tuple[float, float]
    nodes: list[dict] = field(default_factory=list)
    op_types: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    runs: int = 0
    passes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"all_fp32": dict(zip(("cosine_mean", "cosine_min"), self.all_fp32)),
                "emulated": dict(zip(("cosine_mean", "cosine_min"), self.emulated)),
                "nodes": self.nodes, "op_types": self.op_types, "layers": self.layers,
                "onnxruntime_runs": self.runs, "corpus_passes": self.passes, "seconds": self.seconds}


def _groups(switched: Switched, by: str) -> dict[str, np.ndarray]:
    keys = switched.ops if by == "op_type" else switched.layers
    found: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            found.setdefault(key, []).append(i)
    return {k: np.array(v) for k, v in found.items()}


def _measure_groups(switched: Switched, groups: dict[str, np.ndarray], base: tuple, full: tuple,
                    loss: bool = True) -> list[dict]:
    k = len(switched.nodes)
    rows = []
    for name, members in groups.items():
        row = {"name": name, "size": len(members)}
        if loss:
            only = np.zeros(k, bool)
            only[members] = True
            mean, low = switched.measure(only)
            row.update(loss_mean=base[0] - mean, loss_min=base[1] - low, only_bf16=[mean, low])
        but = np.ones(k, bool)
        but[members] = False
        mean, low = switched.measure(but)
        row.update(regain_mean=mean - full[0], regain_min=low - full[1], all_but=[mean, low])
        rows.append(row)
    return rows


def rank(switched: Switched, loss: bool = True, groups: bool = True) -> Ranking:
    """The rankings (see the module docstring for the runs they take); sorted by loss (regain without it)."""
    started = time.perf_counter()
    k = len(switched.nodes)
    base, full = switched.measure(np.zeros(k, bool)), switched.measure(np.ones(k, bool))
    singles = {switched.nodes[i]: np.array([i]) for i in range(k)}
    nodes = _measure_groups(switched, singles, base, full, loss)
    for row, op, layer in zip(nodes, switched.ops, switched.layers):
        row.update(op_type=op, layer=layer)
    key = (lambda r: (-r["loss_mean"], -r["regain_mean"])) if loss else (lambda r: -r["regain_mean"])
    ranking = Ranking(base, full, sorted(nodes, key=key))
    if groups:
        ranking.op_types = sorted(_measure_groups(switched, _groups(switched, "op_type"), base, full, loss), key=key)
        ranking.layers = sorted(_measure_groups(switched, _groups(switched, "layer"), base, full, loss), key=key)
    counter = getattr(switched, "_parent", switched)
    ranking.runs, ranking.passes = counter.runs, counter.passes
    ranking.seconds = time.perf_counter() - started + switched.setup_seconds
    return ranking


def table(ranking: Ranking, top: int = 10) -> str:
    """The rankings for people: loss = drop in cosine when only it computes in BF16 (from FP32), regain = rise
    when only it stays FP32, weights included (from emulated BF16 compute)."""
    def fmt(rows, what):
        lines = [f"{what:<40} {'op':<20} {'loss mean':>10} {'loss min':>10} {'regain mean':>12} {'regain min':>11}"]
        for r in rows[:top]:
            lines.append(f"{r['name'][:40]:<40} {str(r.get('op_type', r.get('size', '')))[:20]:<20} "
                         f"{r.get('loss_mean', float('nan')):>10.2e} {r.get('loss_min', float('nan')):>10.2e} "
                         f"{r['regain_mean']:>12.2e} {r['regain_min']:>11.2e}")
        return "\n".join(lines)

    e = ranking.emulated
    parts = [f"against FP32: emulated BF16 compute cosine mean {e[0]:.6f} min {e[1]:.6f}",
             "loss: cosine lost when only the node computes in BF16; regain: cosine regained when only it stays FP32",
             f"{ranking.passes} corpus passes, {ranking.runs} ONNX Runtime runs, {ranking.seconds:.1f} s",
             "", fmt(ranking.nodes, f"node (top {top} of {len(ranking.nodes)})")]
    if ranking.op_types:
        parts += ["", fmt(ranking.op_types, "op type")]
    if ranking.layers:
        parts += ["", fmt(ranking.layers, "layer")]
    return "\n".join(parts)
