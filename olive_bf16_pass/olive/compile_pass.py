"""VitisAIContextCompile: compile the model once for the Ryzen AI NPU and keep what an app ships.

The last pass of a Ryzen AI recipe: it creates a Vitis AI session with ONNX Runtime's EP-context
options and writes the deploy folder (vitisai/deploy.py: the EP-context model, the config_file, the
EP cache, manifest.json, README.md) as its output model, whose inference settings load the
precompiled model the way an app will. Olive evaluates that output, and writes it to the recipe's
output_dir only when the evaluation (with its thresholds) passes. Without VitisAIExecutionProvider
the pass fails at once with one line; it never hands on a CPU model as compiled. A compile that runs
past ``timeout_s`` is stopped (RyzenAI-SW #312).
"""

from __future__ import annotations

import logging
from pathlib import Path

from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.passes import Pass
from olive.passes.pass_config import BasePassConfig, PassConfigParam

from olive_bf16_pass.errors import ConversionError, one_line
from olive_bf16_pass.olive.attributes import RECORD_KEY
from olive_bf16_pass.providers import VITISAI

__all__ = ["VitisAIContextCompile"]

logger = logging.getLogger("olive.passes.onnx.vitisai_context_compile")


class VitisAIContextCompile(Pass):
    """Precompile for the Vitis AI EP (EP context) into a deploy folder; needs AMD's Ryzen AI Software."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        from olive_bf16_pass.vitisai.compile import DEFAULT_TIMEOUT_S

        return {
            "config_file": PassConfigParam(
                type_=str, required=True,
                description="The vaiml compile options (recipes/vaiml_config.json); copied into the deploy folder, "
                            "and the app must pass the same file."),
            "cache_key": PassConfigParam(
                type_=str | None, default_value=None,
                description="The cache key's base (default: the model's name); the model hash and the ONNX Runtime / "
                            "Ryzen AI versions are appended."),
            "timeout_s": PassConfigParam(
                type_=float, default_value=float(DEFAULT_TIMEOUT_S),
                description="Stop a compile that runs longer than this many seconds (RyzenAI-SW #312)."),
            "embed_mode": PassConfigParam(
                type_=bool, default_value=True,
                description="ep.context_embed_mode: true puts the compiled context inside the EP-context model."),
            "check": PassConfigParam(
                type_=bool, default_value=True,
                description="Run the readiness check (olive-bf16 check --target vitisai) before compiling."),
        }

    @classmethod
    def is_accelerator_agnostic(cls, accelerator_spec: AcceleratorSpec) -> bool:
        return False

    def _run_for_config(self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
                        ) -> ONNXModelHandler:
        from olive_bf16_pass.vitisai.compile import require_vitisai
        from olive_bf16_pass.vitisai.deploy import compile_to_folder

        try:
            require_vitisai()  # at once: no CPU model is ever handed on as compiled
            source = Path(model.model_path)
            if source.is_dir():
                source = source / (model.onnx_file_name or next(p.name for p in source.glob("*.onnx")))
            if config.check:
                from olive_bf16_pass.vitisai.readiness import AS_IS, check_model

                verdict = check_model(source, AS_IS)  # judged as it is, not as a conversion would make it
                if not verdict.ready:
                    raise ConversionError(" | ".join(verdict.lines()) + " | (check: false skips this check)")
            folder = Path(output_model_path)
            if folder.suffix == ".onnx":
                folder = folder.parent
            done = compile_to_folder(source, folder, config.config_file, config.cache_key, config.timeout_s,
                                     config.embed_mode)
        except ConversionError as exc:
            raise ConversionError(f"VitisAIContextCompile: {one_line(exc)}") from exc
        logger.info("VitisAIContextCompile: compiled %s in %.0f s; deploy folder %s", source.name, done.seconds,
                    done.folder)
        options = done.manifest["provider_options"]
        settings = {
            "execution_provider": [VITISAI],
            "provider_options": [{k: str(done.folder / v) if k != "cache_key" else v for k, v in options.items()}],
        }
        attributes = dict(model.model_attributes or {})
        if isinstance(attributes.get(RECORD_KEY), dict):  # the BF16 weights are compiled in now, not tensors
            attributes[RECORD_KEY] = {**attributes[RECORD_KEY], "bf16_tensors": None,
                                      "ep_context_model": done.context_model.name}
        return ONNXModelHandler(
            model_path=str(done.folder),
            onnx_file_name=done.context_model.name,
            inference_settings=settings,
            model_attributes=attributes or None,
        )
