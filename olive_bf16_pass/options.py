"""What a conversion may touch: the options shared by the library, the pass and the command.

Each option is described once, here: its default, its help (the Olive pass's description) and
its command-line flag. ``pass_parameters()`` and ``cli_arguments()`` turn that into the pass's
parameters and the command's flags, so the three cannot drift apart. This module imports
neither Olive nor argparse.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field, fields

from olive_bf16_pass.rounding import ROUNDINGS

__all__ = ["DEFAULT_MIN_ELEMENTS", "STORAGES", "ConversionOptions", "cli_arguments", "flag_of", "in_flags", "pass_parameters"]

# how a converted weight is stored: BF16 bits widened by a Cast (half the bytes), or the same rounded value
# stored as FP32 with no Cast (the form AMD documents as the Ryzen AI compiler's input; Quark's simulate_bf16)
STORAGES = ("bfloat16", "float32")
DEFAULT_MIN_ELEMENTS = 1024  # smaller tensors stay FP32: a Cast node per tensor outweighs what they save
_NAME_LISTS = (
    "op_block_list", "op_include_list", "node_block_list", "node_include_list",
    "include_initializers", "exclude_initializers",
)
# Olive's OnnxFloatToFloat16 vocabulary: an include list blocks every op type (node) it does not name
_EXCLUSIVE = (("op_include_list", "op_block_list"), ("node_include_list", "node_block_list"))


def _option(default, help: str, flag: str, cli_help: str, metavar: str | None = None, choices: tuple = ()):
    """A field with its pass description (``help``) and its flag. A boolean flag flips the default."""
    meta = {"help": help, "flag": flag, "cli_help": cli_help, "metavar": metavar, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ConversionOptions:
    """Options of one conversion; every field has a safe default and its ``help`` in its metadata."""

    rounding: str = _option(
        "nearest_even",
        "'nearest_even' (round to nearest, ties to even) or 'truncate' (drop the low 16 bits).",
        "--rounding",
        "nearest_even (default, bit-exact with ml_dtypes) or truncate (drop the low 16 bits)",
        choices=ROUNDINGS,
    )
    saturate: bool = _option(
        True,
        "Clamp finite values beyond BF16's range to +-max BF16 instead of Inf.",
        "--no-saturate",
        "let finite values beyond BF16's range become Inf (default: +-max BF16)",
    )
    min_elements: int = _option(
        DEFAULT_MIN_ELEMENTS,
        "Tensors with fewer elements stay float32.",
        "--min-elements",
        f"smaller tensors stay FP32 ({DEFAULT_MIN_ELEMENTS})",
        "N",
    )
    op_block_list: tuple[str, ...] = _option(
        (), "Inputs of nodes of these op types stay float32.", "--op-block", "op type whose inputs stay FP32", "OP"
    )
    op_include_list: tuple[str, ...] | None = _option(
        None,
        "When set, only inputs of nodes of these op types may convert (exclusive with op_block_list).",
        "--op-include",
        "only inputs of this op type may convert",
        "OP",
    )
    node_block_list: tuple[str, ...] = _option(
        (), "Inputs of nodes with these names stay float32.", "--node-block", "node whose inputs stay FP32", "NAME"
    )
    node_include_list: tuple[str, ...] | None = _option(
        None,
        "When set, only inputs of nodes with these names may convert (exclusive with node_block_list).",
        "--node-include",
        "only inputs of this node may convert",
        "NAME",
    )
    include_initializers: tuple[str, ...] | None = _option(
        None, "When set, only these tensors may convert.", "--include", "convert only these tensors", "TENSOR"
    )
    exclude_initializers: tuple[str, ...] = _option(
        (), "These tensors stay float32.", "--exclude", "tensor that stays FP32", "TENSOR"
    )
    convert_constants: bool = _option(
        True, "Convert large float32 values of Constant nodes too.", "--no-constants", "leave Constant nodes"
    )
    convert_graph_input_initializers: bool = _option(
        False,
        "Convert initializers that are also graph inputs; their input becomes bfloat16.",
        "--graph-input-initializers",
        "also convert overridable initializers",
    )
    cast_after_gather: bool = _option(
        True,
        "Keep Gather tables (embeddings) in BF16 at run time: widen the gathered rows only (and a tied head's "
        "Transpose of the table). A table a MatMul or Gemm reads directly gets one Cast shared by all its readers, "
        "so ONNX Runtime holds a single FP32 copy and peaks no higher than the FP32 model at load.",
        "--no-cast-after-gather",
        "widen embedding tables before their Gather instead of after it",
    )
    storage: str = _option(
        "bfloat16",
        "How a converted weight is stored: 'bfloat16' (BF16 initializers, each widened back by a Cast: half the "
        "file) or 'float32' (rounded to BF16 exactly as 'bfloat16' does, but stored as FP32 with no Cast: the form "
        "AMD documents as the Ryzen AI compiler's input, whose own FP32 to BF16 conversion is then lossless).",
        "--storage",
        "bfloat16 (default: half the file, a Cast per weight) or float32 (BF16-exact values stored as FP32, no Cast: "
        "what AMD's Ryzen AI compiler takes)",
        choices=STORAGES,
    )
    upgrade_opset: bool = _option(
        True,
        "Upgrade models below opset 13 (no Cast from bfloat16) with onnx's version converter; false refuses them.",
        "--no-upgrade-opset",
        "refuse models below opset 13 instead of upgrading them to 13",
    )

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {self.rounding!r}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}; got {self.storage!r}")
        if not isinstance(self.min_elements, int) or self.min_elements < 0:
            raise ValueError(f"min_elements must be a non-negative integer; got {self.min_elements!r}")
        for name in _NAME_LISTS:  # accept any iterable of names, store tuples (hashable, immutable)
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    raise ValueError(f"{name} must be a list of names, not the string {value!r}")
                object.__setattr__(self, name, tuple(value))
        for include, block in _EXCLUSIVE:
            if getattr(self, include) is not None and getattr(self, block):
                raise ValueError(f"{include} and {block} are mutually exclusive (as in Olive's OnnxFloatToFloat16); "
                                 "give one of them")

    @property
    def has_filters(self) -> bool:
        """Whether any name list (blocks, include, exclude) names something."""
        return any(getattr(self, name) for name in _NAME_LISTS)

    @classmethod
    def from_dict(cls, values: dict) -> ConversionOptions:
        """Build from a mapping (an Olive pass config, parsed JSON, argparse's vars), ignoring unrelated keys."""
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def flag_of(name: str) -> str:
    """The command-line flag of option ``name``, for messages that must name both."""
    return next(f.metadata["flag"] for f in fields(ConversionOptions) if f.name == name)


def pass_parameters() -> dict[str, dict]:
    """``PassConfigParam`` keyword arguments per option; name lists default to None (Olive's habit)."""
    params = {}
    for f in fields(ConversionOptions):
        names = f.name in _NAME_LISTS
        params[f.name] = {
            "type_": list[str] if names else type(f.default),
            "default_value": None if names else f.default,
            "description": f.metadata["help"],
        }
    return params


def cli_arguments() -> list[tuple[str, dict]]:
    """``(flag, add_argument keyword arguments)`` per option, in field order; ``dest`` is the field name."""
    arguments = []
    for f in fields(ConversionOptions):
        kwargs: dict = {"dest": f.name, "help": f.metadata["cli_help"]}
        if f.name in _NAME_LISTS:  # repeated, one name each time
            kwargs.update(action="append", default=None if f.default is None else [])
        elif isinstance(f.default, bool):
            kwargs.update(action="store_false" if f.default else "store_true")
        else:
            kwargs.update(type=type(f.default), default=f.default)
        kwargs.update({k: f.metadata[k] for k in ("metavar", "choices") if f.metadata[k]})
        arguments.append((f.metadata["flag"], kwargs))
    return arguments


@functools.lru_cache(maxsize=1)
def _flag_words() -> tuple[tuple[re.Pattern, str], ...]:
    """Parameter names (and the phrases naming a switch's value) as the command line spells them."""
    words = [
        (re.compile(r"\bupgrade_opset=(?:false|False)"), "--no-upgrade-opset"),
        (re.compile(r"\(upgrade_opset=True, the default\)"), "(the default; --no-upgrade-opset refuses)"),
        (re.compile(r"\bin_place=True\b"), "--in-place"),
    ]
    for f in fields(ConversionOptions):
        # a switch's name alone does not say which way it is set; a one-word name is also an English word
        if not isinstance(f.default, bool) and "_" in f.name:
            words.append((re.compile(rf"\b{f.name}\b"), f.metadata["flag"]))
    return tuple(words)


def in_flags(text: str) -> str:
    """``text`` (the library's words: parameter names, as Olive and Python users set them) in the words of
    the command line: ``op_block_list`` becomes ``--op-block``."""
    for pattern, flag in _flag_words():
        text = pattern.sub(flag, text)
    return text
