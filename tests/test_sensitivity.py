"""Sensitivity ranking and the fidelity-target search, on a tiny model whose one fragile node is known."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from olive_bf16_pass.cli import main
from olive_bf16_pass.emulation import read_node_list
from olive_bf16_pass.precision_search import search
from olive_bf16_pass.sensitivity import Feeds, Switched, layer_of, npz_feeds, rank, table
from tests.helpers import make_model, rand, tensor

H = 16


def fragile() -> onnx.ModelProto:
    """x is 1000 + noise: 'center' (x - 1000) loses the noise when it reads x in BF16 (8 bits of mantissa);
    every other node is ordinary. Names show layers as exporters write them."""
    nodes = [
        helper.make_node("Sub", ["x", "offset"], ["d"], name="/encoder/layer.0/center"),
        helper.make_node("MatMul", ["d", "W1"], ["h"], name="/encoder/layer.0/fc1"),
        helper.make_node("Tanh", ["h"], ["t"], name="/encoder/layer.1/act"),
        helper.make_node("MatMul", ["t", "W2"], ["u"], name="/encoder/layer.1/fc2"),
        helper.make_node("Add", ["u", "d"], ["y"], name="/encoder/layer.1/residual"),
    ]
    inits = [tensor("offset", np.float32(1000)), tensor("W1", rand((H, H), 1, 0.3)), tensor("W2", rand((H, H), 2, 0.3))]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", H])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", H])], inits)


@pytest.fixture
def model_and_inputs(tmp_path):
    onnx.save(fragile(), str(tmp_path / "fragile.onnx"))
    x = (1000 + rand((12, 5, H), 3)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x)
    return tmp_path / "fragile.onnx", tmp_path / "inputs.npz"


def test_ranking_puts_the_fragile_node_first_and_counts_its_runs(model_and_inputs):
    src, inputs = model_and_inputs
    feeds = npz_feeds(inputs, batch_size=4)  # 3 batches: 3 ONNX Runtime runs a pass
    switched = Switched(src, feeds, pooling="mean")
    try:
        ranking = rank(switched)
    finally:
        switched.close()
    nodes, ops, layers = len(ranking.nodes), len(ranking.op_types), len(ranking.layers)
    assert (nodes, ops, layers) == (5, 4, 2)
    assert ranking.passes == 3 + 2 * (nodes + ops + layers)  # FP32, all off, all on, then loss + regain each
    assert ranking.runs == 3 * ranking.passes
    top = ranking.nodes[0]
    assert top["name"] == "/encoder/layer.0/center" and top["op_type"] == "Sub" and top["layer"] == "layer.0"
    assert top["regain_mean"] == max(r["regain_mean"] for r in ranking.nodes) > 0
    assert ranking.emulated[0] < ranking.all_fp32[0] and ranking.all_fp32[1] > 1 - 1e-9  # all off: FP32
    assert ranking.op_types[0]["name"] == "Sub" and ranking.layers[0]["name"] == "layer.0"
    text = table(ranking, top=3)
    assert "/encoder/layer.0/center" in text and "corpus passes" in text
    json.dumps(ranking.to_dict())


def test_search_keeps_the_fragile_node_and_verifies_on_the_real_emulation(model_and_inputs):
    src, inputs = model_and_inputs
    switched = Switched(src, npz_feeds(inputs, batch_size=4))
    try:
        target = 0.9999  # the fragile node must stay FP32 (emulated min: 0); it alone suffices (0.99999)
        result = search(src, switched, target, rank_rows=4, strategy="ranked")
        segments = search(src, switched, target)
    finally:
        switched.close()
    assert segments.met and segments.nodes == ["/encoder/layer.0/center"], segments.summary()
    # all on, all off, the tries of the segment bisection (at most 2K - 1), one verification
    assert segments.passes <= 2 + 9 + 1
    assert result.met, result.summary()
    assert result.nodes == ["/encoder/layer.0/center"]
    assert result.verified[0] >= target and result.verified[1] >= target
    assert result.emulated[1] < target
    # the search's own passes: all on, all off, all on over the 4 ranking rows, 3 runs of 2 nodes (sqrt 5) and the
    # nodes of two of them, ceil(log2 5) = 3 bisection steps, nothing to prune (one node), one verification
    assert result.passes <= 3 + 3 + 4 + 3 + 1
    assert result.runs == 3 * 6 + (result.passes - 6)  # 6 passes over all 3 batches, the rest over 1 (4 rows)


def test_search_says_when_no_node_list_can_meet_the_target(model_and_inputs):
    src, inputs = model_and_inputs
    switched = Switched(src, npz_feeds(inputs))
    try:
        result = search(src, switched, 1.5)
    finally:
        switched.close()
    assert not result.met and "no node list can meet it" in result.note


@pytest.mark.parametrize("names", [("", "/encoder/layer.0/fc1"), ("/encoder/layer.0/fc1", "/encoder/layer.0/fc1")])
def test_search_refuses_nodes_no_list_can_name_before_it_runs(tmp_path, capsys, names):
    """An unnamed node cannot be kept FP32 alone by a node list: refused up front, no list. Two nodes of one name
    ONNX Runtime itself refuses: said as the input's fault, not as an unexpected failure of the converter's."""
    model = fragile()
    model.graph.node[0].name, model.graph.node[1].name = names
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "x.npz", x=(1000 + rand((12, 5, H), 3)).astype(np.float32))
    rc = main(["sensitivity", str(tmp_path / "m.onnx"), "--inputs", str(tmp_path / "x.npz"), "--target-cosine",
               "0.9999", "--node-list", str(tmp_path / "nodes.json")])
    err = capsys.readouterr().err
    assert rc == 1 and not (tmp_path / "nodes.json").exists()
    if not names[0]:
        assert "1 of the model's 5 float nodes has no name" in err and "Give every node a unique name" in err
    else:  # ONNX Runtime refuses two nodes of one name: said as the input's fault, before any emulation
        assert "ONNX Runtime (CPU) cannot load the input model" in err and "same node name" in err
        assert "unexpected" not in err and "switched" not in err
    assert err.count("\n") == 1, err


def test_layers_from_names_and_exporter_scopes():
    node = helper.make_node("MatMul", ["a", "b"], ["c"], name="/encoder/layer.11/attention/self/query/MatMul")
    assert layer_of(node) == "layer.11"
    node = helper.make_node("MatMul", ["a", "b"], ["c"], name="node_MatMul_66")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'm', 'm.encoder', 'm.encoder.layer.3']")
    assert layer_of(node) == "layer.3"
    assert layer_of(helper.make_node("Add", ["a", "b"], ["c"], name="node_add_14")) is None


def test_cli_ranks_searches_and_the_list_feeds_emulate(model_and_inputs, tmp_path, capsys):
    src, inputs = model_and_inputs
    assert main(["sensitivity", str(src), "--inputs", str(inputs), "--top", "2", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "/encoder/layer.0/center" in out and "emulated BF16 compute" in out
    assert json.loads((tmp_path / "r.json").read_text())["nodes"][0]["name"] == "/encoder/layer.0/center"
    target = 0.9999
    rc = main(["sensitivity", str(src), "--inputs", str(inputs), "--target-cosine", str(target),
               "--node-list", str(tmp_path / "keep.json"), "--rank-rows", "4"])
    assert rc == 0, capsys.readouterr().err
    assert read_node_list(tmp_path / "keep.json") == ["/encoder/layer.0/center"]
    assert main(["emulate", str(src), str(tmp_path / "kept.onnx"), "--keep-nodes-from", str(tmp_path / "keep.json"),
                 "-q"]) == 0


# ----------------------------------------------------------------------------- switched session = real emulation


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    """A 2-layer XLM-R (hidden 64, 4 heads, vocab 1000) from a transformers config, seeded random weights (biases and
    LayerNorm too, as a trained model has them), exported as Olive's OnnxConversion does with use_dynamo_exporter
    (opset 18); with CLS-pooled feeds of four rows of random token ids and padding, as the BCE benchmark feeds."""
    import warnings

    import torch
    import transformers

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    config = transformers.XLMRobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=128, max_position_embeddings=130, type_vocab_size=1,
                                           pad_token_id=1, layer_norm_eps=1e-5)
    torch.manual_seed(0)
    model = transformers.XLMRobertaModel(config, add_pooling_layer=False).eval()
    gen = torch.Generator().manual_seed(20260206)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.02, generator=gen).add_(1.0 if "LayerNorm.weight" in name else 0.0)
    rng = np.random.default_rng(1)
    ids, mask = np.ones((4, 32), np.int64), np.zeros((4, 32), np.int64)
    for i, n in enumerate([32, 20, 9, 5]):
        ids[i, 0], ids[i, 1:n - 1], ids[i, n - 1], mask[i, :n] = 0, rng.integers(5, 999, size=n - 2), 2, 1
    path = tmp_path_factory.mktemp("xlmr") / "model.onnx"
    dim = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=128)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(model), (torch.from_numpy(ids[:1]), torch.ones(1, 32, dtype=torch.int64)),
                          dynamo=True, opset_version=18, input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], dynamic_shapes={"input_ids": dim, "attention_mask": dim},
                          verbose=False).save(str(path))
    return path, Feeds([{"input_ids": ids, "attention_mask": mask}], [mask])


def test_the_switched_session_computes_what_the_emulation_with_those_nodes_kept_computes(xlmr, tmp_path):
    """Bit for bit, for every node kept alone and for random sets: the search decides on the switched session, so a
    difference would make it keep the wrong nodes. (Keeping the embeddings' first Add FP32 once differed: its
    switch-off read the FP32 tables through the Gathers, the emulation the BF16 ones.)"""
    from olive_bf16_pass.emulation import EmulationOptions, emulate_file
    from olive_bf16_pass.sensitivity import run_all, session_for

    src, feeds = xlmr
    switched = Switched(src, feeds, pooling="cls")
    try:
        k = len(switched.nodes)
        rng = np.random.default_rng(0)
        sets = [[], *([i] for i in range(k)), *(rng.choice(k, size=rng.integers(2, k // 2), replace=False)
                                                for _ in range(8))]
        for kept in sets:
            on = np.ones(k, bool)
            on[list(kept)] = False
            names = [switched.nodes[i] for i in kept]
            emulate_file(src, tmp_path / "kept.onnx", EmulationOptions(keep_nodes=names))
            real = run_all(session_for(tmp_path / "kept.onnx", exact=True), feeds, None)[0]
            assert switched.outputs(on)[0].tobytes() == real.tobytes(), f"kept {names}"
        gathers = [n for n, op in zip(switched.nodes, switched.ops) if op == "Gather"]
        assert len(gathers) == 3  # word, token type, position: each table's precision is its Gather's
    finally:
        switched.close()


def test_the_search_claims_what_its_verification_on_the_real_emulation_measures(xlmr):
    src, feeds = xlmr
    switched = Switched(src, feeds, pooling="cls")
    try:
        emulated = switched.measure(np.ones(len(switched.nodes), bool))
        target = emulated[0] + 0.5 * (1 - emulated[0])  # half of what BF16 compute loses, regained
        result = search(src, switched, target, emulated[1] + 0.5 * (1 - emulated[1]))
        on = np.ones(len(switched.nodes), bool)
        on[[switched.nodes.index(n) for n in result.nodes]] = False
        claimed = switched.measure(on)
    finally:
        switched.close()
    assert result.met and 0 < len(result.nodes) < len(switched.nodes), result.summary()
    assert claimed == result.verified  # the switched figure is the real emulation's, exactly


def _masked_attention() -> onnx.ModelProto:
    """Scores + Where(mask, 0, float32 min) -> Softmax, the fill shared with another Where (as exporters share it);
    then a MatMul with a weight large enough for ONNX Runtime to prepack (a constant weight only)."""
    d = 256
    nodes = [
        helper.make_node("Where", ["mask", "zero", "fill"], ["bias"], name="mask_fill"),
        helper.make_node("MatMul", ["x", "Wq"], ["scores"], name="scores"),
        helper.make_node("Add", ["scores", "bias"], ["masked"], name="masked"),
        helper.make_node("Softmax", ["masked"], ["p"], name="softmax", axis=-1),
        helper.make_node("Where", ["mask", "p", "zero"], ["p0"], name="mask_again"),
        helper.make_node("MatMul", ["p0", "Wo"], ["y"], name="out"),
    ]
    inits = [tensor("zero", np.float32(0)), tensor("fill", np.float32(np.finfo(np.float32).min)),
             tensor("Wq", rand((d, d), 1, 0.5)), tensor("Wo", rand((d, d), 2, 0.5))]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", d]),
                              helper.make_tensor_value_info("mask", TensorProto.BOOL, ["b", d])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", d]),
                       helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["b", d])], inits)


@pytest.mark.parametrize("output", ["y", "bias"])
def test_the_switched_session_rounds_weights_as_convert_and_computes_as_the_emulation_on_any_kernel(tmp_path, output):
    """Two ways the switched session once differed from the emulation: a finite weight beyond BF16's range (float32
    min, a mask fill) became -inf through its Cast where convert saturates it, and a kept MatMul got a prepacked GEMM
    in the emulation (a constant weight) and not in the switched model (a weight computed by its switch)."""
    from olive_bf16_pass.emulation import EmulationOptions, emulate_file
    from olive_bf16_pass.sensitivity import run_all, session_for

    src = tmp_path / "attention.onnx"
    onnx.save(_masked_attention(), str(src))
    rng = np.random.default_rng(0)
    x = rand((64, 256), 3)
    mask = rng.random((64, 256)) > 0.3
    feeds = Feeds([{"x": x, "mask": mask}], [None])
    switched = Switched(src, feeds, pooling="none", output=output)
    try:
        k = len(switched.nodes)
        for kept in [[], *([i] for i in range(k)), list(range(k))]:
            on = np.ones(k, bool)
            on[kept] = False
            names = [switched.nodes[i] for i in kept]
            emulate_file(src, tmp_path / "kept.onnx", EmulationOptions(keep_nodes=names))
            real = run_all(session_for(tmp_path / "kept.onnx", exact=True), feeds, output)[0]
            assert switched.outputs(on)[0].tobytes() == real.tobytes(), f"kept {names}"
            if output == "bias" and not kept:  # the fill as convert rounds it: BF16's largest finite, not -inf
                assert real.min() == np.float32(-3.3895313892515355e38)
    finally:
        switched.close()
