"""A small set of nodes to keep in FP32 so that emulated BF16 compute meets a fidelity target on a corpus.

The search, on one switchable session (sensitivity.py). The default strategy, ``segments``, is the
segment bisection of onnxconverter-common's ``auto_convert_mixed_precision`` run on that session:
try the largest undecided run of nodes (all nodes, in graph order, as it lists them) in BF16
together with every run found good; good runs stay BF16, a failing run splits in two, a failing single node stays FP32. Each try
is one corpus pass of the same session, not a new model and session as there. Then each kept node
is dropped again where the target still holds (one pass each, for lists of at most
``prune_limit``), and step 5 below.
The ``ranked`` strategy:

1. all nodes in BF16 (emulated compute): if the target holds, nothing needs to stay FP32 (step 5 still runs);
2. all switches off (every node FP32, weights too: the FP32 model): if the target fails there,
   no node list can meet it, and the search says so;
3. the regain of each node (all others in BF16, that one FP32), on the first ``rank_rows`` rows
   of the corpus (a fraction of a full pass each), coarse to fine: first of each run of about
   sqrt(K) consecutive nodes (sqrt(K) passes), then of each node in the runs that regain most,
   until their regains add up to the gap to close (two runs at least, a third at most: at most
   K/3 more passes; nodes of the other runs follow, run by run);
4. the smallest prefix of that ranking that meets the target on the whole corpus, by bisection
   (about log2 K passes), and the same over the runs in order of their regain (keeping a chain of
   nodes regains what single nodes do not; the shorter prefix wins, about log2 K passes more), then, for a list of at most ``prune_limit`` nodes, each kept node
   dropped again where the target still holds (one pass each);
5. the final list verified once on the real emulation (``emulate_file`` with the list kept), with
   one new session; a miss adds 1, 2, 4 ... more nodes and verifies again. Both sessions run
   without graph optimizations and without prepacked weights (``session_for(exact=True)``), where
   the switched session computes bit for bit what that emulation computes (kept nodes' weights FP32
   included; tests/test_sensitivity.py), so a miss does not happen. A default session (prepacked
   GEMMs, fused FP32 chains) differs in the last bits, which matters only for a target within
   about 1e-7 of the verified figure.

Nodes a user keeps FP32 anyway (``Switched.keep_always``: the pass's ``node_block_list``) stay FP32 in every
configuration measured and in the verification, so the list found is the one to add to theirs.

What it guarantees (either strategy): a list it returns meets the target (mean and minimum cosine against FP32) on
this corpus in the emulated model that ``olive-bf16 emulate --keep-nodes-from`` writes. What it does
not: that the list is the smallest (segments are runs in graph order; the ranking is one node at a
time; both bisections assume that keeping more nodes never hurts), that the target holds on other inputs, or on an NPU, whose own
kernels the emulation does not model.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olive_bf16_pass.errors import ConversionError, one_line
from olive_bf16_pass.sensitivity import Switched, run_all, session_for

__all__ = ["SearchResult", "Target", "find_for_target", "search"]

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    target_mean: float
    target_min: float
    nodes: list[str] = field(default_factory=list)  # the nodes to keep in FP32
    met: bool = False
    emulated: tuple[float, float] = (0.0, 0.0)  # all nodes in BF16 (but Switched.keep_always's)
    all_fp32: tuple[float, float] = (0.0, 0.0)  # every node FP32 (weights too): the FP32 model
    verified: tuple[float, float] = (0.0, 0.0)  # the final list, on the real emulation
    passes: int = 0
    runs: int = 0
    seconds: float = 0.0
    candidates: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def summary(self) -> str:
        head = (f"target cosine mean >= {self.target_mean} and min >= {self.target_min}: "
                + (f"met with {len(self.nodes)} of {self.candidates} nodes kept in FP32" if self.met else "NOT met"))
        return (f"{head} (verified mean {self.verified[0]:.6f} min {self.verified[1]:.6f}; all BF16 "
                f"{self.emulated[0]:.6f}/{self.emulated[1]:.6f}); {self.passes} corpus passes, {self.runs} ONNX Runtime runs, "
                f"{self.seconds:.1f} s" + (f". {self.note}" if self.note else ""))


@dataclass(frozen=True)
class Target:
    """A fidelity target and the corpus it is measured on, with ``olive-bf16 sensitivity``'s defaults."""

    cosine: float  # mean cosine against FP32
    min_cosine: float | None = None  # minimum cosine (default: ``cosine``)
    tokenizer: str | None = None  # a folder, a Hugging Face name or module:function (default: the model's folder)
    corpus: str | None = None  # sentences (default: the shipped corpus)
    pooling: str = "mean"  # of token outputs: mean, cls, none
    limit: int = 32  # sentences
    max_length: int = 64  # tokens a sentence
    batch_size: int = 32
    strategy: str = "segments"


def find_for_target(src, target: Target, also_kept: Sequence[str] = ()) -> SearchResult:
    """The nodes to keep FP32 so that emulated BF16 compute of the model at ``src`` meets ``target`` on the corpus,
    as ``olive-bf16 sensitivity --target-cosine`` finds them (see the module docstring). ``also_kept``: nodes kept
    FP32 anyway (a user's node_block_list): FP32 in every configuration the search measures and in its verification,
    and left out of the nodes it returns. Raises ConversionError, one line, when the target cannot be met or its
    corpus cannot be read."""
    from olive_bf16_pass import sensitivity as sens
    from olive_bf16_pass.evaluation.errors import EvaluationError

    try:
        feeds = sens.text_feeds(src, target.tokenizer or str(Path(src).resolve().parent), target.corpus,
                                target.limit, target.batch_size, target.max_length)
    except EvaluationError as exc:
        raise ConversionError(f"the fidelity target's corpus: {one_line(exc)}") from exc
    switched = Switched(src, feeds, target.pooling)
    try:
        switched.keep_always(also_kept)
        result = search(src, switched, target.cosine, target.min_cosine, strategy=target.strategy)
    finally:
        switched.close()
    result.nodes = [n for n in result.nodes if n not in set(also_kept)]  # the nodes found, beyond those
    if not result.met:
        raise ConversionError(one_line(f"the fidelity target cannot be met on emulated BF16 compute: {result.summary()}"))
    return result


def search(src, switched: Switched, target_mean: float, target_min: float | None = None, rank_rows: int = 16,
           prune: bool = True, max_fixes: int = 8, prune_limit: int = 48, strategy: str = "segments") -> SearchResult:
    """Find the nodes to keep in FP32 (see the module docstring); ``switched`` holds the corpus."""
    _refuse_unnameable(switched.nodes)
    started, passes, runs = time.perf_counter(), switched.passes, switched.runs
    target_min = target_mean if target_min is None else target_min
    result = SearchResult(target_mean, target_min, candidates=len(switched.nodes))
    k = len(switched.nodes)

    def meets(figures):
        return figures[0] >= target_mean and figures[1] >= target_min

    def config(kept):
        on = np.ones(k, bool)
        on[list(kept)] = False
        return on

    result.emulated = switched.measure(np.ones(k, bool))
    result.verified = result.emulated
    if meets(result.emulated):  # nothing to keep: verified all the same
        return _verified(src, switched, result, [], list(reversed(range(k))), max_fixes, started, passes, runs)
    result.all_fp32 = switched.measure(np.zeros(k, bool))
    if not meets(result.all_fp32):
        result.note = ("every node in FP32 misses the target already: no node list can meet it (is the target above "
                       "1, or the model not deterministic?)")
        return _done(result, switched, started, passes, runs)
    if strategy == "segments":
        kept = _segments(switched, config, meets)
        if prune and len(kept) <= prune_limit:  # one pass each, the farthest from the output first
            for i in list(kept):
                trial = [j for j in kept if j != i]
                if trial and meets(switched.measure(config(trial))):
                    kept = trial
        rest = [i for i in reversed(range(k)) if i not in kept]  # nearest the output first
        return _verified(src, switched, result, kept, rest, max_fixes, started, passes, runs)
    probe = switched.subset(rank_rows) if rank_rows and rank_rows < switched.feeds.rows else switched
    orders, regain = _ranked(probe, config, target_mean - result.emulated[0])
    logger.info("ranked %d nodes: %d passes, %.1f s", k, switched.passes - passes, time.perf_counter() - started)
    kept = None
    for order in orders:  # by node, then by run: the shorter prefix wins
        lo, hi = 1, k if kept is None else len(kept) - 1  # the prefix of length hi meets (all off does)
        if kept is not None and not (hi >= 1 and meets(switched.measure(config(order[:hi])))):
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if meets(switched.measure(config(order[:mid]))):
                hi = mid
            else:
                lo = mid + 1
        kept = order[:hi]
    logger.info("bisection: %d nodes; %d passes, %.1f s", len(kept), switched.passes - passes,
                time.perf_counter() - started)
    if prune and len(kept) <= prune_limit:  # one pass per node: worth it for short lists only
        for i in sorted(kept, key=lambda i: regain[i]):  # the least useful first
            trial = [j for j in kept if j != i]
            if trial and meets(switched.measure(config(trial))):
                kept = trial
    logger.info("pruned to %d nodes; %d passes, %.1f s", len(kept), switched.passes - passes,
                time.perf_counter() - started)
    rest = [i for i in order if i not in kept]
    return _verified(src, switched, result, kept, rest, max_fixes, started, passes, runs)


def _refuse_unnameable(nodes: Sequence[str]) -> None:
    """A node list names nodes: a node without a name, or with another's, is one no list can keep FP32 alone."""
    counts = Counter(nodes)
    unnamed = counts.pop("", 0)
    repeated = sorted(n for n, times in counts.items() if times > 1)
    if not unnamed and not repeated:
        return
    problem = (f"{unnamed} of the model's {len(nodes)} float nodes {'has' if unnamed == 1 else 'have'} no name" if unnamed
               else f"nodes share names ({', '.join(map(repr, repeated[:3]))})")
    raise ConversionError(
        f"the search for nodes to keep FP32 writes their names, and {problem}, so no node_block_list can name them. "
        "Give every node a unique name (exporters do; in Python: for i, n in enumerate(model.graph.node): "
        "n.name = n.name or f'node_{i}'), save the model and search again."
    )


def _segments(switched: Switched, config, meets) -> list[int]:
    """onnxconverter-common's segment bisection (auto_convert_mixed_precision), on the switched session: try
    the largest undecided run of nodes in BF16 with every run found good; good stays BF16, a failing run
    splits in two, a failing single node stays FP32. One corpus pass a try, no model rebuilt."""
    index = {name: i for i, name in enumerate(switched.nodes)}
    names = getattr(switched, "graph_order", None) or switched.nodes  # every node, as the peer lists them
    segments = [[0, len(names), None]]  # start, size, None / "good" / "bad", in graph order
    seen: dict[frozenset, bool] = {}
    while True:
        open_ = [s for s in segments if s[2] is None]
        if not open_:
            break
        seg = max(open_, key=lambda s: s[1])  # the first of the largest, as SegmentList.get_largest
        good = [index[names[i]] for s in segments if s[2] == "good" or s is seg
                for i in range(s[0], s[0] + s[1]) if names[i] in index]  # a node without a switch (most moves): nothing to try
        key = frozenset(good)
        if key not in seen:  # a run of switchless nodes alone tries what was tried already
            seen[key] = meets(switched.measure(~config(good)))
        if seen[key]:
            seg[2] = "good"
        elif seg[1] == 1:
            seg[2] = "bad"
        else:
            half = seg[1] // 2
            at = segments.index(seg)
            segments[at:at + 1] = [[seg[0], half, None], [seg[0] + half, seg[1] - half, None]]
    return [index[names[i]] for s in segments if s[2] != "good" for i in range(s[0], s[0] + s[1]) if names[i] in index]


def _verified(src, switched, result, kept, rest, max_fixes, started, passes, runs) -> SearchResult:
    """The list on the real emulation; a miss adds the next node of ``rest`` and verifies again."""
    def meets(figures):
        return figures[0] >= result.target_mean and figures[1] >= result.target_min

    step = 1
    for _ in range(max_fixes + 1):
        result.nodes = [switched.nodes[i] for i in kept]
        result.verified = verify(src, switched, result.nodes)
        if meets(result.verified):
            result.met = True
            break
        if not rest:
            break
        kept += rest[:step]  # 1, 2, 4, ... more nodes
        rest, step = rest[step:], step * 2
    if not result.met:
        result.note = "the verified emulation missed the target after the extra nodes allowed"
    return _done(result, switched, started, passes, runs)


def _ranked(probe: Switched, config, gap: float) -> tuple[list[list[int]], np.ndarray]:
    """Nodes by regain, coarse to fine: the regain of each run of about sqrt(K) consecutive nodes first, then of
    each node in the best runs, until their regains add up to the ``gap`` to close (two runs at least, a third of
    the runs at most). Also the order of whole runs (best run first, its nodes in graph order): errors that
    build up along a chain are regained by keeping the chain, which one node at a time does not see."""
    k = len(probe.nodes)
    full = probe.measure(np.ones(k, bool))[0]
    size = max(1, int(np.sqrt(k)))
    chunks = [list(range(a, min(a + size, k))) for a in range(0, k, size)]
    chunk_regain = [probe.measure(config(c))[0] - full for c in chunks] if len(chunks) > 1 else [1.0]
    regain = np.full(k, -np.inf)
    covered = 0.0
    for expanded, c in enumerate(np.argsort(chunk_regain, kind="stable")[::-1]):
        if expanded >= max(2, len(chunks) // 3) or (expanded >= 2 and covered >= gap):
            break
        for i in chunks[c]:
            regain[i] = probe.measure(config([i]))[0] - full if len(chunks[c]) > 1 else chunk_regain[c]
        covered += max(chunk_regain[c], 0.0)
    fine = sorted((i for i in range(k) if np.isfinite(regain[i])), key=lambda i: -regain[i])
    coarse = [i for c in np.argsort(chunk_regain, kind="stable")[::-1] for i in chunks[c] if not np.isfinite(regain[i])]
    for i in coarse:
        regain[i] = -1.0  # unranked: pruned first
    by_run = [i for c in np.argsort(chunk_regain, kind="stable")[::-1] for i in chunks[c]]
    return [fine + coarse, by_run], regain


def verify(src, switched: Switched, nodes: list[str]) -> tuple[float, float]:
    """The figures of the real emulation with ``nodes`` kept in FP32 (their weights too): one new session."""
    from olive_bf16_pass.emulation import EmulationOptions, emulate_file

    always = [n for n in getattr(switched, "always_kept", ()) if n not in nodes]  # Switched.keep_always
    with tempfile.TemporaryDirectory(prefix="bf16-verify-") as tmp:
        path = Path(tmp) / "emulated.onnx"
        emulate_file(src, path, EmulationOptions(keep_nodes=[*nodes, *always]))
        session = session_for(path, exact=True)  # as the switched session computes
        outputs = run_all(session, switched.feeds, switched.output)
        del session
    switched.runs += len(switched.feeds.batches)
    switched.passes += 1
    return switched.fidelity(outputs)


def _done(result: SearchResult, switched: Switched, started: float, passes: int, runs: int) -> SearchResult:
    result.passes, result.runs = switched.passes - passes, switched.runs - runs  # this search's own
    result.seconds = time.perf_counter() - started
    return result
