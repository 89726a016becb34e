"""A filter entry that names nothing in the model is reported, with the name it probably meant."""

import pytest

from olive_bf16_pass.filters import suggest, unmatched_filters
from olive_bf16_pass.options import ConversionOptions

TENSORS = ["W", "b", "encoder.layer.0.attention.self.query.weight", "lm_head.weight"]
NODES = ["fc1", "fc2", "attention_output"]
OPS = ["MatMul", "Add", "Gather", "LayerNormalization"]


def _warnings(**options):
    return unmatched_filters(ConversionOptions(**options), TENSORS, NODES, OPS)


def test_filters_that_match_give_no_warning():
    assert _warnings(op_block_list=["MatMul"], node_block_list=["fc1"], include_initializers=["W", "b"],
                     exclude_initializers=["lm_head.weight"]) == []
    assert _warnings() == []


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"exclude_initializers": ["w"]},
         "exclude_initializers 'w' matches no tensor in the model, so it changes nothing; "
         "did you mean 'W'?"),
        ({"op_block_list": ["Matmul"]},
         "op_block_list 'Matmul' matches no op type in the model, so it changes nothing; "
         "did you mean 'MatMul'?"),
        ({"node_block_list": ["attention_ouptut"]},
         "node_block_list 'attention_ouptut' matches no node in the model, so it changes nothing; "
         "did you mean 'attention_output'?"),
        ({"include_initializers": ["encoder.layer.0.attention.self.querry.weight"]},
         "include_initializers 'encoder.layer.0.attention.self.querry.weight' matches no tensor in the "
         "model, so it changes nothing; did you mean 'encoder.layer.0.attention.self.query.weight'?"),
        ({"include_initializers": ["decoder_xyz"]},
         "include_initializers 'decoder_xyz' matches no tensor in the model, so it changes nothing; "
         "check the spelling (names are case-sensitive)"),
    ],
    ids=["case", "op-case", "node-typo", "tensor-typo", "nothing-close"],
)
def test_an_unmatched_entry_is_one_line_with_the_near_miss(options, expected):
    assert _warnings(**options) == [expected]


def test_one_line_per_unmatched_entry_in_option_order_each_entry_once():
    warnings = _warnings(op_block_list=["MatMul", "Conv", "Conv"], exclude_initializers=["W", "lm_head.Weight"])
    assert len(warnings) == 2
    assert warnings[0].startswith("op_block_list 'Conv'")
    assert warnings[1].endswith("did you mean 'lm_head.weight'?")


def test_nodes_without_a_name_match_no_entry():
    assert unmatched_filters(ConversionOptions(node_block_list=[""]), [], ["", "n"], []) != []


def test_a_case_only_difference_wins_over_a_closer_spelling():
    assert suggest("matmul", ["MatMul", "Matmu1"]) == "MatMul"
    assert suggest("gathr", ["Gather", "GatherND", "Where"]) == "Gather"
    assert suggest("zzz", ["MatMul"]) is None


def test_the_suggestion_does_not_depend_on_the_models_order():
    names = ["layer.1.w", "layer.2.w", "layer.3.w"]
    assert suggest("layer.4.w", names) == suggest("layer.4.w", list(reversed(names)))
