"""The core runs where the users are (Windows): no POSIX-only call, Windows file semantics, and
external-data locations judged the same on every platform.

There is no Windows machine here. What is checked instead: the core's tests run again in a
session whose ``os`` lacks every POSIX-only function (no_posix.py), its outputs are byte-identical
to a normal run's, no handle on a file is open when it is renamed, and the package's source
names no POSIX-only module or function.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import no_posix
from helpers import embedding_mlp, if_subgraph_model, make_model, rand, run, save, tensor
from olive_bf16_pass import ConversionError, ConversionOptions, convert_file
from olive_bf16_pass.io import destination, source, writer
from olive_bf16_pass.io.destination import Destination

TESTS = Path(__file__).parent.parent
PACKAGE = TESTS.parent / "olive_bf16_pass"
CORE_TESTS = ["io/test_source.py", "io/test_positional.py", "io/test_portable.py", "test_convert.py", "test_bad_input.py",
              "test_graph.py", "test_identity.py"]


def _env(**extra) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.slow
@pytest.mark.skipif(no_posix.requested(), reason="this test starts the no-POSIX session; it is not part of it")
def test_core_tests_pass_with_the_posix_only_functions_removed():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *(str(TESTS / t) for t in CORE_TESTS)],
        cwd=TESTS.parent,
        env=_env(**{no_posix.ENV: "1"}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert "POSIX-only os functions removed: pread" in out, out[-3000:]
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in out and " failed" not in out


def test_no_posix_session_really_lacks_the_functions():
    """In the no-POSIX session this proves the functions are gone; in a normal one, that they exist here."""
    present = [name for name in no_posix.POSIX_ONLY if hasattr(os, name)]
    if no_posix.requested():
        assert present == []
    elif sys.platform == "linux":
        assert {"pread", "preadv", "pwrite", "posix_fadvise", "fchmod"} <= set(present)


# --- the same bytes with and without the POSIX-only functions --------------------------------


def _big_model() -> onnx.ModelProto:
    """One weight over two 16 MB streaming chunks, with varied data: a chunk at a wrong offset shows."""
    n = 2500
    w = (np.arange(n * n, dtype=np.float32).reshape(n, n) % 9973 - 4986.0) / 997.0
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [tensor("W", w)],
    )


_CASES = {
    "mlp": (lambda: embedding_mlp(vocab=512, hidden=64), False),
    "mlp_ext": (lambda: embedding_mlp(vocab=512, hidden=64), True),
    "if": (lambda: if_subgraph_model(64), False),
    "big": (_big_model, False),
    "big_ext": (_big_model, True),
}

_CONVERT_ALL = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import no_posix
    stripped = no_posix.strip()
    assert "pread" in stripped and "pwrite" in stripped, stripped
    from olive_bf16_pass import ConversionOptions, convert_file
    for src, dst, external in json.loads(sys.argv[1]):
        convert_file(src, dst, ConversionOptions(min_elements=16), save_as_external_data=external)
    """
)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.skipif(no_posix.requested(), reason="compares against a normal run in this process")
def test_outputs_are_byte_identical_without_posix_calls(tmp_path):
    jobs = []
    for name, (build, external_in) in _CASES.items():
        src_dir = tmp_path / "src" / name
        src_dir.mkdir(parents=True)
        src = save(build(), src_dir / "m.onnx", external=external_in)
        for external_out in (False, True):
            for side in ("posix", "portable"):
                out = tmp_path / side / f"{name}_{int(external_out)}"
                out.mkdir(parents=True)
                jobs.append((side, str(src), str(out / "m.onnx"), external_out))
    for side, src, dst, external in jobs:
        if side == "posix":
            convert_file(src, dst, ConversionOptions(min_elements=16), save_as_external_data=external)
    portable = [job[1:] for job in jobs if job[0] == "portable"]
    import json

    proc = subprocess.run(
        [sys.executable, "-c", _CONVERT_ALL, json.dumps(portable)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder in sorted((tmp_path / "posix").iterdir()):
        twin = tmp_path / "portable" / folder.name
        assert _digests(folder) == _digests(twin), folder.name
    # and the multi-chunk output holds the right values, not just the same ones twice
    big = tmp_path / "posix" / "big_1" / "m.onnx"
    x = rand((1, 2500), 3)
    ref = run(_big_model(), {"x": x})[0]
    got = run(big, {"x": x})[0]
    assert np.allclose(got, ref, rtol=0.02, atol=0.02 * float(np.abs(ref).max()))


# --- Windows file semantics --------------------------------------------------------------------


def _open_paths() -> set[str]:
    fds = Path("/proc/self/fd")
    found = set()
    for fd in fds.iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="lists open files through /proc (Linux)")
@pytest.mark.parametrize("external", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_no_handle_is_open_on_a_file_when_it_is_replaced(tmp_path, monkeypatch, external, in_place):
    """Windows cannot rename over, or delete, a file this process still has open."""
    src = save(_big_model(), tmp_path / "m.onnx", external=external)
    dst = src if in_place else tmp_path / "out.onnx"
    real_replace = os.replace
    seen = []

    def replace(a, b):
        held = _open_paths() & {str(Path(a).resolve()), str(Path(b).resolve()), str(src.resolve())}
        seen.append((Path(b).name, held))
        real_replace(a, b)

    monkeypatch.setattr(writer.os, "replace", replace)
    convert_file(src, dst, ConversionOptions(min_elements=16), save_as_external_data=external, in_place=in_place)
    assert seen and all(not held for _, held in seen), seen
    onnx.checker.check_model(str(dst), full_check=True)


def test_a_locked_output_gets_a_clear_error_and_no_leftovers(tmp_path, monkeypatch):
    """What Windows says when an ONNX Runtime session or Olive holds OUT open."""
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    dst = tmp_path / "out.onnx"
    dst.write_bytes(b"held open elsewhere")

    def replace(a, b):
        raise PermissionError(13, "The process cannot access the file because it is being used by another process")

    monkeypatch.setattr(writer.os, "replace", replace)
    monkeypatch.setattr(destination, "_WINDOWS", True)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(ConversionError, match="another program probably has it open.*Close it.*previous output"):
        convert_file(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx"]
    assert dst.read_bytes() == b"held open elsewhere"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before


# --- external-data locations, judged the same on every platform -------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "..\\secret.bin",
        "sub\\..\\..\\secret.bin",
        "../secret.bin",
        "C:\\Windows\\secret.bin",
        "C:secret.bin",
        "\\\\server\\share\\secret.bin",
        "\\secret.bin",
        "/etc/secret.bin",
        "weights.bin:stream",
        "we\0ights.bin",
        "",
    ],
)
def test_locations_that_may_leave_the_folder_are_refused_everywhere(location):
    assert source.location_parts(location) is None


@pytest.mark.parametrize(
    ("location", "parts"),
    [("weights.bin", ["weights.bin"]), ("sub/w.bin", ["sub", "w.bin"]), ("sub\\w.bin", ["sub", "w.bin"]),
     ("./sub//w.bin", ["sub", "w.bin"])],
)
def test_relative_locations_split_on_both_separators(location, parts):
    assert source.location_parts(location) == parts


def _with_location(model: onnx.ModelProto, folder: Path, location: str) -> Path:
    """Save ``model`` with every large initializer's data at ``location`` (as Windows writes it)."""
    path = save(model, folder / "m.onnx", external=True)
    data = folder / "m.onnx.data"
    proto = onnx.load(path, load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, path)
    target = folder.joinpath(*location.replace("\\", "/").split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    data.replace(target)
    return path


def test_a_backslash_location_inside_the_folder_converts(tmp_path):
    model = embedding_mlp(vocab=512, hidden=64)
    src = _with_location(model, tmp_path, "weights\\m.data")
    dst = tmp_path / "out.onnx"
    convert_file(src, dst, ConversionOptions(min_elements=16))
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    ref = run(model, {"ids": ids})[0]
    assert np.allclose(run(dst, {"ids": ids})[0], ref, atol=0.05 * max(1.0, float(np.abs(ref).max())))


def test_a_backslash_escape_is_refused_on_linux_too(tmp_path):
    inner = tmp_path / "model"
    inner.mkdir()
    src = _with_location(embedding_mlp(vocab=512, hidden=64), inner, "sub\\m.data")
    proto = onnx.load(src, load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "..\\model\\sub\\m.data"
    onnx.save(proto, src)
    with pytest.raises(ConversionError, match="not a plain relative path inside the model's folder"):
        convert_file(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("name", ["sub\\w.data", "..\\w.data", "C:w.data", "w.data:s"])
def test_external_data_names_with_folders_are_refused_on_every_platform(tmp_path, name):
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    with pytest.raises(ConversionError, match="must be a plain file name"):
        convert_file(src, tmp_path / "out.onnx", save_as_external_data=True, external_data_name=name)


def test_a_long_output_name_keeps_its_temporaries_short(tmp_path, monkeypatch):
    """Temporaries must not push a legal name over the file system's limit (or Windows' MAX_PATH)."""
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    dst = tmp_path / ("m" * 245 + ".onnx")  # 250 characters: legal, and ".NAME.xxxxxxxx.data.tmp" would not be
    names = []
    real = Destination.new_temporary

    def new_temporary(self, suffix, created):
        out, path = real(self, suffix, created)
        names.append(path.name)
        return out, path

    monkeypatch.setattr(Destination, "new_temporary", new_temporary)
    convert_file(src, dst, save_as_external_data=True, external_data_name="w.data")
    assert dst.is_file() and (tmp_path / "w.data").is_file()
    assert names and all(len(n) < 90 for n in names), names
    assert Destination(dst).temporaries() == []


# --- the source names nothing Windows lacks ----------------------------------------------------

_POSIX_MODULES = {"fcntl", "resource", "termios", "pwd", "grp", "posix", "pty", "tty"}
_POSIX_SIGNALS = {"SIGKILL", "SIGSTOP", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGPIPE"}


def _posix_uses(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in _POSIX_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _POSIX_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in no_posix.POSIX_ONLY:
                found.append(f"os.{node.attr}")
            if node.value.id == "signal" and node.attr in _POSIX_SIGNALS:
                found.append(f"signal.{node.attr}")
    return [f"{path.relative_to(root)}: {name}" for name in found]


def test_the_package_names_no_posix_only_module_or_function():
    uses = [u for path in sorted(PACKAGE.rglob("*.py")) for u in _posix_uses(path)]
    assert uses == []


def test_the_guard_sees_posix_calls(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import fcntl\nimport os, signal\nos.pwrite(1, b'', 0)\nos.kill(1, signal.SIGKILL)\nos.replace('a', 'b')\n")
    assert [u.split(": ")[1] for u in _posix_uses(sample, tmp_path)] == ["fcntl", "os.pwrite", "signal.SIGKILL"]
