"""OnnxFloatToBFloat16's parameters as Olive sees them: their types (so Olive rejects a bad value
when it parses a workflow), Olive's FP16 vocabulary and its checks, and the markdown table of them."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Literal

from olive.passes.onnx.common import get_external_data_config
from olive.passes.pass_config import PassConfigParam
from pydantic import Field

from olive_bf16_pass.options import ConversionOptions, pass_parameters

__all__ = ["KEEP_IO_TYPES", "parameter_table", "pass_config", "validate_vocabulary"]

KEEP_IO_TYPES = (
    "keep_io_types: OnnxFloatToBFloat16 converts weights only, so the model's inputs and outputs always stay"
    " float32; true is the only value (false, BF16 inputs and outputs, is not something this pass does)."
)


def pass_config() -> dict[str, PassConfigParam]:
    """Every parameter of the pass: the converter's options, then Olive's vocabulary around them."""
    config = {name: PassConfigParam(**_constrained(name, p)) for name, p in pass_parameters().items()}
    config["keep_io_types"] = PassConfigParam(
        type_=Literal[True],
        default_value=True,
        description="Olive's FP16 vocabulary: inputs and outputs stay float32 here always; only true is allowed.",
    )
    config["inference_settings"] = PassConfigParam(
        type_=dict[str, Any] | None,
        default_value=None,
        description=(
            "Inference settings (execution providers and their options) put on the output model; "
            "Olive 0.13 drops metric-level ones."
        ),
    )
    config.update(get_external_data_config())
    config["all_tensors_to_one_file"] = PassConfigParam(
        type_=Literal[True],
        default_value=True,
        description="External data goes to one file (external_data_name); only true is allowed.",
    )
    config["vitisai_check"] = PassConfigParam(
        type_=bool,
        default_value=True,
        description=(
            "When the target is the Vitis AI EP, check the output as olive-bf16 check --target vitisai does "
            "(static shapes, one file under 2 GB, opset 17, ...) and stop the workflow before evaluation when "
            "it is not ready; false skips the check."
        ),
    )
    config.update(_target_parameters())
    config["vitisai_runtime"] = PassConfigParam(
        type_=dict[str, str] | None,
        default_value=None,
        description=(
            "Set by the pass, not by you: the ONNX Runtime / Ryzen AI versions a Vitis AI cache_key is versioned"
            " with, so that Olive's cache of this pass changes with them."
        ),
    )
    return config


def _constrained(name: str, param: dict) -> dict:
    """A parameter whose allowed values are in its type, so Olive rejects a bad one when it parses."""
    choices = next((f.metadata.get("choices") for f in fields(ConversionOptions) if f.name == name), ())
    if choices:
        param = {**param, "type_": Literal[tuple(choices)]}
    elif param["type_"] is int:
        param = {**param, "type_": Annotated[int, Field(ge=0)]}
    return param


def _target_parameters() -> dict[str, PassConfigParam]:
    """target_cosine and its corpus: the precision search of olive-bf16 sensitivity --target-cosine."""
    about = "For target_cosine: "
    return {
        "target_cosine": PassConfigParam(type_=float | None, default_value=None, description=(
            "Keep in FP32 (added to node_block_list) the nodes that olive-bf16 sensitivity --target-cosine finds, so "
            "that emulated BF16 compute (as a BF16 NPU computes) meets this mean cosine against FP32 on the corpus; "
            "the run stops when it cannot be met. None: no search.")),
        "target_min_cosine": PassConfigParam(type_=float | None, default_value=None,
                                             description=about + "and this minimum cosine (default: target_cosine)."),
        "tokenizer": PassConfigParam(type_=str | None, default_value=None, description=about + (
            "the corpus' tokenizer: a folder, a Hugging Face name or 'module:function' (default: "
            "model_attributes['_name_or_path'], else the input model's folder).")),
        "corpus": PassConfigParam(type_=str | None, default_value=None,
                                  description=about + "a file of sentences (default: the shipped corpus)."),
        "pooling": PassConfigParam(type_=Literal["mean", "cls", "none"], default_value="mean",
                                   description=about + "how token outputs are pooled before the cosine (mean)."),
    }


def validate_vocabulary(cls, values):
    """Olive's FP16 vocabulary, checked when Olive parses the config: exclusive pairs, keep_io_types."""
    if not isinstance(values, dict):
        return values
    if values.get("keep_io_types") is False:
        raise ValueError(KEEP_IO_TYPES)
    for include, block in (("op_include_list", "op_block_list"), ("node_include_list", "node_block_list")):
        if values.get(include) is not None and values.get(block):
            raise ValueError(f"{include} and {block} are mutually exclusive (as in OnnxFloatToFloat16); give one of them")
    for name in ("target_cosine", "target_min_cosine"):
        value = values.get(name)
        if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 1):
            raise ValueError(f"{name} must be a cosine above 0 and at most 1, not {value!r}")
    if values.get("target_cosine") is None and values.get("target_min_cosine") is not None:
        raise ValueError("target_min_cosine needs target_cosine (the mean cosine to meet)")
    if values.get("target_cosine") is not None and values.get("node_include_list") is not None:
        raise ValueError("target_cosine keeps the nodes it finds FP32 through node_block_list, which node_include_list "
                         "excludes; give node_block_list instead")
    return values


def parameter_table() -> str:
    """The pass's parameters as a markdown table (name, type, default, description), generated from
    ``pass_config``; recipes/README.md holds a copy that a test keeps equal to it."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    def type_name(type_: Any) -> str:
        bounds = [f">= {m.ge}" for f in getattr(type_, "__metadata__", ()) for m in getattr(f, "metadata", [f])
                  if getattr(m, "ge", None) is not None]
        if bounds:  # Annotated[int, Field(ge=0)] -> "int >= 0"
            return " ".join([type_name(type_.__origin__), *bounds])
        return type_.__name__ if isinstance(type_, type) else str(type_).replace("typing.", "")

    rows = ["| parameter | type | default | description |", "|---|---|---|---|"]
    for name, param in pass_config().items():
        default = "`None`" if param.default_value is None else f"`{param.default_value!r}`"
        rows.append(f"| `{name}` | `{cell(type_name(param.type_))}` | {cell(default)} | {cell(param.description)} |")
    return "\n".join(rows) + "\n"
