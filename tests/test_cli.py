"""The olive-bf16 command: help, exit codes, convert's options and summary, inspect, package-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from _fuzz_models import make_model, matmul_model, run_session, save_with_external_data
from onnx import TensorProto, helper, numpy_helper

from olive_bf16_pass import cli, commands
from olive_bf16_pass.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fp32(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(matmul_model(), str(path))
    return path


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def initializers(path: Path) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in onnx.load(str(path)).graph.initializer}


# --- help and usage --------------------------------------------------------------------------


def test_help_reads_like_the_readme(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for text in (
        "convert IN OUT",
        "inspect MODEL",
        "package-config",
        "exit codes:",
        "0  success",
        "2  usage error",
        "--debug",
        "examples:",
    ):
        assert text in out


def test_convert_help_lists_every_option(capsys):
    rc, out, _ = run(capsys, "convert", "--help")
    assert rc == 0
    for option in (
        "--rounding",
        "--no-saturate",
        "--min-elements",
        "--op-block",
        "--node-block",
        "--include",
        "--exclude",
        "--no-constants",
        "--graph-input-initializers",
        "--no-cast-after-gather",
        "--external-data",
        "--external-data-name",
        "--in-place",
        "--report",
        "--quiet",
        "--debug",
    ):
        assert option in out
    assert "IN is never modified" in out and "refused (exit 1" in out


@pytest.mark.parametrize("command", ["inspect", "package-config"])
def test_subcommand_help(capsys, command):
    rc, out, _ = run(capsys, command, "--help")
    assert rc == 0 and "usage: olive-bf16 " + command in out


def test_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("olive-bf16 ")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["convert"],
        ["convert", "only-in.onnx"],
        ["frobnicate"],
        ["convert", "a", "b", "--bogus"],
        ["convert", "a", "b", "--rounding", "stochastic"],
        ["convert", "a", "b", "--min-elements", "many"],
        ["inspect"],
    ],
    ids=["nothing", "no-args", "one-arg", "unknown-command", "unknown-option", "bad-choice", "bad-int", "inspect"],
)
def test_usage_errors_exit_2(capsys, argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and "usage:" in err and "Traceback" not in err


def test_negative_min_elements_is_an_error(capsys, fp32, tmp_path):
    rc, _, err = run(capsys, "convert", fp32, tmp_path / "o.onnx", "--min-elements", "-1")
    assert rc == 1 and "min_elements" in err and err.count("\n") == 1
    assert not (tmp_path / "o.onnx").exists()


def test_python_dash_m(tmp_path, fp32):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "olive_bf16_pass", "convert", str(fp32), str(tmp_path / "o.onnx")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "converted 1 tensors" in done.stdout and done.stderr == ""  # no progress bar when not a terminal
    help_ = subprocess.run(
        [sys.executable, "-m", "olive_bf16_pass", "--help"], check=False, capture_output=True, text=True, env=env
    )
    assert help_.returncode == 0 and "exit codes:" in help_.stdout


# --- convert -----------------------------------------------------------------------------------


def test_convert_summary_and_result(capsys, fp32, tmp_path):
    out_path = tmp_path / "out.onnx"
    rc, out, err = run(capsys, "convert", fp32, out_path)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "converted 1 tensors to bfloat16, left 1 as they were"
    assert any(line.startswith("size: ") and "ratio 0.5" in line for line in lines)
    assert any(line.startswith("worst rounding error: ") and "(W)" in line for line in lines)
    assert any("kept" in line and "fewer than --min-elements=1024" in line for line in lines)
    assert lines[-1] == f"wrote {out_path}"
    assert len(lines) <= 24  # one screen
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    ref, got = run_session(fp32, {"x": x})[0], run_session(out_path, {"x": x})[0]
    np.testing.assert_allclose(got, ref, atol=0.05 * max(1.0, np.abs(ref).max()))
    assert oct(out_path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # a plain file's mode, not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_report_json(capsys, fp32, tmp_path):
    rc, _, _ = run(capsys, "convert", fp32, tmp_path / "out.onnx", "--report", tmp_path / "r.json", "-q")
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    (record,) = report["converted"]
    assert record["name"] == "W" and record["stored_name"] == "W_bf16" and record["shape"] == [64, 64]
    assert (record["bytes_before"], record["bytes_after"]) == (64 * 64 * 4, 64 * 64 * 2)
    # BF16 keeps 8 significant bits: round to nearest is within half a unit in the last place, 2**-8 relative
    assert 0 < record["max_rel_error"] <= 2**-8 and record["max_abs_error"] > 0
    assert record["nan_count"] == record["inf_count"] == 0
    assert report["skipped"] == [
        {"name": "b", "reason": "64 elements, fewer than min_elements=1024", "bytes": 256, "scope": "graph",
         "kind": "too_small", "group": "fewer than min_elements=1024"}
    ]  # the JSON keeps the library's words (parameter names); only printed text speaks flags
    assert record["scope"] == "graph" and report["opset_upgrade"] is None
    assert report["options"]["min_elements"] == 1024 and report["options"]["rounding"] == "nearest_even"
    assert 0.45 < report["ratio"] < 0.55
    assert report["destination"] == [str(tmp_path / "out.onnx")]


def test_quiet(capsys, fp32, tmp_path):
    rc, out, err = run(capsys, "convert", fp32, tmp_path / "out.onnx", "--quiet")
    assert (rc, out, err) == (0, "", "")


def test_every_flag_reaches_the_options():
    args = cli._parser().parse_args(
        [
            "convert",
            "a",
            "b",
            "--rounding",
            "truncate",
            "--no-saturate",
            "--min-elements",
            "7",
            "--op-block",
            "Gemm",
            "--op-block",
            "Conv",
            "--node-block",
            "n1",
            "--include",
            "t1",
            "--include",
            "t2",
            "--exclude",
            "t3",
            "--no-constants",
            "--graph-input-initializers",
            "--no-cast-after-gather",
            "--no-upgrade-opset",
            "--storage",
            "float32",
        ]
    )
    assert commands.options_of(args).to_dict() == {
        "rounding": "truncate",
        "saturate": False,
        "min_elements": 7,
        "op_block_list": ["Gemm", "Conv"],
        "node_block_list": ["n1"],
        "op_include_list": None,
        "node_include_list": None,
        "include_initializers": ["t1", "t2"],
        "exclude_initializers": ["t3"],
        "convert_constants": False,
        "convert_graph_input_initializers": True,
        "cast_after_gather": False,
        "storage": "float32",
        "upgrade_opset": False,
    }
    defaults = commands.options_of(cli._parser().parse_args(["convert", "a", "b"]))
    from olive_bf16_pass.options import ConversionOptions

    assert defaults == ConversionOptions()


@pytest.mark.parametrize(
    "flags, converted",
    [
        ([], {"W"}),
        (["--min-elements", "1"], {"W", "b"}),
        (["--exclude", "W"], set()),
        (["--op-block", "MatMul"], set()),
        (["--node-block", "mm"], set()),
        (["--include", "b", "--min-elements", "1"], {"b"}),
    ],
    ids=["default", "min-elements", "exclude", "op-block", "node-block", "include"],
)
def test_selection_flags(capsys, fp32, tmp_path, flags, converted):
    rc, _, _ = run(capsys, "convert", fp32, tmp_path / "o.onnx", "--report", tmp_path / "r.json", "-q", *flags)
    assert rc == 0
    assert {r["name"] for r in json.loads((tmp_path / "r.json").read_text())["converted"]} == converted


def test_rounding_and_saturate_flags(capsys, tmp_path):
    w = np.full((64, 64), 1.0 + 3 * 2**-9, np.float32)  # between BF16's 1 and 1 + 2**-7, nearer the upper
    w[0, 0] = 3.4e38
    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(weight=w), str(src))

    def stored(flags):
        run(capsys, "convert", src, tmp_path / "o.onnx", "-q", *flags)
        raw = initializers(tmp_path / "o.onnx")["W_bf16"].raw_data
        return np.frombuffer(raw, np.uint16).view(ml_dtypes.bfloat16).astype(np.float32).reshape(64, 64)

    nearest, truncated = stored([]), stored(["--rounding", "truncate"])
    assert nearest[1, 1] == 1.0 + 2**-7 and truncated[1, 1] == 1.0  # BF16 steps by 2**-7 just above 1
    assert np.isfinite(nearest[0, 0]) and np.isinf(stored(["--no-saturate"])[0, 0])


def _gather_constant_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "table")
    const = helper.make_node(
        "Constant", [], ["k"], value=numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "kv")
    )
    graph = helper.make_graph(
        [
            const,
            helper.make_node("Gather", ["table", "ids"], ["e"], name="gather"),
            helper.make_node("MatMul", ["e", "k"], ["y"], name="mm"),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
        [table],
    )
    return make_model(graph)


def test_constant_and_gather_flags(capsys, tmp_path):
    src = tmp_path / "g.onnx"
    onnx.save(_gather_constant_model(), str(src))
    feeds = {"ids": np.array([0, 5, 63, 5], np.int64)}
    ref = run_session(src, feeds)[0]

    def convert(*flags):
        out = tmp_path / "o.onnx"
        assert (
            run(capsys, "convert", src, out, "--min-elements", "16", "--report", tmp_path / "r.json", "-q", *flags)[0]
            == 0
        )
        np.testing.assert_allclose(run_session(out, feeds)[0], ref, atol=0.05 * max(1.0, np.abs(ref).max()))
        report = json.loads((tmp_path / "r.json").read_text())
        return {r["name"]: r["widened"] for r in report["converted"]}, onnx.load(str(out)).graph

    widened, graph = convert()
    assert widened == {"table": "after_gather", "k": "cast"}
    gather = next(n for n in graph.node if n.op_type == "Gather")
    assert gather.input[0] == "table_bf16"
    assert any(n.op_type == "Cast" and n.input[0] == gather.output[0] for n in graph.node)
    widened, _ = convert("--no-constants")
    assert widened == {"table": "after_gather"}
    widened, graph = convert("--no-cast-after-gather")
    assert widened == {"table": "cast", "k": "cast"}


def test_graph_input_initializers_flag(capsys, tmp_path):
    model = matmul_model()
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [64, 64]))
    src = tmp_path / "gi.onnx"
    onnx.save(model, str(src))
    run(capsys, "convert", src, tmp_path / "o.onnx", "--report", tmp_path / "r.json", "-q")
    assert json.loads((tmp_path / "r.json").read_text())["converted"] == []
    run(
        capsys, "convert", src, tmp_path / "o.onnx", "--report", tmp_path / "r.json", "-q", "--graph-input-initializers"
    )
    assert [r["name"] for r in json.loads((tmp_path / "r.json").read_text())["converted"]] == ["W"]
    inputs = {v.name: v.type.tensor_type.elem_type for v in onnx.load(str(tmp_path / "o.onnx")).graph.input}
    assert inputs["W_bf16"] == TensorProto.BFLOAT16


@pytest.mark.parametrize("name", [None, "weights.bin"])
def test_external_data_flags(capsys, fp32, tmp_path, name):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    flags = ["--external-data"] if name is None else ["--external-data-name", name]
    rc, out, _ = run(capsys, "convert", fp32, out_dir / "b.onnx", *flags)
    assert rc == 0
    data = name or "b.onnx.data"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["b.onnx", data])
    assert f"wrote {out_dir / data}, {out_dir / 'b.onnx'}" in out
    assert (out_dir / data).stat().st_size == 64 * 64 * 2
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(run_session(out_dir / "b.onnx", {"x": x})[0], run_session(fp32, {"x": x})[0], atol=0.2)


def test_external_data_input(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_with_external_data(matmul_model(), src / "m.onnx")
    rc, out, _ = run(capsys, "convert", src / "m.onnx", tmp_path / "o.onnx")
    assert rc == 0 and "converted 1 tensors" in out
    assert run_session(tmp_path / "o.onnx", {"x": np.ones((1, 64), np.float32)})[0].shape == (1, 64)


def test_progress_bar_unit(capsys):
    bar = commands.ProgressBar(True)
    total = 200 << 20
    for done in range(0, total + 1, total // 10):
        bar(done, total)
    err = capsys.readouterr().err
    assert "100%" in err and "200/200 MB" in err and err.endswith("\n")
    commands.ProgressBar(True)(1, 50 << 20)  # a small model: no bar
    commands.ProgressBar(False)(1, total)  # not a terminal, or --quiet
    assert capsys.readouterr().err == ""


def test_progress_bar_in_convert(capsys, fp32, tmp_path, monkeypatch):
    monkeypatch.setattr(commands.ProgressBar, "MIN_BYTES", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    rc, _, err = run(capsys, "convert", fp32, tmp_path / "o.onnx")
    assert rc == 0 and "converting [" in err and "100%" in err
    assert run(capsys, "convert", fp32, tmp_path / "o.onnx", "-q")[2] == ""


def test_stale_temporaries_are_reported_not_deleted(capsys, fp32, tmp_path):
    stale = tmp_path / ".out.onnx.k3j4h5.tmp"
    stale.write_bytes(b"partial")
    rc, _, err = run(capsys, "convert", fp32, tmp_path / "out.onnx", "-q")
    assert rc == 0
    assert "warning" in err and stale.name in err and err.count("\n") == 1
    assert stale.exists()  # another conversion might own it


# --- inspect -------------------------------------------------------------------------------------


def test_inspect_text(capsys, fp32):
    rc, out, _ = run(capsys, "inspect", fp32)
    assert rc == 0
    assert "IR 10, opset 17" in out
    assert "float          2 tensors      16.2 KB" in out
    assert "external data: none" in out
    assert "convert would turn 1 tensors to bfloat16, saving 8.0 KB, and keep 1" in out


def test_inspect_json_and_external_data(capsys, tmp_path):
    save_with_external_data(matmul_model(), tmp_path / "m.onnx", location="weights.bin")
    rc, out, _ = run(capsys, "inspect", tmp_path / "m.onnx", "--json", "--min-elements", "1")
    assert rc == 0
    info = json.loads(out)
    assert info["opset"] == 17 and info["opset_ok"] and info["ir_version"] == 10
    assert info["external_data_files"] == {"weights.bin": 64 * 64 * 4 + 64 * 4}
    assert info["tensor_count_by_dtype"] == {"float": 2}
    assert info["would_convert"] == 2 and info["bytes_saved"] == (64 * 64 + 64) * 2
    assert info["convert_refuses"] == []


def test_inspect_says_what_convert_would_refuse(capsys, tmp_path):
    onnx.save(matmul_model(opset=11), str(tmp_path / "old.onnx"))
    onnx.save(matmul_model(dtype=np.float16), str(tmp_path / "half.onnx"))
    old = run(capsys, "inspect", tmp_path / "old.onnx")[1]
    assert "opset 11 (below 13: convert upgrades it, or refuses with --no-upgrade-opset)" in old
    assert "convert will refuse" not in old and "convert would turn 1 tensors to bfloat16" in old
    assert "weights are float16 and none are float32" in run(capsys, "inspect", tmp_path / "half.onnx")[1]


def test_inspect_after_convert(capsys, fp32, tmp_path):
    run(capsys, "convert", fp32, tmp_path / "o.onnx", "-q")
    out = run(capsys, "inspect", tmp_path / "o.onnx")[1]
    assert "bfloat16" in out and "already bfloat16" in out and "convert would turn 0 tensors" in out


# --- package-config ----------------------------------------------------------------------------


def test_package_config(capsys, tmp_path):
    rc, out, _ = run(capsys, "package-config")
    assert rc == 0
    config = json.loads(out)
    assert config["passes"]["OnnxFloatToBFloat16"]["module_path"] == "olive_bf16_pass.olive.passes.OnnxFloatToBFloat16"
    assert "OnnxFloatToFloat16" in config["passes"]  # Olive's own passes are all there
    rc, out, _ = run(capsys, "package-config", "-o", tmp_path / "cfg.json")
    assert rc == 0 and "wrote" in out and "--package-config" in out
    assert json.loads((tmp_path / "cfg.json").read_text()) == config


def test_a_report_path_that_is_a_folder_is_refused_before_converting(capsys, fp32, tmp_path):
    (tmp_path / "r.json").mkdir()  # a directory where the report file should go
    rc, _, err = run(capsys, "convert", fp32, tmp_path / "o.onnx", "--report", tmp_path / "r.json", "-q")
    assert rc == 1 and "the report path is a directory" in err and "nothing was converted" in err
    assert err.count("\n") == 1 and not (tmp_path / "o.onnx").exists()


def test_report_that_cannot_be_written_says_the_model_was(capsys, fp32, tmp_path, monkeypatch):
    """A report write that fails after all (the disk filled up meanwhile) says where the model is."""
    from olive_bf16_pass.report import Report

    def full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Report, "write_json", full)
    rc, _, err = run(capsys, "convert", fp32, tmp_path / "o.onnx", "--report", tmp_path / "r.json", "-q")
    assert rc == 1 and "cannot write the report" in err and "the model itself was written" in err
    assert err.count("\n") == 1 and (tmp_path / "o.onnx").exists()


# --- paths that must not be replaced -------------------------------------------------------------


@pytest.mark.parametrize("target", ["input", "input-data", "output", "output-data"])
def test_a_report_path_naming_a_model_file_is_refused(capsys, tmp_path, target):
    src = tmp_path / "src"
    src.mkdir()
    save_with_external_data(matmul_model(), src / "m.onnx")
    data_file = next(p for p in src.iterdir() if p.name != "m.onnx")
    out = tmp_path / "o.onnx"
    report = {"input": src / "m.onnx", "input-data": data_file, "output": out, "output-data": tmp_path / "o.onnx.data"}
    before = {p: p.read_bytes() for p in src.iterdir()}
    rc, stdout, err = run(capsys, "convert", src / "m.onnx", out, "--external-data", "--report", report[target])
    assert rc == 1 and stdout == "" and err.count("\n") == 1
    assert "the report would overwrite" in err and "Choose another report path" in err
    assert {p: p.read_bytes() for p in src.iterdir()} == before and not out.exists()
    assert not (tmp_path / "o.onnx.data").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_an_output_that_is_a_fifo_is_refused_not_replaced(capsys, fp32, tmp_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    rc, _, err = run(capsys, "convert", fp32, fifo)
    assert rc == 1 and "exists and is a FIFO (named pipe), not a regular file" in err and err.count("\n") == 1
    assert fifo.is_fifo()  # left as it was


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_an_output_that_is_a_device_is_refused(capsys, fp32):
    rc, _, err = run(capsys, "convert", fp32, "/dev/null")
    assert rc == 1 and "/dev/null: exists and is a device" in err
    assert Path("/dev/null").is_char_device()


def test_an_output_name_of_255_bytes_works(capsys, fp32, tmp_path):
    out = tmp_path / ("n" * 250 + ".onnx")
    rc, stdout, err = run(capsys, "convert", fp32, out, "--report", tmp_path / "r.json")
    assert (rc, err) == (0, "") and out.exists() and f"wrote {out}" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx", "r.json", out.name])


def test_library_warnings_reach_stderr_as_one_line(capsys, fp32, tmp_path, monkeypatch):
    import logging

    from olive_bf16_pass import convert

    real = convert.convert_file

    def warn_then_convert(*args, **kwargs):
        logging.getLogger("olive_bf16_pass.convert").warning("exclude_initializers 'w' matches no tensor;\nsee 'W'")
        return real(*args, **kwargs)

    monkeypatch.setattr(convert, "convert_file", warn_then_convert)
    rc, _, err = run(capsys, "convert", fp32, tmp_path / "o.onnx", "-q")
    assert rc == 0 and err == "olive-bf16: warning: --exclude 'w' matches no tensor; see 'W'\n"


def test_a_conversion_that_grows_the_file_says_why(capsys, tmp_path):
    """Tiny tensors gain less than their Cast costs: the summary says so and names the way out."""
    nodes, inits, prev = [], [], "x"
    for i in range(50):
        inits.append(helper.make_tensor(f"b{i}", TensorProto.FLOAT, [2], [0.5, float(i)]))
        nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"h{i}"]))
        prev = f"h{i}"
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", prev)]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], inits),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=10), tmp_path / "tiny.onnx")
    rc, out, _ = run(capsys, "convert", tmp_path / "tiny.onnx", tmp_path / "out.onnx", "--min-elements", "1")
    assert rc == 0 and "note: the output is larger than the input" in out and "--min-elements" in out
    rc, out, _ = run(capsys, "convert", tmp_path / "tiny.onnx", tmp_path / "out2.onnx")
    assert rc == 0 and "larger than the input" not in out  # nothing converted: nothing to explain


# --- recipes -------------------------------------------------------------------------------------


def test_recipes_lists_and_writes_a_copy_that_names_no_repository_path(capsys, tmp_path):
    rc, out, _ = run(capsys, "recipes")
    assert rc == 0 and out.splitlines()[0].split()[0] == "bce_cpu" and any(
        line.startswith("quickstart ") for line in out.splitlines()
    )
    rc, out, _ = run(capsys, "recipes", "quickstart", "-o", tmp_path / "mine")
    written = tmp_path / "mine" / "quickstart.json"
    assert rc == 0 and f"olive run --config {written}" in out
    recipe = json.loads(written.read_text())
    assert recipe["cache_dir"].startswith(str(tmp_path)) and recipe["output_dir"].startswith(str(tmp_path))
    assert '"recipes/' not in written.read_text()  # every file it names is resolved
    rc, _, err = run(capsys, "recipes", "no_such_recipe")
    assert rc == 1 and "no recipe named 'no_such_recipe'; the recipes are: " in err
