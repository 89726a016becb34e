"""One plan: ``inspect`` prints what ``convert`` does, for every model and every option set.

The options travel as command-line flags, derived from ConversionOptions the way the CLI derives
them, so this also proves ``inspect`` takes every flag ``convert`` takes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import matmul_model, random_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass.cli import main
from olive_bf16_pass.options import ConversionOptions, cli_arguments

EXAMPLES = 30


def _argv(options: ConversionOptions) -> list[str]:
    """The flags that give ``options``, built from the same descriptions the CLI's parser is."""
    argv: list[str] = []
    defaults = ConversionOptions()
    for flag, kwargs in cli_arguments():
        value = getattr(options, kwargs["dest"])
        if kwargs.get("action") == "append":
            for name in value or ():
                argv += [flag, name]
        elif kwargs.get("action") in ("store_true", "store_false"):
            if value != getattr(defaults, kwargs["dest"]):
                argv.append(flag)
        elif value != getattr(defaults, kwargs["dest"]):
            argv += [flag, str(value)]
    return argv


def _inspect_and_convert(capsys, model: onnx.ModelProto, options: ConversionOptions, folder: Path):
    src = folder / "m.onnx"
    onnx.save(model, str(src))
    flags = _argv(options)
    assert main(["inspect", str(src), "--json", *flags]) == 0
    plan = json.loads(capsys.readouterr().out)
    report = folder / "r.json"
    rc = main(["convert", str(src), str(folder / "o.onnx"), "-q", "--report", str(report), *flags])
    err = capsys.readouterr().err
    return plan, rc, err, (json.loads(report.read_text()) if rc == 0 else None)


def _assert_agree(plan: dict, rc: int, err: str, report: dict | None) -> None:
    if plan["convert_refuses"]:
        assert rc == 1 and plan["convert_refuses"][0].split(";")[0][:60] in err.replace("--", ""), (plan, err)
        return
    assert rc == 0, (plan["convert_refuses"], err)
    planned = sorted((c["scope"], c["name"]) for c in plan["converts"])
    assert planned == sorted((r["scope"], r["name"]) for r in report["converted"])
    assert plan["would_keep"] == len(report["skipped"])
    assert plan["bytes_saved"] == report["weight_bytes_before"] - report["weight_bytes_after"]


@st.composite
def _cases(draw):
    model, options, _ = draw(random_models())
    names = sorted({t.name for t in model.graph.initializer} | {n.output[0] for n in model.graph.node
                                                                if n.op_type == "Constant"})
    ops = sorted({n.op_type for n in model.graph.node})
    nodes = sorted({n.name for n in model.graph.node if n.name})
    pick = lambda pool: st.lists(st.sampled_from(pool + ["nothing_by_this_name"]), max_size=2)  # noqa: E731
    op_lists = draw(st.sampled_from(["none", "block", "include"]))
    node_lists = draw(st.sampled_from(["none", "block", "include"])) if nodes else "none"
    options = ConversionOptions(
        rounding=options.rounding,
        min_elements=options.min_elements,
        convert_constants=options.convert_constants,
        cast_after_gather=options.cast_after_gather,
        op_block_list=draw(pick(ops)) if op_lists == "block" else (),
        op_include_list=draw(pick(ops)) if op_lists == "include" else None,
        node_block_list=draw(pick(nodes)) if node_lists == "block" else (),
        node_include_list=draw(pick(nodes)) if node_lists == "include" else None,
        include_initializers=draw(st.none() | pick(names)),
        exclude_initializers=draw(pick(names)),
        convert_graph_input_initializers=draw(st.booleans()),
    )
    return model, options


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(_cases())
def test_inspect_and_convert_agree_on_every_generated_model(capsys, case):
    model, options = case
    with tempfile.TemporaryDirectory() as tmp:
        _assert_agree(*_inspect_and_convert(capsys, model, options, Path(tmp)))


def _with(model: onnx.ModelProto, *tensors: np.ndarray) -> onnx.ModelProto:
    """``model`` with extra initializers, each read by an Identity to an extra output."""
    for i, array in enumerate(tensors):
        name = f"extra{i}"
        model.graph.initializer.append(numpy_helper.from_array(array, name))
        model.graph.node.append(helper.make_node("Identity", [name], [f"{name}_out"]))
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        model.graph.output.append(helper.make_tensor_value_info(f"{name}_out", elem, list(array.shape)))
    return model


def _bf16_and_fp16() -> onnx.ModelProto:
    """Weights in BF16 and FP16 only: converts to itself (the case inspect once called refused)."""
    model = matmul_model(dtype=np.float16)
    bf16 = helper.make_tensor("extra_bf16", TensorProto.BFLOAT16, [64, 64], np.zeros(64 * 64, np.uint16).tobytes(),
                              raw=True)
    model.graph.initializer.append(bf16)
    model.graph.node.append(helper.make_node("Cast", ["extra_bf16"], ["bf_out"], to=TensorProto.FLOAT))
    model.graph.output.append(helper.make_tensor_value_info("bf_out", TensorProto.FLOAT, [64, 64]))
    return model


def _sparse() -> onnx.ModelProto:
    model = matmul_model()
    values = numpy_helper.from_array(np.ones(3, np.float32), "S")
    indices = numpy_helper.from_array(np.array([0, 5, 9], np.int64), "S_idx")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [10]))
    return model


@pytest.mark.parametrize(
    "model, options, refused",
    [
        (_bf16_and_fp16(), ConversionOptions(), False),
        (matmul_model(dtype=np.float16), ConversionOptions(), True),
        (matmul_model(opset=11), ConversionOptions(upgrade_opset=False), True),
        (matmul_model(opset=11), ConversionOptions(), False),
        (_sparse(), ConversionOptions(), True),
        (_with(matmul_model(), np.ones((64, 64), np.float16)), ConversionOptions(), False),
        (matmul_model(), ConversionOptions(op_include_list=["Add"], min_elements=1), False),
        (matmul_model(), ConversionOptions(node_include_list=["mm"], min_elements=1), False),
    ],
    ids=["bf16+fp16", "fp16-only", "opset11-no-upgrade", "opset11-upgraded", "sparse", "fp32+fp16", "op-include",
         "node-include"],
)
def test_inspect_and_convert_agree_on_refusals(capsys, tmp_path, model, options, refused):
    plan, rc, err, report = _inspect_and_convert(capsys, model, options, tmp_path)
    assert bool(plan["convert_refuses"]) is refused, plan["convert_refuses"]
    _assert_agree(plan, rc, err, report)


def test_include_lists_keep_the_readers_they_do_not_name(capsys, tmp_path):
    plan, rc, _, report = _inspect_and_convert(
        capsys, matmul_model(), ConversionOptions(op_include_list=["Add"], min_elements=1), tmp_path
    )
    assert rc == 0 and [c["name"] for c in plan["converts"]] == ["b"]  # W is read by MatMul, not in the list
    (kept,) = report["skipped"]
    assert kept["name"] == "W" and kept["kind"] == "not_in_op_include_list"


def test_include_and_block_lists_are_exclusive():
    with pytest.raises(ValueError, match="op_include_list and op_block_list are mutually exclusive"):
        ConversionOptions(op_include_list=["MatMul"], op_block_list=["Gather"])
    with pytest.raises(ValueError, match="node_include_list and node_block_list are mutually exclusive"):
        ConversionOptions(node_include_list=["a"], node_block_list=["b"])
