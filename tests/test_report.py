"""The summary says why tensors stayed FP32 by reason kind, not one line per node."""

from onnx import TensorProto, helper

from helpers import make_model, rand, tensor
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.plan import make_plan
from olive_bf16_pass.report import Report, SkippedRecord, SkippedRecords, group_kept, group_skipped
from olive_bf16_pass.selection import KeepKind
from olive_bf16_pass.traversal import Skeleton


def _skipped(n: int, reason: str, nbytes: int, prefix: str, kind: KeepKind, group: str = "") -> list[SkippedRecord]:
    group = kind.group.format(group)
    return [SkippedRecord(f"{prefix}{i}", reason.format(i=i), nbytes, kind=kind.key, group=group) for i in range(n)]


def _report() -> Report:
    skipped = (
        _skipped(12, "input of MatMul node 'mm{i}' (op type in op_block_list)", 4096, "W", KeepKind.OP_BLOCKED)
        + _skipped(2, "input of node 'head{i}' (in node_block_list)", 1000, "H", KeepKind.NODE_BLOCKED)
        + _skipped(30, "{i} elements, fewer than min_elements=1024", 256, "b", KeepKind.TOO_SMALL, "1024")
        + _skipped(1, "input 1 of DequantizeLinear node 'dq{i}' needs float32 (scales, roi)", 4, "scale",
                   KeepKind.FLOAT32_INPUT)
        + _skipped(1, "already bfloat16", 2048, "E_bf16_", KeepKind.ALREADY_BF16)
    )
    return Report(skipped=skipped, weight_bytes_before=100_000, weight_bytes_after=90_000)


def _blocked_model():
    """Two MatMuls and a Gemm, one small bias, one float16 and one int64 weight: five kinds of keeping."""
    inits = [tensor("A", rand((64, 64))), tensor("B", rand((64, 64))), tensor("C", rand((64, 64))),
             tensor("bias", rand((64,))), tensor("H", rand((64, 64)).astype("float16")),
             tensor("I", rand((64, 64)).astype("int64"))]
    nodes = [helper.make_node("MatMul", ["x", "A"], ["a"], name="mm0"),
             helper.make_node("MatMul", ["a", "B"], ["b"], name="mm1"),
             helper.make_node("Gemm", ["b", "C", "bias"], ["c"], name="g"),
             helper.make_node("Cast", ["H"], ["hf"], to=TensorProto.FLOAT), helper.make_node("Add", ["c", "hf"], ["d"]),
             helper.make_node("Cast", ["I"], ["if"], to=TensorProto.FLOAT), helper.make_node("Add", ["d", "if"], ["y"])]
    io = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [64, 64])  # noqa: E731
    return make_model(nodes, [io("x")], [io("y")], inits)


def test_reasons_group_by_kind_without_the_node_or_the_size():
    model = _blocked_model()
    plan = make_plan(Skeleton.of(model), ConversionOptions(op_block_list=["MatMul"]))
    kept = {k.definition.name: k for k in plan.kept}
    assert kept["A"].kind is kept["B"].kind is KeepKind.OP_BLOCKED and kept["A"].reason != kept["B"].reason
    assert kept["A"].group == kept["B"].group == "input of an op_block_list node"
    assert kept["bias"].kind is KeepKind.TOO_SMALL and kept["bias"].group == "fewer than min_elements=1024"
    assert kept["H"].group == "dtype float16 (only float32 converts)" != kept["I"].group  # one group per dtype
    records = [SkippedRecord.of(k) for k in plan.kept]
    groups = {g.reason: g.count for g in group_skipped(records)}
    assert groups["input of an op_block_list node"] == 2
    assert {r.kind for r in records} == {"op_block_list", "too_small", "dtype"}


def test_kept_tensors_group_as_their_records_do():
    """inspect groups the plan's kept tensors without a record each: the same groups, names and bytes."""
    plan = make_plan(Skeleton.of(_blocked_model()), ConversionOptions(op_block_list=["MatMul"]))
    fast = group_kept(plan.kept)
    assert len(fast) >= 3
    slow = group_skipped(SkippedRecord.of(k) for k in plan.kept)
    assert [(g.reason, g.count, g.bytes) for g in fast] == [(g.reason, g.count, g.bytes) for g in slow]


def test_records_held_as_columns_read_back_as_records():
    """A report of 100,000 kept tensors holds them as columns: every record reads back as it went in, and
    groups the same, names included (the summary asks for 3 a group)."""
    plan = make_plan(Skeleton.of(_blocked_model()), ConversionOptions(op_block_list=["MatMul"]))
    records = [SkippedRecord.of(k) for k in plan.kept]
    columns = SkippedRecords.of(plan.kept)
    assert len(columns) == len(records) >= 5 and list(columns) == records and columns == records
    assert columns[-1] == records[-1] and columns[1:3] == records[1:3]
    assert [vars(g) for g in group_skipped(columns)] == [vars(g) for g in group_skipped(records)]
    short = group_skipped(columns, names=1)
    assert [(g.reason, g.count) for g in short] == [(g.reason, g.count) for g in group_skipped(records)]
    assert all(len(g.names) == 1 for g in short) and [vars(g) for g in short] == [
        vars(g) for g in group_skipped(records, names=1)]


def test_groups_count_bytes_and_keep_every_name_largest_first():
    groups = group_skipped(_report().skipped)
    assert [(g.reason, g.count, g.bytes) for g in groups] == [
        ("input of an op_block_list node", 12, 12 * 4096),
        ("fewer than min_elements=1024", 30, 30 * 256),
        ("already bfloat16", 1, 2048),
        ("input of a node_block_list node", 2, 2000),
        ("an input that must stay float32 (scales, roi)", 1, 4),
    ]
    assert groups[0].names == [f"W{i}" for i in range(12)]


def test_summary_has_one_line_per_reason_kind_with_count_size_and_examples():
    summary = _report().summary()
    kept = [line for line in summary.splitlines() if line.lstrip().startswith("kept")]
    assert len(kept) == 5  # 46 skipped tensors, 5 reasons
    assert kept[0] == "  kept   12 tensors   48.0 KB: input of an op_block_list node (W0, W1, W2, +9 more)"
    assert kept[1] == "  kept   30 tensors    7.5 KB: fewer than min_elements=1024 (b0, b1, b2, +27 more)"
    assert "  kept    1 tensor     2.0 KB: already bfloat16 (E_bf16_0)" in kept
    assert not any("mm3" in line or "head1" in line for line in kept)  # no node names


def test_summary_cuts_long_names_and_many_reasons():
    skipped = [SkippedRecord("x" * 100, "not used by any node", 10)]
    skipped += [SkippedRecord(f"t{i}", f"dtype kind{i} (only float32 converts)", 1) for i in range(10)]
    lines = Report(skipped=skipped).summary().splitlines()
    assert any(("x" * 37 + "...") in line and "x" * 41 not in line for line in lines)
    assert sum(line.lstrip().startswith("kept") for line in lines) == 8
    assert lines[-1] == "  ... and 3 more reasons; the JSON report lists every tensor"


def test_to_dict_is_the_whole_report_and_copies_its_records():
    from dataclasses import asdict

    from olive_bf16_pass.report import TensorRecord

    report = Report(
        converted=[TensorRecord("a", "a_bf16", "initializer", [2, 3], 24, 12, "cast", "graph", 0.1, 0.2, 1, 2, 3, 4)],
        skipped=[SkippedRecord("b", "why", 8, "graph/If[1].then_branch")],
        weight_bytes_before=32, weight_bytes_after=20, options={"min_elements": 1}, destination=["o.onnx"],
        opset_upgrade=[11, 13],
    )
    as_dict = report.to_dict()
    assert as_dict == {**asdict(report), "ratio": report.ratio, "storage": "bfloat16"}  # the form written
    as_dict["converted"][0]["shape"].append(9)
    as_dict["skipped"][0]["reason"] = "changed"
    assert report.converted[0].shape == [2, 3] and report.skipped[0].reason == "why"
