"""The summary says why tensors stayed FP32 by reason kind, not one line per node."""

from olive_bf16_pass.report import Report, SkippedRecord, group_skipped, reason_group


def _skipped(n: int, reason: str, nbytes: int, prefix: str) -> list[SkippedRecord]:
    return [SkippedRecord(f"{prefix}{i}", reason.format(i=i), nbytes) for i in range(n)]


def _report() -> Report:
    skipped = (
        _skipped(12, "input of MatMul node 'mm{i}' (op type in op_block_list)", 4096, "W")
        + _skipped(2, "input of node 'head{i}' (in node_block_list)", 1000, "H")
        + _skipped(30, "{i} elements, fewer than min_elements=1024", 256, "b")
        + _skipped(1, "input 1 of DequantizeLinear node 'dq{i}' needs float32 (scales, roi)", 4, "scale")
        + _skipped(1, "already bfloat16", 2048, "E_bf16_")
    )
    return Report(skipped=skipped, weight_bytes_before=100_000, weight_bytes_after=90_000)


def test_reasons_group_by_kind_without_the_node_or_the_size():
    assert reason_group("input of MatMul node 'a' (op type in op_block_list)") == "input of an op_block_list node"
    assert reason_group("input of Gemm node 'b' (op type in op_block_list)") == "input of an op_block_list node"
    assert reason_group("input of node 'x' (in node_block_list)") == "input of a node_block_list node"
    assert reason_group("64 elements, fewer than min_elements=1024") == "fewer than min_elements=1024"
    assert reason_group("input 2 of Resize node 'r' needs float32 (scales, roi)").startswith("an input that must")
    assert reason_group("not used by any node") == "not used by any node"  # reasons with no variable part stay
    assert reason_group("dtype float16 (only float32 converts)") == "dtype float16 (only float32 converts)"


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
    assert as_dict == {**asdict(report), "ratio": report.ratio}
    as_dict["converted"][0]["shape"].append(9)
    as_dict["skipped"][0]["reason"] = "changed"
    assert report.converted[0].shape == [2, 3] and report.skipped[0].reason == "why"
