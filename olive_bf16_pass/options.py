"""What a conversion may touch: the options shared by the library, the pass and the command."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from olive_bf16_pass.rounding import ROUNDINGS


_NAME_LISTS = ("op_block_list", "node_block_list", "include_initializers", "exclude_initializers")


@dataclass(frozen=True)
class ConversionOptions:
    """Options of one conversion; every field has a safe default.

    rounding: "nearest_even" (default, bit-exact with ml_dtypes) or "truncate" (AMD's seed script).
    saturate: a finite weight beyond BF16's range becomes +-max BF16 instead of Inf.
    min_elements: tensors with fewer elements stay FP32 (scalars, biases of small layers).
    op_block_list / node_block_list: inputs of nodes of these op types / names stay FP32.
    include_initializers: when given, only these tensors may convert.
    exclude_initializers: these tensors stay FP32.
    convert_constants: large FP32 values held in Constant nodes convert too.
    convert_graph_input_initializers: initializers that are also graph inputs (overridable at
        run time) convert too; their graph input becomes BF16.
    cast_after_gather: a table read only by Gather keeps BF16 in memory at run time: the Cast
        moves after the Gather, so only the gathered rows widen to FP32.
    """

    rounding: str = "nearest_even"
    saturate: bool = True
    min_elements: int = 1024
    op_block_list: tuple[str, ...] = ()
    node_block_list: tuple[str, ...] = ()
    include_initializers: tuple[str, ...] | None = None
    exclude_initializers: tuple[str, ...] = ()
    convert_constants: bool = True
    convert_graph_input_initializers: bool = False
    cast_after_gather: bool = True

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {self.rounding!r}")
        if not isinstance(self.min_elements, int) or self.min_elements < 0:
            raise ValueError(f"min_elements must be a non-negative integer; got {self.min_elements!r}")
        for name in _NAME_LISTS:  # accept any iterable of names, store tuples (hashable, immutable)
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, str):
                    raise ValueError(f"{name} must be a list of names, not the string {value!r}")
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_dict(cls, values: dict) -> ConversionOptions:
        """Build from a mapping (an Olive pass config, parsed JSON), ignoring unrelated keys."""
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
