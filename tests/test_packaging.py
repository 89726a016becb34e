"""The install: light by default, and never over a vendor's ONNX Runtime.

A plain ``pip install olive-bf16-pass`` must bring only what the converter needs (onnx, numpy,
ml_dtypes): no ONNX Runtime distribution (Ryzen AI's ``onnxruntime-vitisai`` would be replaced by
the stock build and the NPU provider would disappear), no torch, transformers or olive-ai.
These tests build the wheel and install it into fresh environments; the packages come from the
package registry (pip's cache in CI), never from a model hub.
"""

from __future__ import annotations

import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from helpers import embedding_mlp, save

REPO = Path(__file__).parent.parent
HEAVY = {"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-vitisai", "torch", "olive-ai",
         "transformers"}
pytestmark = pytest.mark.slow


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(wheel: Path) -> list[tuple[str, str]]:
    """(distribution, marker) for each Requires-Dist of the wheel."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.message_from_bytes(z.read(meta))
    found = []
    for line in message.get_all("Requires-Dist") or []:
        spec, _, marker = line.partition(";")
        found.append((_canonical(re.split(r"[\s\[<>=!~(]", spec.strip(), maxsplit=1)[0]), marker.strip()))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("olive_bf16_pass-*.whl"))


def test_the_wheel_requires_only_the_converter_s_packages(wheel):
    unconditional = {name for name, marker in _requirements(wheel) if "extra ==" not in marker}
    assert unconditional == {"onnx", "numpy", "ml-dtypes"}
    assert not unconditional & HEAVY


def test_onnxruntime_and_olive_come_only_with_their_extras(wheel):
    by_extra: dict[str, set[str]] = {}
    for name, marker in _requirements(wheel):
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra:
            by_extra.setdefault(extra.group(1), set()).add(name)
    assert by_extra["cpu"] == {"onnxruntime"}
    assert "olive-ai" in by_extra["olive"] and not by_extra["olive"] & {"onnxruntime", "onnxruntime-gpu"}
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"Requires-Dist: olive-ai.*<0\.14.*extra == ['\"]olive['\"]", meta), meta


def test_olive_itself_requires_no_onnxruntime_distribution():
    """So the [olive] extra, too, leaves a vendor's build alone (Olive's own pattern: one extra per build)."""
    requires = importlib.metadata.requires("olive-ai") or []
    unconditional = {_canonical(re.split(r"[\s\[<>=!~(;]", r, maxsplit=1)[0]) for r in requires if "extra ==" not in r}
    assert unconditional and not unconditional & {"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml"}


# --- installs into fresh environments ---------------------------------------------------------


def _venv(python: str, where: Path) -> Path:
    subprocess.run([python, "-m", "venv", str(where)], check=True, capture_output=True, timeout=300)
    return where / ("Scripts" if os.name == "nt" else "bin")


def _run(bin_dir: Path, *args, check=True, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    proc = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=env, timeout=900, **kwargs)
    if check:
        assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _site_packages(bin_dir: Path) -> Path:
    out = _run(bin_dir, bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    return Path(out.stdout.strip())


def _vitisai_stand_in(site: Path) -> Path:
    """A copy of this stock onnxruntime whose distribution metadata says ``onnxruntime-vitisai``."""
    package = Path(onnxruntime.__file__).parent
    shutil.copytree(package, site / "onnxruntime")
    dist = importlib.metadata.distribution("onnxruntime")
    stock_info = Path(dist._path)  # the .dist-info folder
    vendor_info = site / stock_info.name.replace("onnxruntime-", "onnxruntime_vitisai-")
    shutil.copytree(stock_info, vendor_info)
    for name in ("METADATA", "RECORD"):
        path = vendor_info / name
        text = path.read_text(encoding="utf-8")
        text = text.replace("Name: onnxruntime\n", "Name: onnxruntime-vitisai\n")
        path.write_text(text.replace(stock_info.name, vendor_info.name), encoding="utf-8")
    return vendor_info


_CHECK_RUNTIME = """
import importlib.metadata as m, json, onnxruntime
from olive_bf16_pass.optional import onnxruntime_distribution
try:
    stock = m.version("onnxruntime")
except m.PackageNotFoundError:
    stock = None
print(json.dumps({"providers": m.packages_distributions().get("onnxruntime"), "stock": stock,
                  "file": onnxruntime.__file__, "ours": onnxruntime_distribution()}))
"""


def test_installing_keeps_a_vendor_onnxruntime(wheel, tmp_path):
    bin_dir = _venv(sys.executable, tmp_path / "ryzen-ai")
    site = _site_packages(bin_dir)
    vendor_info = _vitisai_stand_in(site)
    marker = site / "onnxruntime" / "capi" / "vendor-build-marker.txt"
    marker.write_text("the NPU build")
    _run(bin_dir, bin_dir / "python", "-m", "pip", "install", "-q", wheel)

    import json

    state = json.loads(_run(bin_dir, bin_dir / "python", "-c", _CHECK_RUNTIME).stdout)
    assert state["providers"] == ["onnxruntime-vitisai"], state
    assert state["stock"] is None and state["ours"] == "onnxruntime-vitisai"
    assert Path(state["file"]).parent == site / "onnxruntime"
    assert marker.read_text() == "the NPU build" and vendor_info.is_dir()
    # and the converter runs there
    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    _run(bin_dir, bin_dir / "olive-bf16", "convert", src, tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").is_file()


def _python312() -> str | None:
    """A working Python 3.12: pyenv's (these machines and CI), else one on PATH (a pyenv shim may not run)."""
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = [str(p) for p in sorted(pyenv.glob("3.12*/bin/python3.12"))] if pyenv.is_dir() else []
    candidates += [p for p in (shutil.which("python3.12"),) if p]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import sys, venv; print(sys.version_info[:2])"], capture_output=True)
        if probe.returncode == 0 and b"(3, 12)" in probe.stdout:
            return python
    return None


_LIGHT_CHECK = """
import importlib.util, json, sys
import numpy as np, onnx, ml_dtypes
from olive_bf16_pass import ConversionOptions, convert_file
heavy = [m for m in ("onnxruntime", "torch", "transformers", "olive") if importlib.util.find_spec(m)]
src, dst = sys.argv[1], sys.argv[2]
report = convert_file(src, dst, ConversionOptions(min_elements=16))
onnx.checker.check_model(dst, full_check=True)
before = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(src).graph.initializer}
after = {t.name: t for t in onnx.load(dst).graph.initializer}
exact = 0
for record in report.converted:
    stored = after[record.stored_name]
    assert stored.data_type == onnx.TensorProto.BFLOAT16
    bits = np.frombuffer(stored.raw_data, dtype=np.uint16)
    expected = before[record.name].astype(ml_dtypes.bfloat16).view(np.uint16).ravel()
    exact += int(np.array_equal(bits, expected))
print(json.dumps({"python": list(sys.version_info[:2]), "heavy": heavy, "converted": len(report.converted),
                  "exact": exact}))
"""


def test_light_install_converts_on_python_3_12(wheel, tmp_path):
    python = _python312()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs the Python 3.12 light-install job: no python3.12 found (pyenv has one here)")
        pytest.skip("no python3.12 on this machine")
    bin_dir = _venv(python, tmp_path / "light")
    _run(bin_dir, bin_dir / "python", "-m", "pip", "install", "-q", wheel)

    import json

    src = save(embedding_mlp(vocab=512, hidden=64), tmp_path / "m.onnx")
    state = json.loads(_run(bin_dir, bin_dir / "python", "-c", _LIGHT_CHECK, src, tmp_path / "api.onnx").stdout)
    assert state["python"] == [3, 12]
    assert state["heavy"] == []  # nothing heavy came with the light install
    assert state["converted"] >= 3 and state["exact"] == state["converted"]

    cli = _run(bin_dir, bin_dir / "olive-bf16", "convert", src, tmp_path / "cli.onnx", "--min-elements", "16",
               "--report", tmp_path / "r.json")
    assert "converted" in cli.stdout and (tmp_path / "r.json").is_file()
    assert (tmp_path / "cli.onnx").read_bytes() == (tmp_path / "api.onnx").read_bytes()
    inspect = _run(bin_dir, bin_dir / "python", "-m", "olive_bf16_pass", "inspect", tmp_path / "cli.onnx")
    assert "bfloat16" in inspect.stdout

    # a feature that needs Olive says, in one line, what to install
    missing = _run(bin_dir, bin_dir / "olive-bf16", "package-config", check=False)
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "olive-bf16-pass[olive]"' in lines[0], missing.stderr
    # an importable olive-free onnxruntime check
    probe = _run(
        bin_dir, bin_dir / "python", "-c",
        "from olive_bf16_pass.optional import import_onnxruntime\nimport_onnxruntime('the evaluator')", check=False,
    )
    assert probe.returncode == 1 and 'olive-bf16-pass[cpu]' in probe.stderr and "onnxruntime-vitisai" in probe.stderr


def test_the_numbers_of_the_light_check_are_real():
    """The light job compares with ml_dtypes bit for bit; make sure that comparison can fail."""
    import ml_dtypes

    x = np.array([1.00390625, 1.01171875], dtype=np.float32)  # ties: nearest-even vs truncation differ
    nearest = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    truncated = (x.view(np.uint32) >> 16).astype(np.uint16)
    assert not np.array_equal(nearest, truncated)
