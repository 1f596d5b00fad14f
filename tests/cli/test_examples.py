"""Every --help example (cli/examples.py) as a user would run it: those that need neither a GPU nor ImageNet as
written, in the folder where the demo ran; the others up to the check of their inputs, which must refuse them in
one line naming the missing GPU or dataset (so the options themselves parse), ``train`` with --dry-run."""

import glob
import shlex
import shutil

import pytest
import torch
from conftest import invoke_alexnet, one_line_error
from typer.testing import CliRunner

from alexnet_cli.cli import app
from alexnet_cli.cli.examples import EXAMPLES


def run_example(line: str):
    words = shlex.split(line)
    assert words[0] == "alexnet"
    args = [match for word in words[1:] for match in (sorted(glob.glob(word)) if "*" in word else [word])]
    return invoke_alexnet(*args)


@pytest.fixture
def beside_the_demo(demo_made, monkeypatch, tmp_path):
    """A folder holding a copy of what ``alexnet demo --out demo`` made, as the current directory: the examples
    say demo/run and demo/data, and what they write (a neighbors cache beside the checkpoint) stays in the copy."""
    out, _ = demo_made
    shutil.copytree(out, tmp_path / "demo", ignore=shutil.ignore_patterns("source"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_example_runs_as_written_or_is_refused_only_for_what_this_machine_lacks(command, beside_the_demo):
    for example in EXAMPLES[command]:
        if example.needs == "minutes":  # the demo itself: demo_made ran this line, cut short by its --set keys
            assert example.line == "alexnet demo --out demo"
            continue
        if example.needs == "demo":
            result = run_example(example.line)
            assert result.returncode == 0, (example.line, result.stderr[-3000:])
            continue
        if torch.cuda.is_available() and example.needs == "gpu":
            continue  # it would run for real here: scripts/gpu-check.sh measures these on a GPU
        line = example.line + (" --dry-run" if command == "train" else "")
        result = run_example(line)
        lines = [text for text in result.stderr.splitlines() if text.strip()]
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (line, result.stderr)
        lacking = ("/data/imagenet", "ilsvrc2012", "alexnet-owt.pth", "no CUDA GPU")
        assert any(word in lines[0] for word in lacking), (line, lines[0])


def test_each_commands_help_shows_its_examples_and_only_its_own():
    for command, examples in EXAMPLES.items():
        shown = " ".join(CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=200).stdout.split())
        for example in examples:
            assert example.line in shown, (command, example.line)
        others = [e.line for name, listed in EXAMPLES.items() if name != command for e in listed]
        assert not [line for line in others if line in shown and not any(line in e.line for e in examples)]


def test_train_needs_a_recipe_or_a_run_to_resume(beside_the_demo):
    one_line_error(invoke_alexnet("train", "--data", "demo/data"), "give --recipe NAME (see 'alexnet recipes'), or "
                   "--resume RUN")
