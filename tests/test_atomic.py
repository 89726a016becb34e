"""Atomic output: a conversion killed at any moment leaves OUT absent, old, or complete.

The writer streams into ``.OUT.XXXXXX.tmp`` (and ``.OUT.XXXXXX.data.tmp``) beside OUT, checks the
result, then renames: data first, model last. These tests kill a real conversion with SIGKILL
(no cleanup code runs) at the moments that matter and look at what is left:

- during the write: OUT is absent or byte-identical to the old one; the partial temporary stays
  (SIGKILL runs no cleanup) and the next run into OUT says so on stderr, leaving it to the user:
  it cannot tell a dead run's temporary from a live concurrent one's;
- between the two renames of an external-data output over an old one: the old model must not be
  left pointing at the new data file (it would read BF16 bytes at FP32 offsets). The writer
  removes the old model before replacing its data file, so OUT is absent until the new one lands.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from _fuzz_models import big_model, matmul_model, run_session, save_with_external_data, sha256, temp_leftovers

from olive_bf16_pass import guards
from olive_bf16_pass.cli import main
from olive_bf16_pass.convert import convert_file
from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.io import streamer, writer
from olive_bf16_pass.options import ConversionOptions

REPO = Path(__file__).resolve().parents[1]
BIG_MB = 200

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and POSIX rename semantics")


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A 256 MB single-file FP32 model, built once for the module."""
    path = tmp_path_factory.mktemp("big") / "big.onnx"
    big_model(path, BIG_MB)
    return path


def _converter(src: Path, dst: Path, *, external: bool = False, in_place: bool = False, kill_after_rename: int = 0):
    """A child process that converts src to dst; with kill_after_rename=N it SIGKILLs itself after the N-th rename."""
    code = f"""
        import os, signal
        from olive_bf16_pass.io import streamer, writer
        from olive_bf16_pass.convert import convert_file
        from olive_bf16_pass.options import ConversionOptions
        renames = [0]
        real_replace = os.replace
        def replace(a, b):
            real_replace(a, b)
            renames[0] += 1
            if renames[0] == {kill_after_rename}:
                os.kill(os.getpid(), signal.SIGKILL)
        writer.os.replace = replace
        # each 16 MB chunk waits a little, so a watcher cannot miss the write however fast the disk
        import time
        real_chunk = streamer.Streamer._chunk
        def slow_chunk(*args):
            time.sleep(0.05)
            return real_chunk(*args)
        streamer.Streamer._chunk = slow_chunk
        convert_file({str(src)!r}, {str(dst)!r}, ConversionOptions(min_elements=1),
                     save_as_external_data={external}, in_place={in_place})
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stderr=subprocess.PIPE)


def _kill_when_temp_appears(proc: subprocess.Popen, folder: Path, suffix: str = ".tmp", timeout: float = 120.0):
    """SIGKILL ``proc`` as soon as a temporary ending in ``suffix`` holds data; return its name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in temp_leftovers(folder):
            if name.endswith(suffix) and (folder / name).stat().st_size > 0:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return name
        if proc.poll() is not None:
            pytest.fail(f"the conversion ended (rc {proc.returncode}) before a temporary was seen")
        time.sleep(0.002)
    proc.kill()
    pytest.fail("no temporary appeared")


def test_sigkill_during_write_leaves_no_output(big, tmp_path, capsys):
    dst = tmp_path / "out.onnx"
    source_hash = sha256(big)
    proc = _converter(big, dst)
    temp = _kill_when_temp_appears(proc, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists()
    # what SIGKILL leaves: the one partial temporary, named after OUT, shorter than a full output
    assert temp_leftovers(tmp_path) == [temp]
    assert temp.startswith(".out.onnx.") and temp.endswith(".tmp")
    assert (tmp_path / temp).stat().st_size < BIG_MB * 2**20 // 2
    # the next run succeeds, names the stale temporary, and leaves it for the user to delete
    assert main(["convert", str(big), str(dst), "--min-elements", "1", "-q"]) == 0
    err = capsys.readouterr().err
    assert "interrupted run" in err and temp in err
    assert temp_leftovers(tmp_path) == [temp]
    assert sha256(big) == source_hash
    assert dst.stat().st_size > BIG_MB * 2**20 // 2 - 4096
    model = onnx.load(str(dst), load_external_data=False)
    assert all(t.data_type == onnx.TensorProto.BFLOAT16 for t in model.graph.initializer)


def test_sigkill_during_write_keeps_the_old_output(big, tmp_path):
    dst = tmp_path / "out.onnx"
    onnx.save(matmul_model(), str(dst))
    old = sha256(dst)
    _kill_when_temp_appears(_converter(big, dst), tmp_path)
    assert sha256(dst) == old


def test_sigkill_during_external_data_write_keeps_the_old_pair(big, tmp_path):
    dst = tmp_path / "out.onnx"
    save_with_external_data(matmul_model(), dst)  # the old pair: out.onnx + out.onnx.data
    old = (sha256(dst), sha256(tmp_path / "out.onnx.data"))
    _kill_when_temp_appears(_converter(big, dst, external=True), tmp_path, suffix=".data.tmp")
    assert (sha256(dst), sha256(tmp_path / "out.onnx.data")) == old
    x = np.ones((1, 64), np.float32)
    run_session(dst, {"x": x})  # still a working model


def test_sigkill_during_in_place_keeps_the_input(big, tmp_path):
    src = tmp_path / "in.onnx"
    shutil.copyfile(big, src)
    before = sha256(src)
    _kill_when_temp_appears(_converter(src, src, in_place=True), tmp_path)
    assert sha256(src) == before


def _old_external_pair(folder: Path) -> tuple[Path, np.ndarray]:
    """An FP32 model with external data at folder/out.onnx, and its output for x = ones."""
    dst = folder / "out.onnx"
    save_with_external_data(matmul_model(n=256, seed=3), dst)
    return dst, run_session(dst, {"x": np.ones((1, 256), np.float32)})[0]


@pytest.mark.parametrize("kill_after_rename", [1, 2, 3])
def test_sigkill_between_the_renames_never_pairs_old_model_with_new_data(tmp_path, kill_after_rename):
    """Killed between any two renames (old model aside, old data aside, new data in, new model in): OUT is
    absent or reads its own data, never the old model beside the new data; the old files wait beside it."""
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "m.onnx"
    onnx.save(matmul_model(n=256, seed=7), str(src))
    dst, old_output = _old_external_pair(tmp_path)
    old_data = sha256(tmp_path / "out.onnx.data")
    proc = _converter(src, dst, external=True, kill_after_rename=kill_after_rename)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not dst.exists()  # the old model went aside first: OUT is absent, not wrong
    previous = sorted(p.name for p in tmp_path.glob(".out.onnx.*.previous"))
    assert previous == [".out.onnx.0.previous", ".out.onnx.1.previous"][: min(kill_after_rename, 2)]
    if kill_after_rename == 3:
        assert sha256(tmp_path / "out.onnx.data") != old_data  # the new data landed, its model did not
    # the next run repairs it
    assert main(["convert", str(src), str(dst), "--external-data", "--min-elements", "1", "-q"]) == 0
    x = np.ones((1, 256), np.float32)
    np.testing.assert_allclose(run_session(dst, {"x": x})[0], run_session(src, {"x": x})[0], rtol=0.02, atol=0.5)


def test_in_place_external_data_killed_between_renames(tmp_path):
    """In place with external data: at worst the model is absent, never silently wrong."""
    dst, _ = _old_external_pair(tmp_path)
    proc = _converter(dst, dst, external=True, in_place=True, kill_after_rename=1)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists()


def test_sigkill_after_the_last_rename_leaves_a_complete_output(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(n=256), str(src))
    dst = tmp_path / "out.onnx"
    proc = _converter(src, dst, external=True, kill_after_rename=2)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert temp_leftovers(tmp_path) == []
    x = np.ones((1, 256), np.float32)
    np.testing.assert_allclose(run_session(dst, {"x": x})[0], run_session(src, {"x": x})[0], rtol=0.02, atol=0.5)


def test_an_output_that_fails_its_check_is_never_renamed(tmp_path, monkeypatch):
    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(), str(src))
    dst = tmp_path / "out.onnx"
    onnx.save(matmul_model(seed=5), str(dst))
    old = sha256(dst)

    def failing_check(result, load_original):
        raise ConversionError("the converted model fails onnx.checker, so it was not written: test")

    monkeypatch.setattr(guards, "check_output", failing_check)
    for external in (False, True):
        with pytest.raises(ConversionError, match="not written"):
            convert_file(src, dst, ConversionOptions(min_elements=1), save_as_external_data=external)
        assert sha256(dst) == old and temp_leftovers(tmp_path) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx"]


def test_renames_come_after_complete_files(tmp_path, monkeypatch):
    """Every rename moves a complete, fsynced temporary from OUT's own folder; data before model."""
    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(n=128), str(src))
    dst = tmp_path / "out" / "b.onnx"
    dst.parent.mkdir()
    seen = []
    real_replace = os.replace

    def replace(a, b):
        a, b = Path(a), Path(b)
        seen.append((a.name, b.name, a.stat().st_size))
        assert a.parent == b.parent == dst.parent and a.name.startswith(".b.onnx.") and a.name.endswith(".tmp")
        real_replace(a, b)

    monkeypatch.setattr(writer.os, "replace", replace)
    convert_file(src, dst, ConversionOptions(min_elements=1), save_as_external_data=True)
    assert [s[1] for s in seen] == ["b.onnx.data", "b.onnx"]
    assert seen[0][2] == (dst.parent / "b.onnx.data").stat().st_size >= 128 * 128 * 2


def test_interrupt_mid_write_removes_the_temporaries(tmp_path, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt) runs the cleanup that SIGKILL cannot: no temporaries, exit 130."""
    src = tmp_path / "m.onnx"
    onnx.save(matmul_model(n=128), str(src))
    real_copy, real_small = streamer.Streamer.copy, streamer.Streamer.small_located

    def copy(self, tensor, out, position, conversion):
        real_copy(self, tensor, out, position, conversion)
        raise KeyboardInterrupt

    def small_located(self, items):  # small tensors are read in batches, in the writer's thread
        real_small(self, items)
        raise KeyboardInterrupt

    monkeypatch.setattr(streamer.Streamer, "copy", copy)
    monkeypatch.setattr(streamer.Streamer, "small_located", small_located)
    for extra in ([], ["--external-data"]):
        assert main(["convert", str(src), str(tmp_path / "out.onnx"), *extra]) == 130
        assert "interrupted; nothing was written" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_sigterm_mid_write_removes_the_temporaries(big, tmp_path):
    """SIGTERM (timeout, docker stop, a cancelled CI job) unwinds like Ctrl-C: one line, exit 143, nothing left."""
    dst = tmp_path / "out.onnx"
    before = sha256(big)
    proc = subprocess.Popen(
        [sys.executable, "-m", "olive_bf16_pass", "convert", str(big), str(dst), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + 120
    while not temp_leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.skip("the conversion ended before a temporary was seen (a machine too fast to catch mid-write)")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert err.decode().strip() == "olive-bf16: terminated; nothing was written"
    assert temp_leftovers(tmp_path) == [] and not dst.exists() and sha256(big) == before


class _ImportSignal:
    """A meta path finder that stops the import of olive_bf16_pass.cli as a signal would."""

    def __init__(self, act):
        self.act = act

    def find_spec(self, fullname, path, target=None):
        if fullname == "olive_bf16_pass.cli":
            self.act()
        return None


@pytest.mark.parametrize("how", ["sigint", "sigterm"])
def test_a_signal_while_the_command_line_is_still_imported_is_one_line(monkeypatch, capsys, how):
    """The entry point holds Ctrl-C and SIGTERM before it imports anything else: a signal during the
    imports (argparse, logging, then onnx) ends the run with one line and 130 / 143, no traceback."""
    from olive_bf16_pass import entry

    def interrupt():
        raise KeyboardInterrupt

    def terminate():
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to our handler before the next bytecode

    monkeypatch.delitem(sys.modules, "olive_bf16_pass.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_ImportSignal(interrupt if how == "sigint" else terminate), *sys.meta_path])
    before = signal.getsignal(signal.SIGTERM)
    assert entry.main(["inspect", "m.onnx"]) == (130 if how == "sigint" else 143)
    assert capsys.readouterr().err.strip().splitlines() == [
        "olive-bf16: interrupted; nothing was written" if how == "sigint" else "olive-bf16: terminated; nothing was written"
    ]
    assert signal.getsignal(signal.SIGTERM) is before  # the process's handler is put back


def test_the_commands_start_at_the_entry_point():
    """``olive-bf16`` and ``python -m olive_bf16_pass`` both run entry.main, which imports nothing heavy."""
    assert 'olive-bf16 = "olive_bf16_pass.entry:main"' in (REPO / "pyproject.toml").read_text()
    assert "from olive_bf16_pass.entry import main" in (REPO / "olive_bf16_pass" / "__main__.py").read_text()
    code = "import sys, olive_bf16_pass.entry; print(sorted(m for m in ('argparse', 'logging', 'onnx', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
