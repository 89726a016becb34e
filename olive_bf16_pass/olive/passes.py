"""OnnxFloatToBFloat16: Olive's view of the converter, a list of parameters and one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.model.utils import resolve_onnx_path
from olive.passes import Pass
from olive.passes.onnx.common import get_external_data_config
from olive.passes.pass_config import BasePassConfig, PassConfigParam

from olive_bf16_pass.convert import convert_file
from olive_bf16_pass.errors import ConversionError, one_line, os_error_line
from olive_bf16_pass.olive.attributes import SOURCE_MODEL_ATTRIBUTE
from olive_bf16_pass.olive.vitisai import (
    VITISAI_EP,
    has_vitisai_cache_key,
    model_fingerprint,
    names_vitisai,
    runtime_versions,
    with_versioned_cache_keys,
)
from olive_bf16_pass.options import ConversionOptions, pass_parameters

# the Vitis AI EP loads single-file models only (RyzenAI-SW issue #320)
VITIS_EXTERNAL_DATA = (
    "OnnxFloatToBFloat16: the target is VitisAIExecutionProvider, which cannot load ONNX external data, and {why}."
    " Set save_as_external_data: false and keep the model under 2 GB (BF16 halves the FP32 weights),"
    " or target another execution provider."
)


class OnnxFloatToBFloat16(Pass):
    """Convert FP32 weights to BF16, each widened back to FP32 by a Cast so the model runs anywhere.

    Streams tensors from the input model to the output, so memory stays near one chunk. Records
    the source model's path in the output's ``model_attributes["bf16_source_model_path"]`` so
    evaluators can compare against it. For the Vitis AI EP it refuses external data (the EP
    cannot load it) and versions a given ``cache_key`` (see ``vitisai.py``).
    """

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        config = {name: PassConfigParam(**param) for name, param in pass_parameters().items()}
        config["inference_settings"] = PassConfigParam(
            type_=Optional[dict[str, Any]],
            default_value=None,
            description=(
                "Inference settings (execution providers and their options) put on the output model; "
                "Olive 0.13 drops metric-level ones."
            ),
        )
        config.update(get_external_data_config())
        return config

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        if not config.all_tensors_to_one_file:
            raise ValueError("OnnxFloatToBFloat16 writes external data to one file; set all_tensors_to_one_file: true.")
        settings = config.inference_settings or model.inference_settings
        vitis = self.accelerator_spec.execution_provider == VITISAI_EP or names_vitisai(settings)
        if vitis and config.save_as_external_data:
            raise ValueError(VITIS_EXTERNAL_DATA.format(why="save_as_external_data is true"))
        source = Path(model.model_path)
        output = Path(resolve_onnx_path(output_model_path, source.name))
        try:
            report = convert_file(
                source,
                output,
                ConversionOptions.from_dict(config.model_dump()),
                save_as_external_data=config.save_as_external_data,
                external_data_name=config.external_data_name,
                size_threshold=config.size_threshold,
                convert_attribute=config.convert_attribute,
            )
        except ConversionError as exc:  # re-raised one line, still a ValueError: Olive stops the run on it
            raise ConversionError(f"OnnxFloatToBFloat16: {one_line(exc)}") from exc
        except OSError as exc:  # disk full, no permission: Olive would log these and exit 0 with no model
            raise ConversionError(f"OnnxFloatToBFloat16: {os_error_line(exc)}; nothing was written") from exc
        in_folder = len(report.destination) > 1
        if vitis and in_folder:
            _remove(report.destination)
            raise ValueError(VITIS_EXTERNAL_DATA.format(why="the BF16 model is over 2 GB, so it needs external data"))
        if has_vitisai_cache_key(settings):
            settings = with_versioned_cache_keys(settings, model_fingerprint(report.destination), runtime_versions())
        attributes = {
            **(model.model_attributes or {}),
            SOURCE_MODEL_ATTRIBUTE: str(source.resolve()),
            "bf16_conversion": {
                "converted": len(report.converted),
                "size_ratio": round(report.ratio, 4),
                "opset_upgrade": report.opset_upgrade,  # [from, to] when the input was below opset 13
            },
        }
        return ONNXModelHandler(
            model_path=str(output.parent) if in_folder else str(output),
            onnx_file_name=output.name if in_folder else None,
            inference_settings=settings,
            use_ort_extensions=model.use_ort_extensions,
            model_attributes=attributes,
        )


def _remove(paths: list[str]) -> None:
    """Delete the files of a refused output, so Olive does not pick them up."""
    for path in paths:
        Path(path).unlink(missing_ok=True)
