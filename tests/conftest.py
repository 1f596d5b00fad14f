"""Shared fixtures: a tiny dataset in the official ILSVRC2012 format, prepared once per session."""

import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's kernels on CPU tensors, in its interpreter. Read when a kernel is defined, so before any test
    # imports one (the traffic count imports the Triton LRN to count it).
    os.environ.setdefault("TRITON_INTERPRET", "1")

from alexnet_cli.data.prepare.demo import DemoSpec, write_demo_source
from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet

# A GPU recipe as two gloo processes on this machine's CPU, one DALI thread and reader each.
TWO_CPU_PROCESSES = ["--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2",
                     "--set", "trainer.precision=32-true",
                     "--set", "data.device=cpu", "--set", "data.num_threads=1", "--set", "data.py_workers=1"]

# The paper's layers with fc6/fc7 64 wide: 3 M parameters instead of 61 M, checkpoints of 24 MB instead of
# 455 MB. Training runs that test the tool (resume, layouts, signals, records), not the network's size, use it.
NARROW_FC = ["--set", "model.fc_width=64"]

TINY = DemoSpec(classes=4, train_per_class=6, val_per_class=3, min_side=120, max_side=200, seed=1)

# cpu-demo cut to one epoch of three steps on TINY, a row of metrics each step.
THREE_STEP_RUN = ["--set", "trainer.max_epochs=1", "--set", "trainer.limit_train_batches=3",
                  "--set", "data.batch_size=4", "--set", "trainer.log_every_n_steps=1",
                  "--set", "model.num_classes=4", *NARROW_FC]


@pytest.fixture(scope="session")
def official_source(tmp_path_factory) -> Path:
    """The three official files for 4 classes, hazards included."""
    return write_demo_source(tmp_path_factory.mktemp("source"), TINY)


@pytest.fixture(scope="session")
def prepared(official_source, tmp_path_factory) -> Path:
    """``official_source`` prepared at 256×256, as the paper stored images."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_imagenet(PrepareOptions(official_source, out, workers=1))
    return out


# Shards of 64 KiB: the tiny dataset's 23 training images fill two, its 12 validation images one.
SMALL_SHARDS = 1 << 16


@pytest.fixture(scope="session")
def packed(prepared, tmp_path_factory) -> Path:
    """``prepared`` packed into tar shards (``alexnet pack``'s library call)."""
    from alexnet_cli.data.prepare.pack import PackOptions, pack_dataset

    out = tmp_path_factory.mktemp("packed") / "packed"
    pack_dataset(PackOptions(prepared, out, SMALL_SHARDS))
    return out


@pytest.fixture(scope="session")
def trained_run_once(prepared, tmp_path_factory):
    """``alexnet train`` of ``THREE_STEP_RUN`` on ``prepared``, trained once for the whole session: its folder
    and the command's result. Tests take it as ``trained_run``."""
    with scratch_dir(tmp_path_factory, "run") as out:
        result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--quiet",
                                *THREE_STEP_RUN, "--json", out / "train.json")
        assert result.returncode == 0, result.stderr[-3000:]
        yield out, result


@pytest.fixture(scope="session")
def demo_made(tmp_path_factory):
    """``alexnet demo --out demo`` through the real command line, cut short (its 8 epochs of one batch each, one
    val batch, narrow FC layers), once per session: (its output folder, the command's result). Tests read it, or
    run commands beside a copy of it."""
    with scratch_dir(tmp_path_factory, "demo-made") as folder:
        out = folder / "demo"
        result = run_alexnet("demo", "--out", out, "--set", "trainer.limit_train_batches=1", "--set",
                             "trainer.limit_val_batches=1", *NARROW_FC)
        assert result.returncode == 0, result.stderr[-3000:]
        yield out, result


@pytest.fixture
def trained_run(trained_run_once, tmp_path):
    """The session's trained run, copied for this test (a 24 MB checkpoint): what one test leaves in it, such as
    the code cache ``neighbors`` writes beside ``last.ckpt``, is not there for the next, whatever their order."""
    out, result = trained_run_once
    return shutil.copytree(out, tmp_path / "trained-run"), result


def run_alexnet(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process: for what only a process shows (signals, kills, exit status
    of the interpreter, a traceback) and for training on several processes, which re-runs its own command line."""
    return subprocess.run([sys.executable, "-m", "alexnet_cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def invoke_alexnet(*args: str) -> subprocess.CompletedProcess:
    """Run the same command line in this process, answering as ``run_alexnet`` does.

    A fresh interpreter spends 5–8 s here importing torch and Lightning before any work; the suite ran about a
    hundred of them. An exception that escapes the CLI's one-line error wrapper is raised here, traceback and all.
    Warnings the command raises end its stderr, under the interpreter's default filters (not pytest's), each
    time it is raised: so a stray warning breaks a "one line" check here as it would in a terminal.
    """
    from typer.testing import CliRunner

    from alexnet_cli.cli import app

    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=hidden)  # as a user's interpreter hides them
        result = CliRunner().invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    said = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in raised)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr + said)


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The command failed as bad input should: exit 2, one line "error: ..." holding every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@contextmanager
def scratch_dir(tmp_path_factory, name: str) -> Iterator[Path]:
    """A directory for a module's shared runs, removed when the module is done with it.

    A paper-sized checkpoint weighs ~0.45 GB; kept for the whole session they filled CI's disk.
    """
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
