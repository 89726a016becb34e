"""The conversion options are described once; the pass's parameters and the command's flags follow."""

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import pytest

from olive_bf16_pass import options as options_module
from olive_bf16_pass.options import ConversionOptions, cli_arguments, flag_of, pass_parameters

FIELDS = [f.name for f in fields(ConversionOptions)]


def _parse(*argv):
    parser = argparse.ArgumentParser()
    for flag, kwargs in cli_arguments():
        parser.add_argument(flag, **kwargs)
    return parser.parse_args(list(argv))


def _from_args(args) -> ConversionOptions:
    return ConversionOptions(**{name: getattr(args, name) for name in FIELDS})


def test_every_option_has_a_help_and_one_flag_of_its_own():
    flags = [f.metadata["flag"] for f in fields(ConversionOptions)]
    assert len(set(flags)) == len(FIELDS) and all(flag.startswith("--") for flag in flags)
    for f in fields(ConversionOptions):
        assert f.metadata["help"].endswith(".") and f.metadata["cli_help"], f.name


def test_pass_parameters_cover_every_option_and_default_to_the_options_defaults():
    params = pass_parameters()
    assert list(params) == FIELDS
    assert ConversionOptions.from_dict({k: p["default_value"] for k, p in params.items()}) == ConversionOptions()
    assert params["min_elements"] == {"type_": int, "default_value": 1024,
                                      "description": "Tensors with fewer elements stay float32."}
    assert params["op_block_list"]["type_"] == list[str] and params["op_block_list"]["default_value"] is None


def test_flags_default_to_the_options_defaults():
    assert _from_args(_parse()) == ConversionOptions()


@pytest.mark.parametrize("name", [f.name for f in fields(ConversionOptions) if isinstance(f.default, bool)])
def test_a_boolean_flag_flips_its_default(name):
    args = _parse(flag_of(name))
    assert getattr(_from_args(args), name) is not getattr(ConversionOptions(), name)


def test_name_lists_repeat_and_include_stays_unset_until_given():
    args = _parse("--op-block", "Gemm", "--op-block", "Conv", "--exclude", "t")
    got = _from_args(args)
    assert got.op_block_list == ("Gemm", "Conv") and got.exclude_initializers == ("t",)
    assert got.include_initializers is None  # None: every tensor may convert; () would convert none
    assert _from_args(_parse("--include", "a")).include_initializers == ("a",)


def test_rounding_choices_come_from_the_rounding_module():
    from olive_bf16_pass.rounding import ROUNDINGS

    assert dict(cli_arguments())["--rounding"]["choices"] == ROUNDINGS
    with pytest.raises(SystemExit):
        _parse("--rounding", "stochastic")


def test_options_module_imports_neither_olive_nor_argparse():
    tree = ast.parse(Path(options_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module}
    assert not imported & {"olive", "argparse"}
