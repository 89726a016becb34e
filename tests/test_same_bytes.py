"""The same bytes every time (issue 16, item 3).

A converted file is exactly protobuf's own serialization of its model (fields by number, data
inline), so: converting a converted model again writes the same bytes; a conversion that converts
nothing writes the canonical form of its input (the input itself when it was canonical, as
onnx.save writes it); two runs of one conversion, in processes with different string hashing, give
identical files. Runtimes that key a compiled cache on the model's hash (the Vitis AI EP: MD5)
then keep their cache across no-op re-runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import matmul_model, random_models, save_input
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.convert import convert_file
from olive_bf16_pass.protowire import len_field, varint
from olive_bf16_pass.options import ConversionOptions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("BF16_SAME_BYTES_EXAMPLES", "25"))


def _files(report) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in report.destination}


def _canonical(data: bytes) -> bytes:
    return onnx.ModelProto.FromString(data).SerializeToString()


def _convert(src: Path, folder: Path, options=None, external: bool = False, threshold: int = 1024):
    folder.mkdir(parents=True, exist_ok=True)
    return convert_file(src, folder / "out.onnx", options, save_as_external_data=external, size_threshold=threshold)


def _assert_same_bytes_every_time(src: Path, tmp: Path, options=None, external: bool = False, threshold: int = 1024):
    first = _files(_convert(src, tmp / "first", options, external, threshold))
    assert _canonical(first["out.onnx"]) == first["out.onnx"], "the output is not protobuf's own serialization"
    second = _files(_convert(src, tmp / "second", options, external, threshold))
    assert second == first, "two runs of one conversion wrote different bytes"
    again = _files(_convert(tmp / "first" / "out.onnx", tmp / "again", options, external, threshold))
    assert again == first, "converting the converted model again changed its bytes"
    return first


_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=_SLOW,
          phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False)
@given(random_models(), st.booleans(), st.sampled_from([0, 64, 1024]), st.booleans(), st.sampled_from([0, 1024]))
def test_fuzz_models_give_the_same_bytes(case, in_external, in_threshold, out_external, out_threshold):
    model, options, _ = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        src = tmp / "in" / "model.onnx"
        save_input(model, src, in_external, in_threshold)
        _assert_same_bytes_every_time(src, tmp, options, out_external, out_threshold)


def test_large_streamed_tensor_gives_the_same_bytes(tmp_path):
    """A tensor over a streaming chunk (16 MB), with a doc_string: a field after raw_data."""
    model = matmul_model(2100)
    model.graph.initializer[0].doc_string = "after raw_data in protobuf's order"
    onnx.save(model, tmp_path / "model.onnx")
    _assert_same_bytes_every_time(tmp_path / "model.onnx", tmp_path)


@pytest.mark.parametrize("opset", [11, 13])
def test_old_opset_upgraded_gives_the_same_bytes(tmp_path, opset):
    onnx.save(matmul_model(64, opset=opset), tmp_path / "model.onnx")
    first = _assert_same_bytes_every_time(tmp_path / "model.onnx", tmp_path)
    assert onnx.ModelProto.FromString(first["out.onnx"]).opset_import[0].version >= 13


@pytest.mark.parametrize("external", [False, True])
def test_nothing_to_convert_writes_the_input_bytes(tmp_path, external):
    """A model converted already, saved by onnx.save (canonical), converts to the same bytes."""
    onnx.save(matmul_model(64), tmp_path / "model.onnx")
    first = _files(_convert(tmp_path / "model.onnx", tmp_path / "first"))
    (tmp_path / "saved").mkdir()
    saved = tmp_path / "saved" / "model.onnx"
    inputs = save_input(onnx.ModelProto.FromString(first["out.onnx"]), saved, external, 1024, attributes=False)
    report = _convert(saved, tmp_path / "noop", external=external)
    assert report.converted == []
    written = _files(report)
    if not external:
        assert written["out.onnx"] == saved.read_bytes()
    else:  # the same model, the same layout: onnx.save aligns nothing, we align to pages
        assert _canonical(written["out.onnx"]) == written["out.onnx"]
        assert {p.name for p in inputs} == {"model.onnx", "model.onnx.data"}


# --- models that arrive with their fields in another order -----------------------------------------


def _reversed_order(message) -> bytes:
    """``message`` serialized with its fields in descending number order, at every level (the items of
    a repeated field keep their order: it is their meaning), and tensors' raw_data first."""
    out = []
    for descriptor, value in sorted(message.ListFields(), key=lambda f: -f[0].number):
        repeated = getattr(descriptor, "is_repeated", None)
        if repeated is None:  # protobuf before 5.x
            repeated = descriptor.label == descriptor.LABEL_REPEATED
        if descriptor.type == descriptor.TYPE_MESSAGE:
            for item in value if repeated else [value]:
                body = _reversed_order(item)
                out.append(len_field(descriptor.number, len(body)) + body)
        else:
            part = type(message)()
            if repeated:
                getattr(part, descriptor.name).extend(value)
            else:
                setattr(part, descriptor.name, value)
            out.append(part.SerializeToString())
    return b"".join(out)


def _branchy_model() -> onnx.ModelProto:
    """Initializers, a Constant, an If with its own initializer, a doc_string after raw_data."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W")
    w.doc_string = "a weight"
    c = numpy_helper.from_array(rng.standard_normal((64,)).astype(np.float32), "c")
    branch_w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "BW")
    then = helper.make_graph([helper.make_node("MatMul", ["h", "BW"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 64])], [branch_w])
    other = helper.make_graph([helper.make_node("Identity", ["h"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 64])])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["k"], value=c, name="const"),
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm", doc_string="node doc"),
            helper.make_node("Add", ["m", "k"], ["h"], name="add"),
            helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [w],
        doc_string="graph doc",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10,
                              producer_name="test", doc_string="model doc")
    helper.set_model_props(model, {"k": "v"})
    return model


@pytest.mark.parametrize("nothing", [False, True])
def test_non_canonical_field_order(tmp_path, nothing):
    model = _branchy_model()
    data = _reversed_order(model)
    assert data != model.SerializeToString() and onnx.ModelProto.FromString(data) == model
    src = tmp_path / "model.onnx"
    src.write_bytes(data)
    options = ConversionOptions(min_elements=1, convert_constants=True)
    if nothing:  # a converted model, in another field order: nothing converts, the canonical form comes out
        done = _convert(src, tmp_path / "done", options)
        assert done.converted
        data = _reversed_order(onnx.load(tmp_path / "done" / "out.onnx"))
        src.write_bytes(data)
    first = _assert_same_bytes_every_time(src, tmp_path / "runs", options)
    if nothing:
        assert first["out.onnx"] == _canonical(data)


def test_unknown_fields_keep_their_place(tmp_path):
    """Fields onnx does not know (a newer exporter's) stay, after the known ones, as protobuf puts them."""
    model = matmul_model(64)
    tensor = model.graph.initializer[0].SerializeToString() + varint(99 << 3) + varint(7)
    del model.graph.initializer[0]
    graph = model.graph.SerializeToString() + len_field(5, len(tensor)) + tensor
    model.ClearField("graph")
    data = model.SerializeToString() + len_field(7, len(graph)) + graph
    src = tmp_path / "model.onnx"
    src.write_bytes(data)
    first = _assert_same_bytes_every_time(src, tmp_path, ConversionOptions(min_elements=1))
    assert varint(99 << 3) + varint(7) in first["out.onnx"]


def test_two_processes_write_the_same_bytes(tmp_path):
    """Different string hashing (set and dict orders of names) must not change a byte."""
    onnx.save(_branchy_model(), tmp_path / "model.onnx")
    script = (
        "import sys; from olive_bf16_pass.convert import convert_file; from olive_bf16_pass.options import "
        "ConversionOptions; convert_file(sys.argv[1], sys.argv[2], ConversionOptions(min_elements=1, "
        "convert_constants=True))"
    )
    outs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"out{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.onnx"), str(out)], check=True, env=env,
                       cwd=ROOT, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def _count_checks(monkeypatch) -> list:
    from olive_bf16_pass import guards

    calls: list = []
    real = guards.check_output

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(guards, "check_output", counted)
    return calls


def test_a_conversion_that_writes_the_input_bytes_is_not_checked_again(tmp_path, monkeypatch):
    """The output is the input, byte for byte: it has no fault the input lacks, so the full checker (a
    second on 100,000 nodes) is skipped; a conversion that converts, or rewrites, is checked."""
    calls = _count_checks(monkeypatch)
    onnx.save(matmul_model(64), tmp_path / "model.onnx")
    done = _convert(tmp_path / "model.onnx", tmp_path / "first", ConversionOptions(min_elements=1))
    assert done.converted and len(calls) == 1
    again = _convert(tmp_path / "first" / "out.onnx", tmp_path / "again", ConversionOptions(min_elements=1))
    assert again.converted == [] and len(calls) == 1 and again.input_fails_checker is None
    assert (tmp_path / "again" / "out.onnx").read_bytes() == (tmp_path / "first" / "out.onnx").read_bytes()
    (tmp_path / "odd").mkdir()
    odd = tmp_path / "odd" / "model.onnx"  # nothing to convert, but not protobuf's own order: rewritten, so checked
    odd.write_bytes(_reversed_order(onnx.load(tmp_path / "first" / "out.onnx")))
    rewritten = _convert(odd, tmp_path / "canonical", ConversionOptions(min_elements=1))
    assert rewritten.converted == [] and len(calls) == 2
    assert (tmp_path / "canonical" / "out.onnx").read_bytes() != odd.read_bytes()


def test_a_no_op_conversion_of_a_model_failing_the_checker_copies_it(tmp_path):
    """Nothing converts and the bytes are the input's: the output carries the input's fault and no other."""
    model = matmul_model(64)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((3,), np.float32), "W"))
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
        onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "model.onnx")
    report = _convert(tmp_path / "model.onnx", tmp_path / "out")
    assert report.converted == []
    assert (tmp_path / "out" / "out.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()


def test_a_no_op_is_told_across_pieces_of_every_size(tmp_path, monkeypatch):
    """Inline bytes over the comparison's 1 MiB reads, before and after a tensor streamed as it was."""
    calls = _count_checks(monkeypatch)
    model = matmul_model(64)
    for i in range(3000):  # 400 bytes each: inline, 1.2 MB of them before W's streamed bytes
        model.graph.initializer.insert(0, numpy_helper.from_array(np.full(100, i, np.float32), f"pad{i}"))
    onnx.save(model, tmp_path / "model.onnx")
    report = _convert(tmp_path / "model.onnx", tmp_path / "out", ConversionOptions(min_elements=1 << 20))
    assert report.converted == [] and calls == []
    assert (tmp_path / "out" / "out.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
