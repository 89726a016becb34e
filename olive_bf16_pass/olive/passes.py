"""OnnxFloatToBFloat16: Olive's view of the converter, a list of parameters and one call.

Where it belongs in a chain: last among the passes that rewrite the graph. ONNX Runtime's
optimizer (OrtTransformersOptimization with opt_level > 0), onnxscript's constant folding
(OnnxPeepholeOptimizer) and the quantizers' pre-processing fold ``Cast(bf16 weight)`` back into
FP32 weights; a workflow that lists this pass before one of them stops before any pass runs
(see composition.py). What the pass records about a conversion sits under one key,
``olive_bf16_pass``, in the output model's metadata (and in ``model_attributes`` only where the
input already had attributes: any non-empty attributes make OrtTransformersOptimization treat the
model as a Hugging Face one); see attributes.py. Its parameters and their checks: pass_config.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from olive.hardware.accelerator import AcceleratorSpec
from olive.model import ONNXModelHandler
from olive.model.utils import resolve_onnx_path
from olive.passes import Pass
from olive.passes.pass_config import BasePassConfig, PassConfigParam
from pydantic import model_validator

from olive_bf16_pass.convert import convert_file
from olive_bf16_pass.errors import ConversionError, one_line, os_error_line
from olive_bf16_pass.olive.attributes import (  # noqa: F401  (SOURCE_MODEL_ATTRIBUTE: older imports)
    RECORD_KEY,
    SOURCE_MODEL_ATTRIBUTE,
    append_record,
    bf16_tensors,
)
from olive_bf16_pass.olive.pass_config import pass_config, validate_vocabulary
from olive_bf16_pass.options import ConversionOptions
from olive_bf16_pass.vitisai.cache_key import (
    VITISAI_EP,
    has_vitisai_cache_key,
    model_fingerprint,
    names_vitisai,
    runtime_versions,
    with_versioned_cache_keys,
)

__all__ = ["CORE_LOGGER", "REPORT_SUFFIX", "VITIS_EXTERNAL_DATA", "OnnxFloatToBFloat16"]

# under Olive's logger, so `olive run` shows it at its default level (INFO)
logger = logging.getLogger("olive.passes.onnx.bf16_conversion")
CORE_LOGGER = "olive_bf16_pass"  # the converter's loggers; forwarded to ``logger`` while the pass runs
REPORT_SUFFIX = ".bf16_report.json"  # beside the model: model.onnx -> model.bf16_report.json

# the Vitis AI EP loads single-file models only (RyzenAI-SW issue #320)
VITIS_EXTERNAL_DATA = (
    "OnnxFloatToBFloat16: the target is VitisAIExecutionProvider, which cannot load ONNX external data, and {why}."
    " Set save_as_external_data: false and keep the model under 2 GB (BF16 halves the FP32 weights),"
    " or target another execution provider."
)



class OnnxFloatToBFloat16(Pass):
    """Convert FP32 weights to BF16, each widened back to FP32 by a Cast so the model runs anywhere.

    Streams tensors from the input model to the output, so memory stays near one chunk. Writes the
    JSON report beside the model (``<model>.bf16_report.json``) and logs its summary under Olive's
    logger. For the Vitis AI EP it refuses external data (the EP cannot load it) and versions a
    given ``cache_key`` (see ``vitisai/cache_key.py``). Run it after the passes that optimize or quantize.
    With ``target_cosine``, it first finds the nodes to keep FP32 so that emulated BF16 compute meets the
    target on a corpus (precision_search.py, as ``olive-bf16 sensitivity --target-cosine``), adds them to
    ``node_block_list``, and records the search (``target_search``) in the metadata record and the report.
    """

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        return pass_config()

    @classmethod
    def _validators(cls) -> dict[str, Callable]:
        return {"validate_vocabulary": model_validator(mode="before")(validate_vocabulary)}

    @classmethod
    def is_accelerator_agnostic(cls, accelerator_spec: AcceleratorSpec) -> bool:
        """Agnostic except for the Vitis AI EP, whose output is checked for it (no external data): a
        CPU run's cached output must not be reused for a Vitis AI target."""
        return getattr(accelerator_spec, "execution_provider", None) != VITISAI_EP

    def __init__(self, accelerator_spec: AcceleratorSpec, config, *args, **kwargs):
        super().__init__(accelerator_spec, config, *args, **kwargs)
        # Olive keys its cache of this pass by the config: a versioned cache_key must change with the runtime
        settings = getattr(self.config, "inference_settings", None)
        if has_vitisai_cache_key(settings):
            self.config.vitisai_runtime = runtime_versions()

    def _run_for_config(
        self, model: ONNXModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> ONNXModelHandler:
        settings = config.inference_settings or model.inference_settings
        vitis = self.accelerator_spec.execution_provider == VITISAI_EP or names_vitisai(settings)
        if vitis and config.save_as_external_data:
            raise ValueError(VITIS_EXTERNAL_DATA.format(why="save_as_external_data is true"))
        source = Path(model.model_path)
        output = Path(resolve_onnx_path(output_model_path, source.name))
        options, found = ConversionOptions.from_dict(config.model_dump()), None
        try:
            with _forwarded_core_logs():
                if config.target_cosine is not None:  # the nodes found stay FP32: node_block_list
                    found = _search_for_target(source, model, config, options.node_block_list)
                    options = replace(options, node_block_list=(*options.node_block_list, *found.nodes))
                report = convert_file(
                    source,
                    output,
                    options,
                    save_as_external_data=config.save_as_external_data,
                    external_data_name=config.external_data_name,
                    size_threshold=config.size_threshold,
                    convert_attribute=config.convert_attribute,
                )
        except ConversionError as exc:  # re-raised one line, still a ValueError: Olive stops the run on it
            raise ConversionError(f"OnnxFloatToBFloat16: {one_line(exc)}") from exc
        except OSError as exc:  # disk full, no permission: Olive would log these and exit 0 with no model
            raise ConversionError(f"OnnxFloatToBFloat16: {os_error_line(exc)}; nothing was written") from exc
        except Exception as exc:
            raise ConversionError(
                f"OnnxFloatToBFloat16: unexpected {type(exc).__name__}: {one_line(exc)[:300]}; nothing was written. "
                "Please report it with the model (or its shapes)."
            ) from exc
        if vitis and len(report.destination) > 1:
            _remove(report.destination)
            raise ValueError(VITIS_EXTERNAL_DATA.format(why="the BF16 model is over 2 GB, so it needs external data"))
        if vitis and config.vitisai_check:
            _check_for_vitisai(output, report)
        count, size = bf16_tensors(output)
        record = {
            "source_model_path": str(source.resolve()),
            "converted": len(report.converted),
            "bf16_tensors": count,
            "bytes_before": report.file_bytes_before,
            "bytes_after": size,
            "size_ratio": round(report.ratio, 4),
            "opset_upgrade": report.opset_upgrade,  # [from, to] when the input was below opset 13
            "report": output.with_suffix("").name + REPORT_SUFFIX,
        }
        if found is not None:
            record["target_search"] = found.to_dict()
        append_record(output, record)
        report_json = report.to_dict()
        if found is not None:
            report_json["target_search"] = record["target_search"]
        (output.parent / record["report"]).write_text(json.dumps(report_json, indent=2) + "\n")
        logger.info("OnnxFloatToBFloat16 (%s): %s\nreport: %s", source.name, report.summary(),
                    output.parent / record["report"])
        if has_vitisai_cache_key(settings):
            settings = with_versioned_cache_keys(settings, model_fingerprint(report.destination), runtime_versions())
        attributes = model.model_attributes
        if attributes:  # never make empty attributes non-empty: OrtTransformersOptimization reads that as HF
            attributes = {**attributes, RECORD_KEY: record}
        return ONNXModelHandler(  # the folder, so Olive copies the report with the model
            model_path=str(output.parent),
            onnx_file_name=output.name,
            inference_settings=settings,
            use_ort_extensions=model.use_ort_extensions,
            model_attributes=attributes,
        )


def _check_for_vitisai(output: Path, report) -> None:
    """The readiness check on the output (what the EP will compile): warnings logged, blockers stop the run
    before evaluation with the same lines as olive-bf16 check (vitisai_check: false skips it)."""
    from olive_bf16_pass.vitisai.readiness import check_model

    verdict = check_model(output, ConversionOptions.from_dict(report.options))
    for finding in verdict.warnings:
        logger.warning("OnnxFloatToBFloat16 (Vitis AI check): %s", finding.line)
    if not verdict.ready:
        _remove(report.destination)
        raise ConversionError(
            "OnnxFloatToBFloat16: " + " | ".join([verdict.headline(), *(f"blocker: {f.line}" for f in verdict.blockers)])
            + " | (vitisai_check: false skips this check)"
        )


def _search_for_target(source: Path, model: ONNXModelHandler, config, kept: tuple[str, ...]):
    """The precision search on the input model (Olive-free: precision_search.py), logged under Olive's logger."""
    from olive_bf16_pass.precision_search import Target, find_for_target

    tokenizer = config.tokenizer or (model.model_attributes or {}).get("_name_or_path")
    target = Target(config.target_cosine, config.target_min_cosine, tokenizer, config.corpus, config.pooling)
    found = find_for_target(source, target, kept)
    logger.info("OnnxFloatToBFloat16 (%s): %s; kept in FP32: %s", source.name, found.summary(),
                ", ".join(found.nodes) or "(none)")
    return found


@contextmanager
def _forwarded_core_logs():
    """The converter's log records go to Olive's logger (shown by `olive run`) while the pass runs."""
    core = logging.getLogger(CORE_LOGGER)

    class Forward(logging.Handler):
        def emit(self, record):
            if logger.isEnabledFor(record.levelno):
                logger.log(record.levelno, "OnnxFloatToBFloat16: %s", record.getMessage())

    handler, propagate = Forward(), core.propagate
    core.addHandler(handler)
    core.propagate = False
    try:
        yield
    finally:
        core.removeHandler(handler)
        core.propagate = propagate


def _remove(paths: list[str]) -> None:
    """Delete the files of a refused output, so Olive does not pick them up."""
    for path in paths:
        Path(path).unlink(missing_ok=True)
