"""Compile once with the Vitis AI EP and keep the result: an EP-context model (ONNX Runtime's
``ep.context_*`` session options) and the EP's cache, made by a child process that a watchdog stops
when it runs past its time limit (compiles hang: RyzenAI-SW #312).

The options are pure functions, checked against AMD's documented keys in the tests:
- session options ``ep.context_enable``, ``ep.context_file_path``, ``ep.context_embed_mode``
  (amd/ryzen-ai-documentation docs/modelrun.rst, "ONNX Runtime EP Context Cache");
- provider options ``config_file`` (BF16: the app must pass the same file, docs/app_development.rst,
  "VitisAI EP Provider Options"), ``cache_dir``, ``cache_key`` (docs/modelrun.rst).
Without ``VitisAIExecutionProvider`` nothing runs: one line says so (never a CPU model called compiled).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from olive_bf16_pass.errors import ConversionError
from olive_bf16_pass.providers import VITISAI

__all__ = [
    "DEFAULT_TIMEOUT_S", "CompileFailed", "CompileResult", "VitisAIUnavailable", "context_model_name", "provider_options",
    "require_vitisai", "run_compile", "session_config_entries",
]

DEFAULT_TIMEOUT_S = 3600  # BF16 compiles take minutes (field notes section 4); an hour means it hangs
EP_CONTEXT_OP = "EPContext"  # com.microsoft::EPContext, the node an EP-context model holds


class VitisAIUnavailable(ConversionError):
    """The Vitis AI EP is not in this Python's ONNX Runtime."""


class CompileFailed(ConversionError):
    """The compile failed, timed out, or produced no EP-context node."""


def unavailable_message(available: list[str] | None = None, why: str = "") -> str:
    have = f" (this onnxruntime offers {available})" if available is not None else ""
    return (f"{VITISAI} is not available{have}{why}: compiling for the Ryzen AI NPU needs AMD's Ryzen AI Software "
            "environment (its onnxruntime-vitisai build) on a Strix / Krackan or newer NPU; activate it and run "
            "again. Nothing was compiled.")


def require_vitisai():
    """ONNX Runtime, when it offers the Vitis AI EP; else :class:`VitisAIUnavailable`, one line."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise VitisAIUnavailable(unavailable_message(why=" (onnxruntime is not installed)")) from None
    available = list(ort.get_available_providers())
    if VITISAI not in available:
        raise VitisAIUnavailable(unavailable_message(available))
    return ort


def context_model_name(model: Path) -> str:
    return f"{model.stem}_ctx.onnx"


def session_config_entries(context_file: str | Path, embed: bool = True) -> dict[str, str]:
    """ONNX Runtime session config entries that make the EP write its compiled context into ``context_file``."""
    return {
        "ep.context_enable": "1",
        "ep.context_file_path": str(context_file),
        "ep.context_embed_mode": "1" if embed else "0",
    }


def provider_options(config_file: str | Path, cache_dir: str | Path, cache_key: str) -> dict[str, str]:
    """The Vitis AI provider options of a BF16 compile: the same ``config_file`` the app will pass."""
    return {"config_file": str(config_file), "cache_dir": str(cache_dir), "cache_key": cache_key}


@dataclass
class CompileResult:
    context_model: Path
    seconds: float
    log: Path


def run_compile(model: Path, context_file: Path, options: dict[str, str], entries: dict[str, str],
                timeout_s: float = DEFAULT_TIMEOUT_S, log: Path | None = None,
                command: list[str] | None = None) -> CompileResult:
    """Create a Vitis AI session on ``model`` in a child process (the compile), stopped after ``timeout_s``.

    ``command`` replaces the child's command line (tests); the child gets the job as JSON on stdin.
    """
    log = log or context_file.with_suffix(".compile.log")
    job = json.dumps({"model": str(model), "provider_options": options, "entries": entries})
    command = command or [sys.executable, "-m", "olive_bf16_pass.vitisai.compile"]
    started = time.monotonic()
    with open(log, "wb") as out:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
        try:
            child.communicate(job.encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise CompileFailed(
                f"the Vitis AI compile of {model.name} ran past its limit of {timeout_s:g} s and was stopped "
                f"(compiles can hang: RyzenAI-SW #312). Its log is {log}; raise the limit (timeout_s, --timeout) if "
                "the compile was progressing, else check the model with olive-bf16 check."
            ) from None
        except BaseException:
            child.kill()
            child.wait()
            raise
    seconds = time.monotonic() - started
    if child.returncode != 0:
        tail = _tail(log)
        raise CompileFailed(f"the Vitis AI compile of {model.name} failed (exit {child.returncode}): {tail} "
                            f"(full log: {log})")
    if not context_file.is_file():
        raise CompileFailed(f"the Vitis AI session was created but wrote no EP-context model at {context_file}: "
                            f"nothing to ship (log: {log}).")
    if not has_ep_context(context_file):
        raise CompileFailed(f"{context_file.name} holds no {EP_CONTEXT_OP} node: the EP compiled nothing and ONNX "
                            f"Runtime would run it on the CPU (a silent fallback, RyzenAI-SW #197, #374). Read the "
                            f"log ({log}) and check the model with olive-bf16 check.")
    return CompileResult(context_file, seconds, log)


def has_ep_context(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type == EP_CONTEXT_OP for n in model.graph.node)


def _tail(log: Path, limit: int = 300) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    text = lines[-1] if lines else "(no output)"
    return text if len(text) <= limit else "..." + text[-limit:]


def _child() -> int:
    """The compile itself: one session with the EP-context entries; its creation is the compile."""
    job = json.loads(sys.stdin.read())
    ort = require_vitisai()
    so = ort.SessionOptions()
    for key, value in job["entries"].items():
        so.add_session_config_entry(key, value)
    session = ort.InferenceSession(job["model"], so, providers=[VITISAI], provider_options=[job["provider_options"]])
    print("providers:", session.get_providers(), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_child())
    except VitisAIUnavailable as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
