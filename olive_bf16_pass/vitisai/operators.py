"""AMD's published BF16 operator table, as a hint (a warning), never a rule.

Source: amd/ryzen-ai-documentation ``docs/ops_support.rst`` (stored commit 0e172c1, whose table is
titled "ONNX operators supported in Ryzen AI 1.5.0"; the column "BF16"). AMD's own transformer
samples run ops the table leaves blank for BF16 (LayerNormalization, Softmax, Gelu), so an op
missing here is worth a look at the EP's operator report, not a refusal.
"""

from __future__ import annotations

__all__ = ["BF16_OPS", "TABLE_SOURCE", "outside_table"]

TABLE_SOURCE = "amd/ryzen-ai-documentation docs/ops_support.rst (Ryzen AI 1.5.0 table, BF16 column)"

BF16_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "BitShift", "BitwiseAnd",
    "BitwiseNot", "BitwiseOr", "BitwiseXor", "Cast", "Ceil", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "CumSum", "DepthToSpace", "Div", "Einsum", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor",
    "Gather", "GatherElements", "Gemm", "GlobalAveragePool", "Greater", "GridSample", "GroupConv", "Identity",
    "InstanceNormalization", "LSTM", "Less", "Log", "MatMul", "Max", "MaxPool", "Min", "Mod", "Mul", "Neg", "Not",
    "Or", "Pad", "Pow", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Reshape", "Resize",
    "Round", "ScatterND", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Split", "Sqrt", "Squeeze", "Sub",
    "Tanh", "Tile", "Transpose", "Unsqueeze", "Upsample", "Where", "Xor",
})
# blank for BF16 in the table, yet run by AMD's BF16 transformer samples (field notes, section 8)
SAMPLES_RUN = frozenset({"LayerNormalization", "Softmax", "Gelu"})


def outside_table(op_types: dict[tuple[str, str], int]) -> dict[str, int]:
    """``{(domain, op_type): count}`` -> ``{label: count}`` of the ops the BF16 column does not list
    (ops of other domains, com.microsoft's fused ones included, are outside it too)."""
    found: dict[str, int] = {}
    for (domain, op), n in op_types.items():
        if domain in ("", "ai.onnx") and op in BF16_OPS:
            continue
        label = op if domain in ("", "ai.onnx") else f"{domain}::{op}"
        found[label] = found.get(label, 0) + n
    return found
