"""The CLI's closed choices follow the registries and ``Literal`` types that own them: a value added there is
listed in its option's help and accepted, and anything else is refused in one line naming every value."""

import re
from typing import get_args

import pytest
from conftest import invoke_alexnet, one_line_error
from typer.testing import CliRunner

from alexnet_cli.cli import app
from alexnet_cli.data.prepare.convert import ResizeMode
from alexnet_cli.models import ARCHS
from alexnet_cli.parallel.layouts import benchmarked_layouts
from alexnet_cli.recipes import CompileBackend, CompileMode, LrnImpl

runner = CliRunner()


def help_of(*command: str) -> str:
    """A command's --help on one line per option (wide enough that rich wraps nothing)."""
    return runner.invoke(app, [*command, "--help"], env={"COLUMNS": "1000"}).output


@pytest.mark.parametrize(("command", "option", "names"), [
    (("benchmark", "model"), "--lrn-impl", get_args(LrnImpl)),
    (("benchmark", "model"), "--compile-mode", get_args(CompileMode)),
    (("benchmark", "model"), "--compile-backend", get_args(CompileBackend)),
    (("benchmark", "comms"), "--layout", tuple(benchmarked_layouts())),
    (("prepare-imagenet",), "--mode", get_args(ResizeMode)),
    (("benchmark", "model"), "--arch", tuple(ARCHS)),
    (("summary",), "--arch", tuple(ARCHS)),
])
def test_every_value_its_owner_names_is_listed_in_the_options_help(command, option, names):
    line = next(line for line in help_of(*command).splitlines() if f" {option} " in line)
    for name in names:  # as a word of its own: "eager" is not listed by "aot_eager"
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line), (name, line)


def test_every_benchmarked_layout_is_listed_with_its_process_count():
    line = next(line for line in help_of("benchmark", "comms").splitlines() if " --layout " in line)
    for name, devices in benchmarked_layouts().items():
        assert f"{name} ({devices} processes)" in line, line


def test_the_model_benchmarks_precisions_are_the_ones_it_times():
    from alexnet_cli.bench.speed import Precision as timed
    from alexnet_cli.cli.shell import Precision as offered

    assert get_args(offered) == get_args(timed)


@pytest.mark.parametrize(("option", "names"), [
    ("--lrn-impl", get_args(LrnImpl)), ("--compile-mode", get_args(CompileMode)),
    ("--compile-backend", get_args(CompileBackend))])
def test_a_value_the_literal_does_not_name_is_refused_naming_every_one(option, names):
    one_line_error(invoke_alexnet("benchmark", "model", option, "fastest"),
                   f"{option} 'fastest': choose one of {', '.join(names)}")


def test_a_layout_benchmark_comms_does_not_measure_is_refused_naming_every_one():
    one_line_error(invoke_alexnet("benchmark", "comms", "--layout", "auto"),
                   f"--layout 'auto': choose from {', '.join(benchmarked_layouts())}")
